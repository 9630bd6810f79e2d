import assert from 'node:assert/strict';
import { writeFile, readFile, stat } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { makeTempDir, ProcessPeer, removeDir, runCli, SHOAL_BIN, stateOf, waitFor } from './harness.js';

/** Exactly one line on stderr, naming `what`. */
function assertOneLineNaming(stderr: string, what: string | RegExp): void {
  const lines = stderr.trim().split('\n');
  assert.equal(lines.length, 1, `expected one line on stderr, got: ${stderr}`);
  if (typeof what === 'string') assert.ok(lines[0]?.includes(what), `stderr should name ${what}: ${stderr}`);
  else assert.match(lines[0] as string, what);
}

describe('CLI: help and bad input', function () {
  this.timeout(60_000);
  let dir: string;

  before(async () => {
    dir = await makeTempDir();
  });
  after(async () => {
    await removeDir(dir);
  });

  it('--help and start --help list every option with its default', async () => {
    const top = await runCli(['--help']);
    assert.equal(top.code, 0);
    for (const c of ['start', 'status', 'leave', 'token', 'keygen']) assert.ok(top.stdout.includes(c));
    const start = await runCli(['start', '--help']);
    assert.equal(start.code, 0);
    for (const flag of ['--listen', '--join', '--data-dir', '--http', '--swarm-key', '--insecure', '--http-token-file', '--log-level', '--heartbeat-interval-ms', '--phi-threshold', '--suspicion-timeout-ms']) {
      assert.ok(start.stdout.includes(flag), `start --help lists ${flag}`);
    }
    assert.ok(start.stdout.includes('/ip4/127.0.0.1/tcp/4001'));
    assert.ok(start.stdout.includes('127.0.0.1:7070'));
    const status = await runCli(['status', '--help']);
    assert.equal(status.code, 0);
    assert.ok(status.stdout.includes('--json'));
  });

  it('usage errors exit 2 with one line naming the flag', async () => {
    const cases: Array<[string[], string]> = [
      [['start', '--bogus'], '--bogus'],
      [['start', '--join', '/ip4/127.0.0.1/tcp/4001'], '--join'],
      [['start', '--join', 'not-a-multiaddr'], '--join'],
      [['start', '--join', 'SHOAL-1-bm90IGEgdG9rZW4'], 'join token'],
      [['start', '--join', 'SHOAL-9-abc'], 'SHOAL-1'],
      [['start', '--http', '0.0.0.0:0'], '--http-token-file'],
      [['demo', '--peers', '0'], '--peers'],
      [['start', '--insecure', '--swarm-key', '/nonexistent/key'], '--insecure'],
      [['start', '--listen', '/ip4/127.0.0.1/udp/4001'], '--listen'],
      [['start', '--listen', 'garbage'], '--listen'],
      [['start', '--http', 'nohostport'], '--http'],
      [['start', '--phi-threshold', 'abc'], '--phi-threshold'],
      [['start', '--log-level', 'loud'], '--log-level'],
      [['status', '--http', '1.2.3.4:99999'], '--http'],
      [['frobnicate'], 'frobnicate'],
      [['start', '--rebalance-rate', 'fast'], '--rebalance-rate'],
      [['start', '--stop-drain-ms', '-1'], '--stop-drain-ms'],
      [['start', '--task-slots', '0'], '--task-slots'],
      [['task', 'submit'], 'TYPE'],
      [['task', 'submit', 'sleep', '--payload', '{nope'], '--payload'],
      [['task', 'frobnicate'], 'frobnicate'],
      [['start', '--autoscale', 'cloud'], '--autoscale'],
      [['start', '--autoscale', 'exec'], '--autoscale-exec'],
      [['start', '--autoscale-min', '5', '--autoscale-max', '3'], '--autoscale-max'],
    ];
    // Three at a time: each is a process start.
    for (let k = 0; k < cases.length; k += 3) {
      const batch = cases.slice(k, k + 3);
      const results = await Promise.all(batch.map(([args]) => runCli(args[0] === 'start' ? [...args, '--data-dir', join(dir, 'never')] : args)));
      for (const [i, [args, what]] of batch.entries()) {
        const r = results[i]!;
        assert.equal(r.code, 2, `${args.join(' ')} should exit 2; stderr: ${r.stderr}`);
        assertOneLineNaming(r.stderr, what);
      }
    }
  });

  it('an unwritable data dir exits 1 naming the path', async () => {
    const file = join(dir, 'a-file');
    await writeFile(file, 'x');
    const bad = join(file, 'data');
    const r = await runCli(['start', '--data-dir', bad, '--listen', '/ip4/127.0.0.1/tcp/0', '--http', '127.0.0.1:0']);
    assert.equal(r.code, 1, r.stderr);
    assertOneLineNaming(r.stderr, file);
  });

  it('a port in use exits 1 naming the address', async () => {
    const server: Server = createServer();
    await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
    const port = (server.address() as { port: number }).port;
    try {
      const tcp = await runCli(['start', '--data-dir', join(dir, 'p1'), '--listen', `/ip4/127.0.0.1/tcp/${port}`, '--http', '127.0.0.1:0']);
      assert.equal(tcp.code, 1, tcp.stderr);
      assertOneLineNaming(tcp.stderr, String(port));
      const http = await runCli(['start', '--data-dir', join(dir, 'p2'), '--listen', '/ip4/127.0.0.1/tcp/0', '--http', `127.0.0.1:${port}`]);
      assert.equal(http.code, 1, http.stderr);
      assertOneLineNaming(http.stderr, String(port));
    } finally {
      server.close();
    }
  });

  it('a data dir already used by a running peer exits 1 naming the path', async () => {
    const d = join(dir, 'shared');
    const first = await ProcessPeer.start(d);
    try {
      const r = await runCli(['start', '--data-dir', d, '--listen', '/ip4/127.0.0.1/tcp/0', '--http', '127.0.0.1:0']);
      assert.equal(r.code, 1, r.stderr);
      assertOneLineNaming(r.stderr, d);
    } finally {
      await first.destroy();
    }
  });

  it('status with no peer listening exits 1 with a clear line', async () => {
    const server: Server = createServer();
    await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
    const port = (server.address() as { port: number }).port;
    await new Promise<void>((res) => server.close(() => res()));
    const r = await runCli(['status', '--http', `127.0.0.1:${port}`]);
    assert.equal(r.code, 1);
    assertOneLineNaming(r.stderr, `127.0.0.1:${port}`);
  });

  it('keygen writes a key with mode 0600 and refuses to overwrite it', async () => {
    const key = join(dir, 'swarm.key');
    const r = await runCli(['keygen', key]);
    assert.equal(r.code, 0, r.stderr);
    const text = await readFile(key, 'utf8');
    assert.match(text, /^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-f]{64}$/);
    assert.equal((await stat(key)).mode & 0o777, 0o600);
    const again = await runCli(['keygen', key]);
    assert.equal(again.code, 1);
    assertOneLineNaming(again.stderr, key);
    assert.equal(await readFile(key, 'utf8'), text, 'the key is unchanged');
    const bad = join(dir, 'bad.key');
    await writeFile(bad, 'not a key');
    const s = await runCli(['start', '--data-dir', join(dir, 'k'), '--listen', '/ip4/127.0.0.1/tcp/0', '--http', '127.0.0.1:0', '--swarm-key', bad]);
    assert.equal(s.code, 1);
    assertOneLineNaming(s.stderr, bad);
  });
});

