// npm run bench:coordinator [-- --rounds 10 --seconds 5 --no-etcd]
// Prints the coordinator figures of issue 3 as JSON lines; not a test. When Debian's etcd is
// installed (see ../shared/anchors/etcd/README.md) it measures etcd side by side in the same run.
import '../../node/polyfill.js';
import { execFile } from 'node:child_process';
import { cp, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { parseArgs } from 'node:util';
import type { PeerStatus } from '../../node/peer.js';
import { getStatus, makeTempDir, ProcessPeer, removeDir, waitFor } from '../integration/harness.js';

const run = promisify(execFile);
const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '10' },
    seconds: { type: 'string', default: '5' },
    'no-etcd': { type: 'boolean', default: false },
    /** Start the next round as soon as Raft is stable, without waiting for the restarted peer's membership (a harsher test). */
    'no-settle': { type: 'boolean', default: false },
  },
});
const rounds = Number(values.rounds);
const seconds = Number(values.seconds);

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] as number;
}
function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

async function statuses(ps: ProcessPeer[]): Promise<(PeerStatus | null)[]> {
  return Promise.all(ps.map((p) => getStatus(p.httpAddress, 1000).catch(() => null)));
}

async function waitStable(peers: ProcessPeer[]): Promise<PeerStatus> {
  return waitFor(
    'one coordinator agreed by all, 3 voters',
    async () => {
      const st = await statuses(peers);
      const f = st[0];
      if (!f || f.coordinator === null || f.voters.length !== 3) return null;
      return st.every((s) => s !== null && s.coordinator === f.coordinator && s.role !== 'candidate') ? f : null;
    },
    { timeoutMs: 60_000, intervalMs: 20 },
  );
}

async function shoalFailover(dir: string, peers: ProcessPeer[]): Promise<number[]> {
  const times: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const st = await waitStable(peers);
    const victim = peers.find((p) => p.peerId === st.coordinator) as ProcessPeer;
    const before = (await victim.status()) as PeerStatus;
    const rest = peers.filter((p) => p !== victim);
    const t0 = performance.now();
    victim.signal('SIGKILL');
    try {
      await waitFor(
        'a new coordinator that committed an entry',
        async () => (await statuses(rest)).some((s) => s !== null && s.role === 'leader' && s.term > before.term && s.commitIndex > before.commitIndex),
        { timeoutMs: 30_000, intervalMs: 5 },
      );
    } catch (err) {
      const dump = (await statuses(rest)).map((s) => s && { peer: s.peerId, role: s.role, term: s.term, commit: s.commitIndex, coordinator: s.coordinator, voters: s.voters, learners: s.learners, members: s.members.map((m) => [m.peerId, m.state]) });
      process.stderr.write(`killed ${victim.peerId} (term ${before.term}, commit ${before.commitIndex}); survivors: ${JSON.stringify(dump, null, 1)}\n`);
      for (const p of rest) await writeFile(join(tmpdir(), `shoal-bench-${p.peerId.slice(-6)}.log`), p.stderr);
      throw err;
    }
    times.push(performance.now() - t0);
    process.stderr.write(`shoal round ${r + 1}/${rounds}: new coordinator committed after ${Math.round(times[times.length - 1] as number)} ms\n`);
    await victim.waitExit();
    const again = await ProcessPeer.start(victim.dataDir, { join: [(rest[0] as ProcessPeer).joinToken], extraArgs: ['--log-level', process.env.SHOAL_BENCH_LOG ?? 'warn'] });
    peers[peers.indexOf(victim)] = again;
    // Next round only once the restarted peer is a full member again (seen alive by all).
    if (!values['no-settle']) await waitFor(
      'the restarted peer alive at every peer',
      async () => (await statuses(peers)).every((s) => s !== null && peers.every((p) => s.members.find((m) => m.peerId === p.peerId)?.state === 'alive')),
      { timeoutMs: 30_000, intervalMs: 20 },
    );
  }
  void dir;
  return times;
}

/** Closed-loop load of capacity changes against the coordinator's HTTP API. */
async function shoalMapChanges(peers: ProcessPeer[], concurrency: number): Promise<{ opsPerS: number; p50: number; p99: number; errors: number }> {
  const st = await waitStable(peers);
  const leader = peers.find((p) => p.peerId === st.coordinator) as ProcessPeer;
  const ids = st.voters.concat(st.learners);
  const lat: number[] = [];
  let errors = 0;
  const end = performance.now() + seconds * 1000;
  const maxOps = 1_000_000;
  const worker = async (w: number): Promise<void> => {
    for (let i = 0; performance.now() < end && lat.length < maxOps; i++) {
      const s = performance.now();
      const res = await fetch(`http://${leader.httpAddress}/v1/cluster/members/${ids[(w + i) % ids.length]}`, {
        method: 'PUT',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ capacity: 1 + ((w + i) % 4) }),
      }).catch(() => null);
      if (res?.ok) {
        await res.arrayBuffer();
        lat.push(performance.now() - s);
      } else {
        errors++;
        if (res) await res.arrayBuffer();
        if (errors > 10_000) break;
      }
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: concurrency }, (_, w) => worker(w)));
  const secs = (performance.now() - t0) / 1000;
  return { opsPerS: lat.length / secs, p50: quantile(lat, 0.5), p99: quantile(lat, 0.99), errors };
}

