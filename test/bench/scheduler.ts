// npm run bench:scheduler [-- --tasks 20000 --seeds 5]
// Task placement in the seeded virtual-time simulation (test/sim/scheduler-sim.ts): Shoal's
// scheduler against round-robin, history-blind least-queue and an omniscient earliest-finish
// oracle, on equal and on unequal workers; the decision cost at 50 workers; a worker's death.
// Not a test: it prints figures (the issue-11 targets beside them).
import { parseArgs } from 'node:util';
import { Autoscaler, DEFAULT_AUTOSCALER_POLICY } from '../../protocols/scheduler/index.js';
import { SeededRandom } from '../../protocols/random.js';
import { percentile, runSchedulerSim, type Policy, type SchedulerSimOptions } from '../sim/scheduler-sim.js';

const { values } = parseArgs({
  options: {
    tasks: { type: 'string', default: '20000' },
    seeds: { type: 'string', default: '5' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (values.help) {
  process.stdout.write('Usage: npm run bench:scheduler [-- --tasks N --seeds N]\n');
  process.exit(0);
}
const tasks = Number(values.tasks);
const seeds = Number(values.seeds);
if (!(Number.isInteger(tasks) && tasks >= 100 && tasks <= 1_000_000) || !(Number.isInteger(seeds) && seeds >= 1 && seeds <= 100)) {
  process.stderr.write('--tasks: 100..1000000, --seeds: 1..100\n');
  process.exit(2);
}

const POLICIES: Policy[] = ['shoal', 'round-robin', 'least-queue', 'omniscient'];
const fmt = (x: number): string => (Number.isFinite(x) ? x.toFixed(1).padStart(8) : '       -');

/** Per policy: the median over seeds of p50, p99 and p99.9 response times. */
function table(title: string, base: Omit<SchedulerSimOptions, 'seed' | 'policy'>): Map<Policy, { p50: number; p99: number; p999: number; decisionUs: number }> {
  const out = new Map<Policy, { p50: number; p99: number; p999: number; decisionUs: number }>();
  process.stdout.write(`\n${title}\n  policy          p50 ms   p99 ms p99.9 ms  decision µs/task\n`);
  for (const policy of POLICIES) {
    const p50s: number[] = [];
    const p99s: number[] = [];
    const p999s: number[] = [];
    const cost: number[] = [];
    for (let seed = 1; seed <= seeds; seed++) {
      const r = runSchedulerSim({ ...base, seed, policy });
      p50s.push(percentile(r.responseMs, 0.5));
      p99s.push(percentile(r.responseMs, 0.99));
      p999s.push(percentile(r.responseMs, 0.999));
      cost.push((r.decisionMs * 1000) / Math.max(1, r.decisions));
    }
    const row = { p50: percentile(p50s, 0.5), p99: percentile(p99s, 0.5), p999: percentile(p999s, 0.5), decisionUs: percentile(cost, 0.5) };
    out.set(policy, row);
    process.stdout.write(`  ${policy.padEnd(12)} ${fmt(row.p50)} ${fmt(row.p99)} ${fmt(row.p999)}  ${fmt(row.decisionUs)}\n`);
  }
  return out;
}

const even = table(`10 equal workers (1 slot each), 80 % load, ${tasks} tasks of exp(100 ms) work, median of ${seeds} seeds`, {
  speeds: Array(10).fill(1) as number[],
  load: 0.8,
  tasks,
});
const s = even.get('shoal')!;
const o = even.get('omniscient')!;
process.stdout.write(`  shoal / omniscient: median ${(s.p50 / o.p50).toFixed(2)}× (target ≤ 1.10), p99 ${(s.p99 / o.p99).toFixed(2)}× (target ≤ 1.5)\n`);

const uneven = table(`workers of speeds 1/1/1/0.5/0.25 (1 slot each), 80 % load, ${tasks} tasks`, { speeds: [1, 1, 1, 0.5, 0.25], load: 0.8, tasks });
const su = uneven.get('shoal')!;
const lq = uneven.get('least-queue')!;
const ou = uneven.get('omniscient')!;
process.stdout.write(
  `  p99.9: least-queue / shoal ${(lq.p999 / su.p999).toFixed(2)}× (target ≥ 2); shoal / omniscient: median ${(su.p50 / ou.p50).toFixed(2)}×, p99 ${(su.p99 / ou.p99).toFixed(2)}×\n`,
);

const big = table(`50 workers of speeds 0.5..1.5 (4 slots each), 80 % load, ${tasks} tasks`, {
  speeds: Array.from({ length: 50 }, (_, i) => 0.5 + (i % 11) / 10),
  slots: 4,
  load: 0.8,
  tasks,
});
process.stdout.write(`  decision cost at 50 workers: ${(big.get('shoal')!.decisionUs / 1000).toFixed(3)} ms per task (target ≤ 5 ms)\n`);

process.stdout.write('\na worker dies mid-run (10 workers, 80 % load; its tasks go elsewhere at once)\n');
for (let seed = 1; seed <= seeds; seed++) {
  const r = runSchedulerSim({ seed, policy: 'shoal', speeds: Array(10).fill(1) as number[], load: 0.7, tasks, deathOf: 3 });
  process.stdout.write(`  seed ${seed}: ${r.completed} of ${tasks} completed, ${r.lost} lost, ${r.duplicates} completed twice\n`);
}

// The autoscaler rule with its production defaults (a sample every 2 s, as node/autoscale-service
// does), in virtual time. The cluster: a demand of D cores spread over the alive peers
// (utilization = D / peers, each sample with ±10 % noise); a started peer counts after 8 s.
process.stdout.write(`\nautoscaler (default policy: target ${DEFAULT_AUTOSCALER_POLICY.targetUtilization * 100} %, up window ${DEFAULT_AUTOSCALER_POLICY.scaleUpWindowMs / 1000} s, down window ${DEFAULT_AUTOSCALER_POLICY.scaleDownWindowMs / 1000} s, cool-down ${DEFAULT_AUTOSCALER_POLICY.cooldownMs / 1000} s; samples every 2 s; ±10 % noise)\n`);
function autoscalerRun(seed: number, demandAt: (tMs: number) => number, untilMs: number): { firstActionMs: number | null; actions: number; reversals: number; peers: number } {
  const a = new Autoscaler({ minPeers: 3, maxPeers: 20 });
  const r = new SeededRandom(seed);
  let peers = 3;
  let pending: { atMs: number; peers: number } | null = null;
  let firstActionMs: number | null = null;
  let actions = 0;
  for (let t = 0; t <= untilMs; t += 2000) {
    if (pending !== null && t >= pending.atMs) {
      peers = pending.peers;
      pending = null;
    }
    const util = (demandAt(t) / peers) * (0.9 + 0.2 * r.next());
    const d = a.observe(t, { peers, cpuUtilization: util, tasksDemand: 0, taskSlots: 0 });
    if (d.action !== 'none' && pending === null) {
      a.acted(t, d.action);
      actions++;
      firstActionMs ??= t;
      pending = { atMs: t + (d.action === 'up' ? 8000 : 0), peers: d.desired };
    }
  }
  return { firstActionMs, actions, reversals: a.reversals(), peers };
}
const stepAt = 60_000;
const firstUps: number[] = [];
const calm: Array<{ actions: number; reversals: number }> = [];
for (let seed = 1; seed <= Math.max(seeds, 5); seed++) {
  // A step from 50 % to 150 % utilization of 3 peers at t = 60 s.
  const step = autoscalerRun(seed, (t) => (t < stepAt ? 1.5 : 4.5), stepAt + 120_000);
  if (step.firstActionMs !== null) firstUps.push(step.firstActionMs - stepAt);
  // 10 minutes of a demand of 3 cores: from 3 peers (100 %) it grows once to 5 (60 %), then holds.
  calm.push(autoscalerRun(1000 + seed, () => 3, 600_000));
}
process.stdout.write(
  `  sustained step 50 % -> 150 %: first action ${firstUps.map((x) => `${x / 1000} s`).join(', ')} after the step (target ≤ 15 s)\n` +
    `  10 min of a steady demand (3 peers at 100 % -> 5 at the target) with ±10 % noise: actions ${calm.map((x) => x.actions).join(', ')}; reversals ${calm.map((x) => x.reversals).join(', ')} (target ≤ 1 per 10 min)\n`,
);
