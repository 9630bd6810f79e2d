/**
 * The scheduler and autoscaler cores (protocols/scheduler/): queue order and the aging bound,
 * placement by resources, types and learnt history, re-dispatch after a death or a timeout, late
 * answers ignored; the seeded placement simulation against its baselines and under a death;
 * the autoscaler's step response, calm under noise, bounds and cool-down.
 */
import assert from 'node:assert/strict';
import { SeededRandom } from '../../protocols/random.js';
import { Autoscaler, parseTaskSubmission, Scheduler, type Decision, type TaskSpec } from '../../protocols/scheduler/index.js';
import { percentile, runSchedulerSim } from '../sim/scheduler-sim.js';

const spec = (id: string, o: Partial<TaskSpec> = {}): TaskSpec => ({ id, type: 'work', priority: 0, cpu: 1, memMb: 10, timeoutMs: 60_000, maxAttempts: 3, ...o });
const dispatches = (ds: Decision[]): Array<[string, string]> => ds.flatMap((d) => (d.kind === 'dispatch' ? [[d.taskId, d.worker] as [string, string]] : []));

describe('scheduler core', () => {
  it('runs higher priority first, and a low-priority task waits at most the aging bound under a stream of high ones', () => {
    const s = new Scheduler(new SeededRandom(1), { agingMs: 1000 });
    s.upsertWorker({ id: 'w', types: ['work'], cpu: 1, memMb: 100 });
    s.submit(0, spec('low', { priority: 0 }));
    s.submit(0, spec('h0', { priority: 5 }));
    assert.deepEqual(dispatches(s.tick(0)), [['h0', 'w']]);
    // Every 100 ms the running task ends and a new priority-5 task arrives.
    let running = 'h0';
    let lowStartedAt = -1;
    for (let t = 100, k = 1; t <= 20_000 && lowStartedAt < 0; t += 100, k++) {
      s.finished(t, running, 'w', 1, true);
      s.submit(t, spec(`h${k}`, { priority: 5 }));
      const [d] = dispatches(s.tick(t));
      assert.ok(d !== undefined);
      running = d[0];
      if (running === 'low') lowStartedAt = t;
    }
    // Bound: (5 − 0) × agingMs, plus one task's run for the slot to free.
    assert.ok(lowStartedAt > 0 && lowStartedAt <= 5 * 1000 + 100, `the low task started at ${lowStartedAt} ms`);
  });

  it('places only where the type is handled and the resources fit', () => {
    const s = new Scheduler(new SeededRandom(2));
    s.upsertWorker({ id: 'small', types: ['work', 'img'], cpu: 2, memMb: 100 });
    s.upsertWorker({ id: 'big', types: ['work'], cpu: 8, memMb: 4000 });
    s.submit(0, spec('a', { cpu: 4, memMb: 1000 }));
    s.submit(0, spec('b', { type: 'img' }));
    s.submit(0, spec('c', { type: 'video' }));
    const got = new Map(dispatches(s.tick(0)));
    assert.equal(got.get('a'), 'big');
    assert.equal(got.get('b'), 'small');
    assert.equal(got.has('c'), false, 'no worker handles video: it waits');
    assert.equal(s.status('c')?.state, 'queued');
    // Resources are held while a task runs: a second 4-core task fits big too, a third does not.
    s.submit(1, spec('d', { cpu: 4 }));
    s.submit(1, spec('e', { cpu: 4 }));
    assert.deepEqual(dispatches(s.tick(1)), [['d', 'big']]);
    assert.equal(s.status('e')?.state, 'queued');
    s.finished(50, 'a', 'big', 1, true);
    assert.deepEqual(dispatches(s.tick(50)), [['e', 'big']]);
  });

  it('learns which worker is slow and sends the type elsewhere', () => {
    const s = new Scheduler(new SeededRandom(3));
    s.upsertWorker({ id: 'fast', types: ['work'], cpu: 1, memMb: 100 });
    s.upsertWorker({ id: 'slow', types: ['work'], cpu: 1, memMb: 100 });
    let now = 0;
    // Warm-up: two tasks at once, one on each (nothing learnt yet); slow takes 10× longer.
    s.submit(now, spec('wa'));
    s.submit(now, spec('wb'));
    const ds = dispatches(s.tick(now));
    assert.equal(ds.length, 2, 'both workers used before anything is learnt');
    for (const [id, w] of ds) s.finished(now + (w === 'slow' ? 1000 : 100), id, w, 1, true);
    now += 1000;
    assert.ok((s.history('slow', 'work')?.durationMs ?? 0) > 5 * (s.history('fast', 'work')?.durationMs ?? Infinity), 'durations learnt');
    // Two at once: the second waits for the fast one (100 ms) rather than take the slow one now.
    s.submit(now, spec('p'));
    s.submit(now, spec('q'));
    assert.deepEqual(dispatches(s.tick(now)).map(([, w]) => w), ['fast']);
    now += 100;
    s.finished(now, 'p', 'fast', 1, true);
    assert.deepEqual(dispatches(s.tick(now)), [['q', 'fast']]);
    now += 100;
    s.finished(now, 'q', 'fast', 1, true);
    // Both free: the next task goes to the fast one, every time.
    for (let k = 0; k < 10; k++) {
      s.submit(now, spec(`x${k}`));
      const [[id, w]] = dispatches(s.tick(now)) as [[string, string]];
      assert.equal(w, 'fast');
      now += 100;
      s.finished(now, id, w, 1, true);
    }
  });

  it('dispatches again after the worker dies or the attempt times out; fails after maxAttempts with every reason', () => {
    const s = new Scheduler(new SeededRandom(4));
    for (const id of ['a', 'b', 'c']) s.upsertWorker({ id, types: ['work'], cpu: 1, memMb: 100 });
    s.submit(0, spec('t', { timeoutMs: 1000, maxAttempts: 3 }));
    const [[, first]] = dispatches(s.tick(0)) as [[string, string]];
    const died = s.workerDead(10, first);
    assert.deepEqual(died.map((d) => d.kind), ['retry']);
    const [[, second]] = dispatches(s.tick(10)) as [[string, string]];
    assert.notEqual(second, first);
    assert.equal(s.status('t')?.attempts, 2);
    // A late answer from the dead worker's attempt changes nothing.
    assert.equal(s.finished(20, 't', first, 1, true), null);
    assert.equal(s.status('t')?.state, 'running');
    // Timeout of attempt 2, then attempt 3 fails: failed for good with the three reasons.
    const timedOut = s.tick(1020);
    assert.ok(timedOut.some((d) => d.kind === 'retry' && /timeout/.test(d.reason)));
    const third = dispatches(timedOut.concat(s.tick(1021)));
    assert.equal(third.length, 1);
    const fin = s.finished(1100, 't', third[0]![1], 3, false, 'boom');
    assert.equal(fin?.[0]?.kind, 'fail');
    const reasons = (fin![0] as { reasons: string[] }).reasons;
    assert.equal(reasons.length, 3);
    assert.match(reasons[0]!, /died/);
    assert.match(reasons[1]!, /timeout/);
    assert.match(reasons[2]!, /boom/);
    assert.equal(s.status('t'), null);
  });

  it('refuses a duplicate id and a full queue; cancels queued and running tasks', () => {
    const s = new Scheduler(new SeededRandom(5), { maxTasks: 2 });
    s.upsertWorker({ id: 'w', types: ['work'], cpu: 1, memMb: 100 });
    assert.equal(s.submit(0, spec('a')), true);
    assert.equal(s.submit(0, spec('a')), false);
    assert.equal(s.submit(0, spec('b')), true);
    assert.equal(s.submit(0, spec('c')), false, 'full');
    s.tick(0);
    assert.equal(s.cancel('a'), true);
    assert.equal(s.cancel('b'), true);
    assert.equal(s.summary().queued + s.summary().running, 0);
    assert.equal(s.summary().workers[0]!.freeCpu, 1, 'the cancelled task released its resources');
  });
});