async function etcdAvailable(): Promise<boolean> {
  try {
    await run('etcd', ['--version']);
    return true;
  } catch {
    return false;
  }
}

async function etcdFigures(): Promise<void> {
  const here = dirname(fileURLToPath(import.meta.url));
  const anchor = resolve(here, '..', '..', '..', '..', 'shared', 'anchors', 'etcd');
  const work = await mkdtemp(join(tmpdir(), 'shoal-etcd-'));
  await cp(anchor, work, { recursive: true });
  const env = { ...process.env, ETCD_BASE: join(work, 'base') };
  await run('npm', ['ci', '--no-audit', '--no-fund'], { cwd: work, env });
  const sh = (...args: string[]) => run('bash', ['cluster.sh', ...args], { cwd: work, env, timeout: 60_000 });
  await sh('start');
  try {
    const times: number[] = [];
    for (let r = 0; r < rounds; r++) {
      await sh('waithealthy');
      const leader = (await sh('leader')).stdout.trim();
      const t0 = performance.now();
      await sh('killmember', leader);
      // First successful put after the kill, through the two survivors.
      const survivors = ['1', '2', '3'].filter((n) => n !== leader).map((n) => `http://127.0.0.1:${n}2379`).join(',');
      await waitFor(
        'a put to succeed',
        async () => {
          try {
            await run('etcdctl', ['--endpoints', survivors, '--command-timeout=500ms', 'put', 'bench/failover', String(r)], { timeout: 2000 });
            return true;
          } catch {
            return false;
          }
        },
        { timeoutMs: 30_000, intervalMs: 5 },
      );
      times.push(performance.now() - t0);
      process.stderr.write(`etcd round ${r + 1}/${rounds}: first put after ${Math.round(times[times.length - 1] as number)} ms\n`);
      await sh('startmember', leader);
    }
    console.log(JSON.stringify({ figure: 'etcd_leader_kill_to_first_put_ms', members: 3, rounds, median: Math.round(median(times)), max: Math.round(Math.max(...times)), all: times.map(Math.round) }));
    for (const conc of [1, 16, 64]) {
      const out = await run('node', ['bench-etcd.mjs', '--op', 'put', '--conc', String(conc), '--size', '100', '--duration', String(seconds)], { cwd: work, env });
      console.log(out.stdout.trim());
    }
  } finally {
    await sh('stop').catch(() => {});
    await removeDir(work);
  }
}

async function main(): Promise<void> {
  const dir = await makeTempDir('shoal-bench-coord-');
  const peers: ProcessPeer[] = [];
  try {
    const seed = await ProcessPeer.start(join(dir, 'p0'));
    peers.push(seed, ...(await Promise.all([1, 2, 3, 4].map((i) => ProcessPeer.start(join(dir, `p${i}`), { join: [seed.joinToken] })))));
    await waitFor(
      '5 peers in the configuration',
      async () => (await statuses(peers)).every((s) => s !== null && s.voters.length + s.learners.length === 5),
      { timeoutMs: 60_000 },
    );
    const times = await shoalFailover(dir, peers);
    console.log(
      JSON.stringify({
        figure: 'shoal_coordinator_kill_to_new_commit_ms',
        peers: 5,
        rounds,
        median: Math.round(median(times)),
        max: Math.round(Math.max(...times)),
        all: times.map(Math.round),
        target_median: 1500,
      }),
    );
    for (const conc of [1, 16, 64]) {
      const r = await shoalMapChanges(peers, conc);
      console.log(
        JSON.stringify({ figure: 'shoal_map_changes_per_s', voters: 3, concurrency: conc, ops_per_s: Math.round(r.opsPerS), p50_ms: +r.p50.toFixed(2), p99_ms: +r.p99.toFixed(2), errors: r.errors }),
      );
    }
  } finally {
    await Promise.all(peers.map((p) => p.destroy()));
    await removeDir(dir);
  }
  if (values['no-etcd']) return;
  if (await etcdAvailable()) await etcdFigures();
  else console.log(JSON.stringify({ figure: 'etcd', skipped: 'etcd is not installed (apt-get install etcd-server etcd-client)' }));
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