describe('CLI: a running peer', function () {
  this.timeout(60_000);
  let dir: string;
  const peers: ProcessPeer[] = [];

  before(async () => {
    dir = await makeTempDir();
  });
  after(async () => {
    await Promise.all(peers.map((p) => p.destroy()));
    await removeDir(dir);
  });

  it('prints its peer id and join address; status shows the members; SIGTERM drains, leaves and exits 0', async () => {
    const a = await ProcessPeer.start(join(dir, 'a'));
    peers.push(a);
    assert.match(a.peerId, /^12D3/);
    assert.match(a.joinAddr, new RegExp(`^/ip4/127\\.0\\.0\\.1/tcp/\\d+/p2p/${a.peerId}$`));
    const b = await ProcessPeer.start(join(dir, 'b'), { join: [a.joinToken] });
    peers.push(b);
    await waitFor('both alive at a', async () => {
      const s = await a.status();
      return stateOf(s, b.peerId) === 'alive' && stateOf(s, a.peerId) === 'alive';
    });
    const table = await runCli(['status', '--http', a.httpAddress]);
    assert.equal(table.code, 0, table.stderr);
    assert.ok(table.stdout.includes(a.peerId) && table.stdout.includes(b.peerId));
    assert.match(table.stdout, /PEER ID\s+STATE\s+PHI/);
    const json = await runCli(['status', '--http', a.httpAddress, '--json']);
    assert.equal(json.code, 0);
    const parsed = JSON.parse(json.stdout) as { peerId: string; members: unknown[] };
    assert.equal(parsed.peerId, a.peerId);
    assert.equal(parsed.members.length, 2);

    // SIGTERM: the peer moves its replicas away first (here a holds every shard already), then leaves.
    await waitFor('b holds replicas', async () => ((await (await fetch(`http://${b.httpAddress}/v1/drain`)).json()) as { replicas: number }).replicas > 0, { timeoutMs: 20_000 });
    b.signal('SIGTERM');
    const exit = await b.waitExit(30_000);
    assert.equal(exit.code, 0, b.stderr);
    assert.match(b.stderr, /SIGTERM: moving \d+ replicas to the other peers before leaving/);
    assert.match(b.stderr, /drained in /);
    await waitFor('b left at a', async () => stateOf(await a.status(), b.peerId) === 'left', { timeoutMs: 5_000 });
  });

  it('shoal leave makes a running peer leave and exit 0; the others see it left', async () => {
    const a = peers[0] as ProcessPeer;
    const c = await ProcessPeer.start(join(dir, 'c'), { join: [a.joinToken] });
    peers.push(c);
    await waitFor('c alive at a', async () => stateOf(await a.status(), c.peerId) === 'alive');
    const r = await runCli(['leave', '--http', c.httpAddress]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.includes(c.peerId));
    const exit = await c.waitExit();
    assert.equal(exit.code, 0);
    await waitFor('c left at a', async () => stateOf(await a.status(), c.peerId) === 'left', { timeoutMs: 5_000 });
    const gone = await runCli(['leave', '--http', c.httpAddress]);
    assert.equal(gone.code, 1, 'leave against no peer fails');
  });

  it('HTTP: unknown routes are 404 and wrong methods 405, with JSON errors', async () => {
    const a = peers[0] as ProcessPeer;
    const nf = await fetch(`http://${a.httpAddress}/v1/nope`);
    assert.equal(nf.status, 404);
    assert.equal(((await nf.json()) as { error: string }).error, 'not_found');
    const m = await fetch(`http://${a.httpAddress}/v1/status`, { method: 'POST' });
    assert.equal(m.status, 405);
    assert.equal(((await m.json()) as { error: string }).error, 'method_not_allowed');
    const h = await fetch(`http://${a.httpAddress}/healthz`);
    assert.equal(h.status, 200);
  });

  it('secure by default: a generated cluster key, a join token, and no way in without the key', async () => {
    const p1 = await ProcessPeer.start(join(dir, 'k1'));
    peers.push(p1);
    // The first peer generated the key in its data dir (0600) and printed a token carrying it.
    const keyFile = join(dir, 'k1', 'cluster.key');
    assert.match(await readFile(keyFile, 'utf8'), /^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-f]{64}$/);
    assert.equal((await stat(keyFile)).mode & 0o777, 0o600);
    assert.match(p1.joinToken, /^SHOAL-1-[A-Za-z0-9_-]+$/);
    const shown = await runCli(['token', '--data-dir', join(dir, 'k1')]);
    assert.equal(shown.code, 0, shown.stderr);
    assert.equal(shown.stdout.trim(), p1.joinToken);
    // A peer joins with the token alone, and keeps the key for its restarts.
    const p2 = await ProcessPeer.start(join(dir, 'k2'), { join: [p1.joinToken] });
    peers.push(p2);
    await waitFor('p1 and p2 see each other', async () => stateOf(await p1.status(), p2.peerId) === 'alive');
    assert.equal(await readFile(join(dir, 'k2', 'cluster.key'), 'utf8'), await readFile(keyFile, 'utf8'));
    // Joining by address without the key is refused at once, naming the way in.
    const nokey = await runCli(['start', '--data-dir', join(dir, 'k3'), '--listen', '/ip4/127.0.0.1/tcp/0', '--http', '127.0.0.1:0', '--join', p1.joinAddr]);
    assert.equal(nokey.code, 2, nokey.stderr);
    assertOneLineNaming(nokey.stderr, 'join token');
    // An --insecure peer has no key: it never becomes a member on either side.
    const outsider = await ProcessPeer.start(join(dir, 'k4'), { join: [p1.joinAddr], extraArgs: ['--insecure'] });
    peers.push(outsider);
    assert.ok(outsider.stdout.includes('insecure: open network'));
    const deadline = Date.now() + 3000;
    for (let i = 0; i < 100 && Date.now() < deadline; i++) {
      assert.equal(stateOf(await p1.status(), outsider.peerId), undefined);
      assert.equal(stateOf(await outsider.status(), p1.peerId), undefined);
      await new Promise((r) => setTimeout(r, 100));
    }
    // A data dir holding a key refuses --insecure; a key of another cluster is refused too.
    p2.signal('SIGTERM');
    assert.equal((await p2.waitExit()).code, 0);
    const wasSecure = await runCli(['start', '--data-dir', join(dir, 'k2'), '--listen', '/ip4/127.0.0.1/tcp/0', '--http', '127.0.0.1:0', '--insecure']);
    assert.equal(wasSecure.code, 1, wasSecure.stderr);
    assertOneLineNaming(wasSecure.stderr, 'cluster.key');
    const other = join(dir, 'other.key');
    assert.equal((await runCli(['keygen', other])).code, 0);
    const wrong = await runCli(['start', '--data-dir', join(dir, 'k2'), '--listen', '/ip4/127.0.0.1/tcp/0', '--http', '127.0.0.1:0', '--swarm-key', other]);
    assert.equal(wrong.code, 1, wrong.stderr);
    assertOneLineNaming(wrong.stderr, 'another cluster');
    // A peer holding another cluster's key cannot connect either (the Noise handshake fails).
    const stranger = await ProcessPeer.start(join(dir, 'k5'), { join: [p1.joinAddr], extraArgs: ['--swarm-key', other] });
    peers.push(stranger);
    const until = Date.now() + 3000;
    for (let i = 0; i < 100 && Date.now() < until; i++) {
      assert.equal(stateOf(await p1.status(), stranger.peerId), undefined);
      assert.equal(stateOf(await stranger.status(), p1.peerId), undefined);
      await new Promise((r) => setTimeout(r, 100));
    }
  });

  it('--swarm-key: peers given the same key file join by address', async () => {
    const key = join(dir, 'swarm.key');
    assert.equal((await runCli(['keygen', key])).code, 0);
    const p1 = await ProcessPeer.start(join(dir, 's1'), { extraArgs: ['--swarm-key', key] });
    peers.push(p1);
    const p2 = await ProcessPeer.start(join(dir, 's2'), { join: [p1.joinAddr], extraArgs: ['--swarm-key', key] });
    peers.push(p2);
    await waitFor('keyed peers see each other', async () => stateOf(await p1.status(), p2.peerId) === 'alive');
  });

  it('--http-token-file: every route but /healthz needs the bearer token; the CLI sends it', async () => {
    const tokenFile = join(dir, 'http.token');
    await writeFile(tokenFile, 'correct-horse-battery-staple-42\n', { mode: 0o600 });
    const p = await ProcessPeer.start(join(dir, 't1'), { extraArgs: ['--http-token-file', tokenFile, '--replication-factor', '1', '--min-in-sync', '1', '--shards', '8'] });
    peers.push(p);
    assert.equal((await fetch(`http://${p.httpAddress}/healthz`)).status !== 401, true, '/healthz needs no token');
    for (const [method, path] of [['GET', '/v1/status'], ['GET', '/metrics'], ['PUT', '/v1/kv/a'], ['POST', '/v1/leave']] as const) {
      const r = await fetch(`http://${p.httpAddress}${path}`, { method, body: method === 'GET' ? undefined : '{}', headers: { 'content-type': 'application/json' } });
      assert.equal(r.status, 401, `${method} ${path} without a token`);
      assert.equal(r.headers.get('www-authenticate'), 'Bearer realm="shoal"');
      const wrong = await fetch(`http://${p.httpAddress}${path}`, { method, body: method === 'GET' ? undefined : '{}', headers: { authorization: 'Bearer correct-horse-battery-staple-43', 'content-type': 'application/json' } });
      assert.equal(wrong.status, 401, `${method} ${path} with a wrong token`);
    }
    const denied = await runCli(['status', '--http', p.httpAddress]);
    assert.equal(denied.code, 1);
    assertOneLineNaming(denied.stderr, '401');
    const ok = await runCli(['status', '--http', p.httpAddress, '--http-token-file', tokenFile]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.ok(ok.stdout.includes(p.peerId));
    await waitFor('the lone peer takes writes', async () => (await runCli(['put', 'k', 'v', '--http', p.httpAddress, '--http-token-file', tokenFile])).code === 0, { timeoutMs: 20_000 });
    const got = await runCli(['get', 'k', '--http', p.httpAddress, '--http-token-file', tokenFile]);
    assert.equal(got.stdout, 'v');
  });
});