describe('scheduler simulation (virtual time)', () => {
  it('beats round-robin and history-blind least-queue on unequal workers, and stays near the omniscient oracle', () => {
    const base = { speeds: [1, 1, 1, 0.5, 0.25], load: 0.8, tasks: 6000 };
    const p99 = (policy: 'shoal' | 'round-robin' | 'least-queue' | 'omniscient'): number => {
      const xs: number[] = [];
      for (let seed = 1; seed <= 3; seed++) xs.push(percentile(runSchedulerSim({ ...base, seed, policy }).responseMs, 0.99));
      return percentile(xs, 0.5);
    };
    const shoal = p99('shoal');
    const rr = p99('round-robin');
    const lq = p99('least-queue');
    const oracle = p99('omniscient');
    assert.ok(shoal < rr / 2, `p99 shoal ${shoal.toFixed(0)} ms vs round-robin ${rr.toFixed(0)} ms`);
    assert.ok(shoal < lq, `p99 shoal ${shoal.toFixed(0)} ms vs least-queue ${lq.toFixed(0)} ms`);
    assert.ok(shoal < oracle * 2, `p99 shoal ${shoal.toFixed(0)} ms vs omniscient ${oracle.toFixed(0)} ms`);
  });

  it('loses no task and completes none twice when a worker dies mid-run', () => {
    for (let seed = 1; seed <= 5; seed++) {
      const r = runSchedulerSim({ seed, policy: 'shoal', speeds: [1, 1, 1, 1, 0.5], load: 0.7, tasks: 3000, deathOf: seed % 5 });
      assert.deepEqual([r.completed, r.lost, r.duplicates], [3000, 0, 0], `seed ${seed}`);
    }
  });
});

