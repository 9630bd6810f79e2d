import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import type { Peer } from '../../node/index.js';
import { makeTempDir, removeDir, runCli, SHOAL_BIN, type CliResult } from './harness.js';
import { startWritableCluster } from './kv-cluster.js';

/** Exactly one line on stderr, matching `what`. */
function assertOneLine(r: CliResult, what: string | RegExp): void {
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `expected one line on stderr, got: ${r.stderr}`);
  if (typeof what === 'string') assert.ok(lines[0]?.includes(what), `stderr should include ${what}: ${r.stderr}`);
  else assert.match(lines[0] as string, what);
}

/** Run the CLI with `input` on its stdin; stdout as raw bytes. */
function runCliWithInput(args: string[], input: Uint8Array, timeoutMs = 15_000): Promise<{ code: number | null; stdout: Buffer; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [SHOAL_BIN, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out), stderr });
    });
    child.stdin.end(input);
  });
}

describe('CLI: put, get, del against a running cluster', function () {
  this.timeout(90_000);
  let dir: string;
  let peers: Peer[] = [];
  let http: string;

  before(async () => {
    dir = await makeTempDir();
    peers = await startWritableCluster(dir);
    http = (peers[0] as Peer).httpAddress as string;
  });

  after(async () => {
    await Promise.all(peers.map((p) => p.stop().catch(() => {})));
    await removeDir(dir);
  });

  it('put then get prints the value exactly; --verbose adds the version on stderr; del removes it', async () => {
    const put = await runCli(['put', 'greeting/en', 'hello world', '--http', http]);
    assert.equal(put.code, 0, put.stderr);
    const v1 = Number(/^version (\d+)\n$/.exec(put.stdout)?.[1]);
    assert.ok(v1 >= 1, put.stdout);

    const get = await runCli(['get', 'greeting/en', '--http', http]);
    assert.equal(get.code, 0, get.stderr);
    assert.equal(get.stdout, 'hello world', 'no newline added');
    assert.equal(get.stderr, '');

    const verbose = await runCli(['get', 'greeting/en', '--verbose', '--consistency', 'any', '--http', http]);
    assert.equal(verbose.code, 0, verbose.stderr);
    assert.equal(verbose.stdout, 'hello world');
    assert.equal(verbose.stderr, `version ${v1}\n`);

    // The key is percent-encoded: it reaches the store as typed.
    const odd = 'a key/with?odd#chars%2F&é';
    assert.equal((await runCli(['put', odd, 'v', '--http', http])).code, 0);
    assert.equal(await (await fetch(`http://${http}/v1/kv/${encodeURIComponent(odd)}`)).text(), 'v');

    const del = await runCli(['del', 'greeting/en', '--http', http]);
    assert.equal(del.code, 0, del.stderr);
    assert.match(del.stdout, /^version \d+\n$/);
    assert.ok(Number(/\d+/.exec(del.stdout)?.[0]) > v1);

    const gone = await runCli(['get', 'greeting/en', '--http', http]);
    assert.equal(gone.code, 1);
    assert.equal(gone.stdout, '');
    assertOneLine(gone, /not found/);
  });

  it('put --file FILE and --file - (stdin) store binary values byte for byte', async () => {
    const bytes = new Uint8Array(70_000).map((_, i) => (i * 7) % 256);
    const file = join(dir, 'value.bin');
    await writeFile(file, bytes);
    const put = await runCli(['put', 'from-file', '--file', file, '--http', http]);
    assert.equal(put.code, 0, put.stderr);
    const viaHttp = new Uint8Array(await (await fetch(`http://${http}/v1/kv/from-file`)).arrayBuffer());
    assert.deepEqual(viaHttp, bytes);

    const stdin = await runCliWithInput(['put', 'from-stdin', '--file', '-', '--http', http], bytes);
    assert.equal(stdin.code, 0, stdin.stderr);
    const back = await runCliWithInput(['get', 'from-stdin', '--http', http], new Uint8Array());
    assert.equal(back.code, 0, back.stderr);
    assert.deepEqual(new Uint8Array(back.stdout), bytes);

    const missing = await runCli(['put', 'k', '--file', join(dir, 'no-such-file'), '--http', http]);
    assert.equal(missing.code, 1);
    assertOneLine(missing, 'no-such-file');
    const huge = join(dir, 'huge.bin');
    await writeFile(huge, new Uint8Array(1024 * 1024 + 1));
    const tooBig = await runCli(['put', 'k', '--file', huge, '--http', http]);
    assert.equal(tooBig.code, 1);
    assertOneLine(tooBig, huge);
  });

  it('--if-version: a match writes, a mismatch exits 1 and writes nothing', async () => {
    const first = await runCli(['put', 'cas-cli', 'one', '--if-version', '0', '--http', http]);
    assert.equal(first.code, 0, first.stderr);
    const v = Number(/\d+/.exec(first.stdout)?.[0]);
    const mismatch = await runCli(['put', 'cas-cli', 'two', '--if-version', '0', '--http', http]);
    assert.equal(mismatch.code, 1);
    assertOneLine(mismatch, /version mismatch.*version \d+/);
    const ok = await runCli(['put', 'cas-cli', 'three', '--if-version', String(v), '--http', http]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal((await runCli(['get', 'cas-cli', '--http', http])).stdout, 'three');
  });

  it('server-side refusals exit 1 with the server message on one line', async () => {
    const longKey = await runCli(['put', 'k'.repeat(1025), 'x', '--http', http]);
    assert.equal(longKey.code, 1);
    assertOneLine(longKey, /invalid_key/);
  });

  it('usage errors exit 2 with one line naming the flag or argument', async () => {
    const cases: Array<[string[], string]> = [
      [['put', 'k', 'v', '--bogus'], '--bogus'],
      [['put', 'k'], 'VALUE'],
      [['put'], 'KEY'],
      [['put', 'k', 'v', 'extra'], 'extra'],
      [['put', 'k', 'v', '--file', 'f'], '"v"'],
      [['put', 'k', 'v', '--if-version', 'abc'], '--if-version'],
      [['put', 'k', 'v', '--if-version', '1.5'], '--if-version'],
      [['put', 'k', 'v', '--if-version=-1'], '--if-version'],
      [['put', 'k', 'v', '--http', 'nohostport'], '--http'],
      [['put', 'k', 'v', '--timeout-ms', '0'], '--timeout-ms'],
      [['get', 'k', '--consistency', 'eventual'], '--consistency'],
      [['get'], 'KEY'],
      [['get', ''], 'KEY'],
      [['get', 'k', '--http', '1.2.3.4:99999'], '--http'],
      [['del', 'k', '--if-version', '1'], '--if-version'],
      [['del', 'a', 'b'], '"b"'],
    ];
    // Three at a time: each is a process start.
    for (let k = 0; k < cases.length; k += 3) {
      const batch = cases.slice(k, k + 3);
      const results = await Promise.all(batch.map(([args]) => runCli(args)));
      for (const [i, [args, what]] of batch.entries()) {
        const r = results[i]!;
        assert.equal(r.code, 2, `${args.join(' ')} should exit 2; stderr: ${r.stderr}`);
        assertOneLine(r, what);
      }
    }
  });

  it('--help for each command; no peer listening exits 1 naming the address', async () => {
    for (const [cmd, flags] of [
      ['put', ['--file', '--if-version', '--http', '--timeout-ms']],
      ['get', ['--consistency', '--verbose', '--http', '--timeout-ms']],
      ['del', ['--http', '--timeout-ms']],
    ] as const) {
      const r = await runCli([cmd, '--help']);
      assert.equal(r.code, 0);
      for (const f of flags) assert.ok(r.stdout.includes(f), `${cmd} --help lists ${f}`);
      assert.ok(r.stdout.includes('127.0.0.1:7070'));
    }
    const top = await runCli(['--help']);
    for (const c of ['put', 'get', 'del']) assert.match(top.stdout, new RegExp(`^  ${c} `, 'm'));

    const server: Server = createServer();
    await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
    const port = (server.address() as { port: number }).port;
    await new Promise<void>((res) => server.close(() => res()));
    const r = await runCli(['get', 'k', '--http', `127.0.0.1:${port}`]);
    assert.equal(r.code, 1);
    assertOneLine(r, `127.0.0.1:${port}`);
  });
});
