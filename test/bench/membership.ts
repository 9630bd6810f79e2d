// npm run bench:membership [-- --rounds 10 --soak-seconds 120]
// Prints the membership figures of issue 2; not a test, never a pass/fail verdict.
import '../../node/polyfill.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { makeTempDir, ProcessPeer, removeDir, stateOf, waitFor } from '../integration/harness.js';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '10' },
    'soak-seconds': { type: 'string', default: '120' },
    peers: { type: 'string', default: '5' },
  },
});
const rounds = Number(values.rounds);
const soakSeconds = Number(values['soak-seconds']);
const peerCount = Number(values.peers);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

async function everyoneSees(observers: ProcessPeer[], target: string, state: string): Promise<boolean> {
  const st = await Promise.all(observers.map((o) => o.status()));
  return st.every((s) => stateOf(s, target) === state);
}

async function startCluster(dir: string, tag: string): Promise<{ peers: ProcessPeer[]; convergeMs: number }> {
  const seed = await ProcessPeer.start(join(dir, `${tag}-0`));
  const rest = await Promise.all(
    Array.from({ length: peerCount - 1 }, (_, i) => ProcessPeer.start(join(dir, `${tag}-${i + 1}`), { join: [seed.joinToken] })),
  );
  const t0 = performance.now(); // the last peer has started (printed its addresses)
  const peers = [seed, ...rest];
  const ids = peers.map((p) => p.peerId);
  await waitFor(
    `every peer to see ${peerCount} alive`,
    async () => {
      const st = await Promise.all(peers.map((p) => p.status()));
      return st.every((s) => ids.every((id) => stateOf(s, id) === 'alive'));
    },
    { timeoutMs: 30_000, intervalMs: 10 },
  );
  return { peers, convergeMs: performance.now() - t0 };
}

async function main(): Promise<void> {
  const dir = await makeTempDir('shoal-bench-');
  const all: ProcessPeer[] = [];
  const burners: ChildProcess[] = [];
  try {
    // 1. Convergence after start.
    const { peers, convergeMs } = await startCluster(dir, 'a');
    all.push(...peers);
    console.log(JSON.stringify({ figure: 'converge_after_last_start_ms', peers: peerCount, value: Math.round(convergeMs), target: 3000 }));

    // 2. SIGSTOP until every other peer shows dead, `rounds` times.
    const detect: number[] = [];
    for (let r = 0; r < rounds; r++) {
      const victim = peers[1 + (r % (peers.length - 1))] as ProcessPeer;
      const others = peers.filter((p) => p !== victim);
      const t0 = performance.now();
      victim.signal('SIGSTOP');
      try {
        await waitFor('dead everywhere', () => everyoneSees(others, victim.peerId, 'dead'), { timeoutMs: 30_000, intervalMs: 10 });
        detect.push(performance.now() - t0);
      } finally {
        victim.signal('SIGCONT');
      }
      await waitFor('alive again everywhere', () => everyoneSees(peers, victim.peerId, 'alive'), { timeoutMs: 30_000 });
      process.stderr.write(`round ${r + 1}/${rounds}: dead everywhere after ${Math.round(detect[detect.length - 1] as number)} ms\n`);
    }
    console.log(
      JSON.stringify({
        figure: 'sigstop_to_dead_everywhere_ms',
        rounds,
        median: Math.round(median(detect)),
        max: Math.round(Math.max(...detect)),
        all: detect.map(Math.round),
        target_median: 3000,
      }),
    );

    const ids = peers.map((p) => p.peerId);
    let deadBefore = 0;
    for (const p of peers) {
      const text = await (await fetch(`http://${p.httpAddress}/metrics`)).text();
      deadBefore += Number(/shoal_member_transitions_total\{to="dead"\} (\d+)/.exec(text)?.[1] ?? NaN);
    }
    // 3. False dead verdicts while two busy loops keep both cores busy.
    for (let i = 0; i < 2; i++) {
      burners.push(
        spawn(process.execPath, ['-e', `const end = Date.now() + ${(soakSeconds + 5) * 1000}; while (Date.now() < end) {}`], { stdio: 'ignore' }),
      );
    }
    let falseDead = 0;
    let suspectSeen = 0;
    let polls = 0;
    const wasDead = new Set<string>();
    const wasSuspect = new Set<string>();
    const end = Date.now() + soakSeconds * 1000;
    for (let i = 0; i < soakSeconds * 4 + 10 && Date.now() < end; i++) {
      const st = await Promise.all(peers.map((p) => p.status().catch(() => null)));
      polls++;
      for (const s of st) {
        if (s === null) continue;
        for (const id of ids) {
          const key = `${s.peerId}->${id}`;
          const state = stateOf(s, id);
          if (state === 'dead' && !wasDead.has(key)) {
            falseDead++;
            wasDead.add(key);
          } else if (state !== 'dead') wasDead.delete(key);
          if (state === 'suspect' && !wasSuspect.has(key)) {
            suspectSeen++;
            wasSuspect.add(key);
          } else if (state !== 'suspect') wasSuspect.delete(key);
        }
      }
      await new Promise((r) => setTimeout(r, 250));
    }
    // The exact count: every peer's own tally of transitions to dead (GET /metrics).
    let deadTransitions = 0;
    for (const p of peers) {
      const text = await (await fetch(`http://${p.httpAddress}/metrics`)).text();
      deadTransitions += Number(/shoal_member_transitions_total\{to="dead"\} (\d+)/.exec(text)?.[1] ?? NaN);
    }
    falseDead = Math.max(falseDead, deadTransitions - deadBefore);
    console.log(
      JSON.stringify({ figure: 'false_dead_under_cpu_load', peers: peerCount, seconds: soakSeconds, busyLoops: 2, polls, falseDead, suspectEpisodes: suspectSeen, target: 0 }),
    );
  } finally {
    for (const b of burners) b.kill('SIGKILL');
    await Promise.all(all.map((p) => p.destroy()));
    await removeDir(dir);
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
