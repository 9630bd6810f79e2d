/**
 * A seeded, virtual-time simulation of task placement (issue 11): workers of given speeds and
 * slots, Poisson arrivals of tasks with exponential work at a target load, and a policy that
 * places them. Response time = completion − submission. Policies:
 *
 * - `shoal`: the scheduler core (protocols/scheduler/scheduler.ts): one central queue, power of
 *   two choices over learnt per-worker durations, delay scheduling for a faster worker;
 * - `round-robin`: each task to the next worker in turn, into that worker's FIFO queue;
 * - `least-queue`: to the worker with the fewest tasks queued or running (history-blind);
 * - `omniscient`: to the worker where it would finish first, knowing every task's exact work
 *   and every worker's true speed (a greedy earliest-finish-time oracle).
 *
 * Workers can also die (their tasks are given to the policy again at once) to count losses.
 */
import { IndexMinHeap } from '../../protocols/placement/min-heap.js';
import { SeededRandom } from '../../protocols/random.js';
import { Scheduler, type SchedulerConfig } from '../../protocols/scheduler/scheduler.js';

export type Policy = 'shoal' | 'round-robin' | 'least-queue' | 'omniscient';

export interface SchedulerSimOptions {
  seed: number;
  policy: Policy;
  /** Relative speed of each worker (1 = nominal). */
  speeds: number[];
  /** Tasks each worker runs at once. Default 1. */
  slots?: number;
  /** Offered load as a fraction of total capacity. */
  load: number;
  tasks: number;
  /** Mean work of a task at speed 1, ms. Default 100. */
  meanWorkMs?: number;
  /** Worker index that dies at `deathAtMs` (its running and queued tasks are re-placed). */
  deathOf?: number;
  deathAtMs?: number;
  scheduler?: Partial<SchedulerConfig>;
}

export interface SchedulerSimResult {
  policy: Policy;
  completed: number;
  lost: number;
  /** Completed twice or more (must stay 0: at-least-once with one completion recorded). */
  duplicates: number;
  responseMs: number[];
  /** Wall-clock cost of the policy's decisions (ms) and how many tasks they placed. */
  decisionMs: number;
  decisions: number;
}

interface SimTask {
  id: number;
  work: number;
  submitMs: number;
}

interface Running {
  task: SimTask;
  endMs: number;
  attempt: number;
}

/** Events by time, ties in insertion order (on the placement module's index heap). */
class Events<T> {
  private readonly at: number[] = [];
  private readonly values: Array<T | undefined> = [];
  private readonly heap = new IndexMinHeap((a, b) => this.at[a]! < this.at[b]! || (this.at[a] === this.at[b] && a < b));
  push(at: number, v: T): void {
    this.at.push(at);
    this.values.push(v);
    this.heap.push(this.at.length - 1);
  }
  pop(): { at: number; v: T } | undefined {
    const i = this.heap.pop();
    if (i === undefined) return undefined;
    const v = this.values[i]!;
    this.values[i] = undefined;
    return { at: this.at[i]!, v };
  }
  get size(): number {
    return this.heap.size;
  }
}

type Ev = { kind: 'arrive'; task: SimTask } | { kind: 'done'; worker: number; task: number; attempt: number } | { kind: 'death' };

