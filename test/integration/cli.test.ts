import assert from 'node:assert/strict';
import { writeFile, readFile, stat } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { makeTempDir, ProcessPeer, removeDir, runCli, stateOf, waitFor } from './harness.js';

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
    for (const c of ['start', 'status', 'leave', 'keygen']) assert.ok(top.stdout.includes(c));
    const start = await runCli(['start', '--help']);
    assert.equal(start.code, 0);
    for (const flag of ['--listen', '--join', '--data-dir', '--http', '--swarm-key', '--log-level', '--heartbeat-interval-ms', '--phi-threshold', '--suspicion-timeout-ms']) {
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
      [['start', '--listen', '/ip4/127.0.0.1/udp/4001'], '--listen'],
      [['start', '--listen', 'garbage'], '--listen'],
      [['start', '--http', 'nohostport'], '--http'],
      [['start', '--phi-threshold', 'abc'], '--phi-threshold'],
      [['start', '--log-level', 'loud'], '--log-level'],
      [['status', '--http', '1.2.3.4:99999'], '--http'],
      [['frobnicate'], 'frobnicate'],
    ];
    for (const [args, what] of cases) {
      const r = await runCli(args[0] === 'start' ? [...args, '--data-dir', join(dir, 'never')] : args);
      assert.equal(r.code, 2, `${args.join(' ')} should exit 2; stderr: ${r.stderr}`);
      assertOneLineNaming(r.stderr, what);
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

  it('prints its peer id and join address; status shows the members; SIGTERM leaves and exits 0', async () => {
    const a = await ProcessPeer.start(join(dir, 'a'));
    peers.push(a);
    assert.match(a.peerId, /^12D3/);
    assert.match(a.joinAddr, new RegExp(`^/ip4/127\\.0\\.0\\.1/tcp/\\d+/p2p/${a.peerId}$`));
    const b = await ProcessPeer.start(join(dir, 'b'), { join: [a.joinAddr] });
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

    b.signal('SIGTERM');
    const exit = await b.waitExit();
    assert.equal(exit.code, 0);
    await waitFor('b left at a', async () => stateOf(await a.status(), b.peerId) === 'left', { timeoutMs: 5_000 });
  });

  it('shoal leave makes a running peer leave and exit 0; the others see it left', async () => {
    const a = peers[0] as ProcessPeer;
    const c = await ProcessPeer.start(join(dir, 'c'), { join: [a.joinAddr] });
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

  it('a private network: a peer without the swarm key cannot connect to peers that have it', async () => {
    const key = join(dir, 'swarm.key');
    assert.equal((await runCli(['keygen', key])).code, 0);
    const p1 = await ProcessPeer.start(join(dir, 'k1'), { extraArgs: ['--swarm-key', key] });
    peers.push(p1);
    const p2 = await ProcessPeer.start(join(dir, 'k2'), { join: [p1.joinAddr], extraArgs: ['--swarm-key', key] });
    peers.push(p2);
    const outsider = await ProcessPeer.start(join(dir, 'k3'), { join: [p1.joinAddr] });
    peers.push(outsider);
    await waitFor('keyed peers see each other', async () => stateOf(await p1.status(), p2.peerId) === 'alive');
    // The outsider keeps retrying its join; give it several attempts' worth of time and
    // check at every poll that it never becomes a member on either side.
    const deadline = Date.now() + 3000;
    for (let i = 0; i < 100 && Date.now() < deadline; i++) {
      assert.equal(stateOf(await p1.status(), outsider.peerId), undefined);
      assert.equal(stateOf(await outsider.status(), p1.peerId), undefined);
      await new Promise((r) => setTimeout(r, 100));
    }
  });
});
