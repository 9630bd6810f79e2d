/**
 * `shoal demo --peers N`: a local cluster in one command (issue 10). Starts N `shoal start`
 * processes on 127.0.0.1 with data dirs under one temporary directory — the first makes the
 * cluster, the others join with its token — waits until every shard is writable, prints the
 * HTTP addresses and sample commands, and on Ctrl-C (SIGINT) or SIGTERM stops every peer
 * gracefully (with SIGINT: the whole cluster goes, so no data is moved first) and removes the
 * directory. Every wait is bounded.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface DemoOptions {
  peers: number;
  /** Where the shoal CLI script is (this process's own). */
  script: string;
  /** Extra `shoal start` arguments for every peer. */
  peerArgs: string[];
  out: (line: string) => void;
}

interface DemoPeer {
  name: string;
  child: ChildProcess;
  stdout: string;
  stderr: string;
  http: string;
  token: string;
  exited: Promise<number | null>;
}

const START_TIMEOUT_MS = 30_000;
const READY_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 15_000;

function startPeer(o: DemoOptions, dir: string, name: string, join: string | null): Promise<DemoPeer> {
  const args = [o.script, 'start', '--data-dir', dir, '--listen', '/ip4/127.0.0.1/tcp/0', '--http', '127.0.0.1:0', '--log-level', 'warn', ...o.peerArgs];
  if (join !== null) args.push('--join', join);
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const p: DemoPeer = {
    name,
    child,
    stdout: '',
    stderr: '',
    http: '',
    token: '',
    exited: new Promise((resolve) => child.on('exit', (code) => resolve(code))),
  };
  child.stdout?.on('data', (d: Buffer) => (p.stdout += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (p.stderr = (p.stderr + d.toString()).slice(-20_000)));
  return new Promise((resolve, reject) => {
    let done = false;
    const timer = setTimeout(() => finish(new Error(`${name} did not start within ${START_TIMEOUT_MS} ms: ${p.stderr.trim().split('\n').pop() ?? ''}`)), START_TIMEOUT_MS);
    const finish = (err: Error | null): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearInterval(poll);
      if (err === null) resolve(p);
      else reject(err);
    };
    const poll = setInterval(() => {
      const token = /join token: (\S+)/.exec(p.stdout)?.[1];
      const http = /http: (\S+)/.exec(p.stdout)?.[1];
      if (token !== undefined && http !== undefined) {
        p.token = token;
        p.http = http;
        finish(null);
      }
    }, 50);
    void p.exited.then((code) => finish(new Error(`${name} exited with code ${code}: ${p.stderr.trim().split('\n').pop() ?? ''}`)));
  });
}

async function writable(http: string): Promise<{ writable: number; total: number } | null> {
  try {
    const res = await fetch(`http://${http}/v1/status`, { signal: AbortSignal.timeout(2000) });
    const s = (await res.json()) as { shards?: { writableShards: number; shardCount: number } | null };
    return s.shards == null ? null : { writable: s.shards.writableShards, total: s.shards.shardCount };
  } catch {
    return null;
  }
}

/** Runs the demo until a signal; resolves with the exit code. */
export async function runDemo(o: DemoOptions): Promise<number> {
  const dir = await mkdtemp(join(tmpdir(), 'shoal-demo-'));
  const peers: DemoPeer[] = [];
  let stopping: Promise<number> | null = null;
  const stop = (code: number): Promise<number> => {
    stopping ??= (async () => {
      o.out(`stopping ${peers.length} peers...`);
      for (const p of peers) p.child.kill('SIGINT');
      const guard = setTimeout(() => peers.forEach((p) => p.child.kill('SIGKILL')), STOP_TIMEOUT_MS);
      await Promise.all(peers.map((p) => p.exited));
      clearTimeout(guard);
      await rm(dir, { recursive: true, force: true });
      o.out(`removed ${dir}`);
      return code;
    })();
    return stopping;
  };
  const signalled = new Promise<number>((resolve) => {
    const on = (): void => void stop(0).then(resolve);
    process.once('SIGINT', on);
    process.once('SIGTERM', on);
  });
  try {
    o.out(`starting ${o.peers} peers in ${dir}`);
    const first = await startPeer(o, join(dir, 'p0'), 'p0', null);
    peers.push(first);
    const rest = await Promise.all(Array.from({ length: o.peers - 1 }, (_, i) => startPeer(o, join(dir, `p${i + 1}`), `p${i + 1}`, first.token)));
    peers.push(...rest);
    const deadline = Date.now() + READY_TIMEOUT_MS;
    let w: { writable: number; total: number } | null = null;
    while (Date.now() < deadline) {
      w = await writable(first.http);
      if (w !== null && w.writable === w.total) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    if (w === null || w.writable !== w.total) throw new Error(`the cluster did not become writable within ${READY_TIMEOUT_MS} ms (${w?.writable ?? 0} of ${w?.total ?? '?'} shards)`);
    o.out(`ready: ${o.peers} peers, ${w.total} shards writable`);
    for (const p of peers) o.out(`  ${p.name}  http ${p.http}  data ${join(dir, p.name)}`);
    o.out('try:');
    o.out(`  shoal put greeting hello --http ${first.http}`);
    o.out(`  shoal get greeting --http ${peers[peers.length - 1]!.http}`);
    o.out(`  shoal status --http ${first.http}`);
    o.out(`join another peer: shoal start --data-dir DIR --listen /ip4/127.0.0.1/tcp/0 --http 127.0.0.1:0 --join ${first.token}`);
    o.out('Ctrl-C stops every peer and removes the data.');
  } catch (err) {
    o.out(`demo failed: ${(err as Error).message}`);
    return stop(1);
  }
  // A peer that dies on its own ends the demo too.
  const died = Promise.race(peers.map((p) => p.exited.then((code) => ({ p, code })))).then(({ p, code }) => {
    if (stopping !== null) return stopping;
    o.out(`${p.name} exited (code ${code}): ${p.stderr.trim().split('\n').pop() ?? ''}`);
    return stop(1);
  });
  return Promise.race([signalled, died]);
}