describe('CLI: shoal demo', function () {
  this.timeout(120_000);

  it('starts a writable 3-peer cluster, prints addresses and commands, and Ctrl-C stops it and removes its data', async () => {
    const child = spawn(process.execPath, [SHOAL_BIN, 'demo', '--peers', '3'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      await waitFor('the demo to say ready', () => /ready: 3 peers, \d+ shards writable/.test(out) || /demo failed/.test(out), { timeoutMs: 90_000 });
      assert.doesNotMatch(out, /demo failed/);
      const dir = /starting 3 peers in (\S+)/.exec(out)?.[1] as string;
      const https = [...out.matchAll(/ http (\S+) /g)].map((m) => m[1] as string);
      assert.equal(https.length, 3, out);
      assert.match(out, /shoal put greeting hello --http /);
      assert.ok(existsSync(dir));
      const put = await runCli(['put', 'demo-key', 'demo-value', '--http', https[0] as string]);
      assert.equal(put.code, 0, put.stderr);
      const got = await runCli(['get', 'demo-key', '--http', https[2] as string]);
      assert.equal(got.stdout, 'demo-value');
      child.kill('SIGINT');
      assert.equal(await exited, 0, out);
      assert.ok(!existsSync(dir), 'the demo removed its data');
      for (const h of https) await assert.rejects(fetch(`http://${h}/healthz`, { signal: AbortSignal.timeout(2000) }), `${h} stopped`);
    } finally {
      child.kill('SIGKILL');
    }
  });
});