export function runSchedulerSim(o: SchedulerSimOptions): SchedulerSimResult {
  const rng = new SeededRandom(o.seed);
  const slots = o.slots ?? 1;
  const meanWork = o.meanWorkMs ?? 100;
  const capacity = o.speeds.reduce((a, s) => a + s * slots, 0); // task-ms of work per ms
  const rate = (o.load * capacity) / meanWork; // arrivals per ms
  const exp = (mean: number): number => -Math.log(1 - rng.next()) * mean;
  const events = new Events<Ev>();
  let t = 0;
  for (let i = 0; i < o.tasks; i++) {
    t += exp(1 / rate);
    events.push(t, { kind: 'arrive', task: { id: i, work: exp(meanWork), submitMs: t } });
  }
  if (o.deathOf !== undefined) events.push(o.deathAtMs ?? t / 2, { kind: 'death' });

  const alive = o.speeds.map(() => true);
  const running: Array<Map<number, Running>> = o.speeds.map(() => new Map());
  const fifo: SimTask[][] = o.speeds.map(() => []);
  const tasks = new Map<number, SimTask>();
  const done = new Map<number, number>();
  const responseMs: number[] = [];
  let duplicates = 0;
  let decisionMs = 0;
  let decisions = 0;
  let rr = 0;
  let attemptSeq = 0;

  const start = (w: number, task: SimTask, now: number, attempt: number): void => {
    const endMs = now + task.work / o.speeds[w]!;
    running[w]!.set(task.id, { task, endMs, attempt });
    events.push(endMs, { kind: 'done', worker: w, task: task.id, attempt });
  };
  // Early-binding policies: per-worker FIFO queues.
  const startQueued = (w: number, now: number): void => {
    while (alive[w] && running[w]!.size < slots && fifo[w]!.length > 0) start(w, fifo[w]!.shift()!, now, ++attemptSeq);
  };
  const finishAt = (w: number, task: SimTask, now: number): number => {
    // Earliest finish of `task` if queued on w now: simulate its slots with exact work.
    const free: number[] = [...running[w]!.values()].map((r) => r.endMs);
    while (free.length < slots) free.push(now);
    free.sort((a, b) => a - b);
    for (const q of fifo[w]!) {
      const s = free.shift()!;
      free.push(Math.max(s, now) + q.work / o.speeds[w]!);
      free.sort((a, b) => a - b);
    }
    return Math.max(free[0]!, now) + task.work / o.speeds[w]!;
  };
  const placeEarly = (task: SimTask, now: number): void => {
    const c0 = performance.now();
    const live = o.speeds.map((_, i) => i).filter((i) => alive[i]);
    let w: number;
    if (o.policy === 'round-robin') {
      w = live[rr++ % live.length]!;
    } else if (o.policy === 'least-queue') {
      let best = live[0]!;
      for (const i of live) if (fifo[i]!.length + running[i]!.size < fifo[best]!.length + running[best]!.size) best = i;
      w = best;
    } else {
      let best = live[0]!;
      let bestAt = Infinity;
      for (const i of live) {
        const at = finishAt(i, task, now);
        if (at < bestAt) {
          best = i;
          bestAt = at;
        }
      }
      w = best;
    }
    decisionMs += performance.now() - c0;
    decisions++;
    fifo[w]!.push(task);
    startQueued(w, now);
  };

  // Late binding: the Shoal scheduler core.
  const sched = o.policy === 'shoal' ? new Scheduler(new SeededRandom(o.seed ^ 0x5eed), o.scheduler) : null;
  if (sched !== null) o.speeds.forEach((_, i) => sched.upsertWorker({ id: `w${i}`, types: ['work'], cpu: slots, memMb: 1024 }));
  const runShoal = (now: number): void => {
    const c0 = performance.now();
    const ds = sched!.tick(now);
    decisionMs += performance.now() - c0;
    for (const d of ds) {
      if (d.kind !== 'dispatch') continue;
      decisions++;
      start(Number(d.worker.slice(1)), tasks.get(Number(d.taskId))!, now, d.attempt);
    }
  };

  for (let guard = 0; guard < o.tasks * 20 && events.size > 0; guard++) {
    const e = events.pop()!;
    const now = e.at;
    const ev = e.v;
    if (ev.kind === 'arrive') {
      tasks.set(ev.task.id, ev.task);
      if (sched !== null) {
        sched.submit(now, { id: String(ev.task.id), type: 'work', priority: 0, cpu: 1, memMb: 1, timeoutMs: 1e12, maxAttempts: 100 });
        runShoal(now);
      } else placeEarly(ev.task, now);
    } else if (ev.kind === 'done') {
      const r = running[ev.worker]!.get(ev.task);
      if (r === undefined || r.attempt !== ev.attempt || !alive[ev.worker]) continue; // a dead worker's work never completes
      running[ev.worker]!.delete(ev.task);
      const n = (done.get(ev.task) ?? 0) + 1;
      done.set(ev.task, n);
      if (n > 1) duplicates++;
      else responseMs.push(now - r.task.submitMs);
      if (sched !== null) {
        sched.finished(now, String(ev.task), `w${ev.worker}`, ev.attempt, true);
        runShoal(now);
      } else startQueued(ev.worker, now);
    } else {
      const w = o.deathOf!;
      alive[w] = false;
      const orphans = [...running[w]!.values()].map((r) => r.task).concat(fifo[w]!);
      running[w]!.clear();
      fifo[w]!.length = 0;
      if (sched !== null) {
        sched.workerDead(now, `w${w}`);
        runShoal(now);
      } else for (const task of orphans) placeEarly(task, now);
    }
  }
  return { policy: o.policy, completed: done.size, lost: o.tasks - done.size, duplicates, responseMs, decisionMs, decisions };
}

export function percentile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
}