describe('autoscaler core', () => {
  const policy = { minPeers: 3, maxPeers: 9 };
  const sample = (peers: number, cpu: number) => ({ peers, cpuUtilization: cpu, tasksDemand: 0, taskSlots: 0 });

  it('acts on a sustained step within the scale-up window, by the HPA rule', () => {
    const a = new Autoscaler(policy);
    let t = 0;
    for (; t < 60_000; t += 1000) assert.equal(a.observe(t, sample(3, 0.6)).action, 'none');
    const stepAt = t;
    let first: { atMs: number; desired: number } | null = null;
    for (; t < stepAt + 60_000 && first === null; t += 1000) {
      const d = a.observe(t, sample(3, 1.0));
      if (d.action === 'up') first = d;
    }
    assert.ok(first !== null, 'scaled up');
    assert.ok(first.atMs - stepAt <= 15_000, `first action ${first.atMs - stepAt} ms after the step`);
    assert.equal(first.desired, 5, 'ceil(3 × 1.0 / 0.6) = 5');
  });

  it('does not flap under ±10 % noise around the target for 10 minutes', () => {
    const a = new Autoscaler(policy);
    const r = new SeededRandom(9);
    let peers = 4;
    for (let t = 0; t < 600_000; t += 1000) {
      const d = a.observe(t, sample(peers, 0.6 * (0.9 + 0.2 * r.next())));
      if (d.action !== 'none') {
        a.acted(t, d.action);
        peers = d.desired;
      }
    }
    assert.ok(a.reversals() <= 1, `${a.reversals()} reversals`);
    assert.equal(peers, 4);
  });

  it('stays within min and max, steps at most maxStep, and waits out the cool-down', () => {
    const a = new Autoscaler({ ...policy, scaleUpWindowMs: 0, cooldownMs: 20_000 });
    const d1 = a.observe(0, sample(3, 1.0));
    assert.deepEqual([d1.action, d1.desired], ['up', 5]);
    a.acted(0, 'up');
    const d2 = a.observe(5000, sample(5, 1.0));
    assert.equal(d2.action, 'none');
    assert.match(d2.reason, /cooling down/);
    const d3 = a.observe(25_000, sample(5, 1.0));
    assert.deepEqual([d3.action, d3.desired], ['up', 7]);
    a.acted(25_000, 'up');
    const d4 = a.observe(50_000, sample(9, 1.0));
    assert.equal(d4.action, 'none', 'at maxPeers');
    const low = new Autoscaler({ ...policy, scaleDownWindowMs: 0, cooldownMs: 0 });
    const d5 = low.observe(0, sample(4, 0.0));
    assert.deepEqual([d5.action, d5.desired], ['down', 3], 'never below minPeers');
    assert.throws(() => new Autoscaler({ minPeers: 5, maxPeers: 3 }), /maxPeers/);
  });

  it('acts once a short window is covered by samples, whatever the sampling period', () => {
    // Samples every 2 s, windows of 5 s: a window never starts exactly on a sample.
    const a = new Autoscaler({ minPeers: 3, maxPeers: 9, scaleUpWindowMs: 5000, scaleDownWindowMs: 5000, cooldownMs: 0 });
    let t = 0;
    let down: number | null = null;
    for (; t <= 30_000 && down === null; t += 2000) if (a.observe(t, sample(5, 0.05)).action === 'down') down = t;
    assert.ok(down !== null && down >= 5000 && down <= 8000, `scaled down at ${down} ms`);
    let up: number | null = null;
    const from = t;
    for (; t <= from + 30_000 && up === null; t += 2000) if (a.observe(t, sample(3, 1.0)).action === 'up') up = t - from;
    assert.ok(up !== null && up >= 5000 && up <= 8000, `scaled up ${up} ms after the step`);
  });

  it('counts queued tasks as demand when CPUs idle', () => {
    const a = new Autoscaler({ ...policy, scaleUpWindowMs: 0 });
    const d = a.observe(0, { peers: 3, cpuUtilization: 0.1, tasksDemand: 30, taskSlots: 12 });
    assert.equal(d.action, 'up');
    assert.ok(d.utilization > 2);
  });
});

describe('task submissions', () => {
  it('fill in the defaults and name the bad field', () => {
    assert.deepEqual(parseTaskSubmission({ type: 'sleep' }), {
      type: 'sleep',
      payload: null,
      priority: 0,
      resources: { cpu: 1, memMb: 64 },
      idempotencyKey: null,
      timeoutMs: 60_000,
      maxAttempts: 3,
    });
    const bad: Array<[unknown, string]> = [
      [null, 'body'],
      [{ type: 'Bad Type' }, 'type'],
      [{ type: 'x', priority: 1.5 }, 'priority'],
      [{ type: 'x', resources: { cpu: 0 } }, 'cpu'],
      [{ type: 'x', resources: { gpu: 1 } }, 'resources.gpu'],
      [{ type: 'x', timeoutMs: 1 }, 'timeoutMs'],
      [{ type: 'x', maxAttempts: 0 }, 'maxAttempts'],
      [{ type: 'x', idempotencyKey: '' }, 'idempotencyKey'],
      [{ type: 'x', payload: 'p'.repeat(70_000) }, 'payload'],
      [{ type: 'x', extra: 1 }, 'extra'],
    ];
    for (const [body, field] of bad) {
      assert.throws(() => parseTaskSubmission(body), (e: Error & { field?: string }) => e.name === 'TaskInputError' && e.field === field, JSON.stringify(body)?.slice(0, 80));
    }
  });
});
