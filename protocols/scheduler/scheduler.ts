/**
 * The task scheduler: a pure core (time and randomness injected) that one decider runs — the
 * coordinator (see node/ for the shell). It keeps the queue of tasks waiting, what runs where,
 * and per worker and task type the history of durations and failures; `tick` answers with the
 * decisions to carry out, each with its reason.
 *
 * ## Queue
 *
 * Tasks wait in one queue ordered by effective priority = priority + waited / agingMs (ties: the
 * older first). A task of priority p behind a stream of priority q > p tasks is therefore served
 * at the latest once it has waited (q - p) × agingMs plus the time for resources to free up: the
 * aging bound.
 *
 * ## Placement
 *
 * Candidates: live workers that handle the type and whose capacity could ever hold the task
 * (cpu, memMb). Each candidate's estimate for the task = wait + duration / (1 - failure rate):
 * wait is 0 when its free resources hold the task now, else the estimated time until its running
 * tasks free enough; duration and failure rate are EWMAs of what this worker did with this type
 * (before any: the type's mean over all workers, else `priorDurationMs`). Power of two choices
 * (Mitzenmacher; Sparrow, C3): two candidates drawn at random, the lower estimate wins — and the
 * best free worker is always among them. If the winner is busy and clearly better than the best
 * free worker (its estimate below waitMargin × the free one's), the task stays queued for it
 * (delay scheduling: a fast worker soon beats a slow one now) and the next task is considered;
 * otherwise the best free worker takes it.
 *
 * ## Failure
 *
 * At least once: a task whose worker dies (`workerDead`), or that runs past its timeoutMs, or that
 * fails, is queued again until maxAttempts, then `failed` with every reason. A report about an
 * attempt that is not the current one (a late answer from a worker given up on) is ignored.
 */
import { ConfigError } from '../errors.js';
import type { Random } from '../random.js';

export interface SchedulerConfig {
  /** A waiting task gains one priority level per agingMs. Default 10 000. */
  agingMs: number;
  /** Weight of the newest sample in the duration and failure EWMAs. Default 0.1: durations are noisy (about 10 samples matter). */
  ewmaAlpha: number;
  /** Duration assumed for a type never seen anywhere, ms. Default 1000. */
  priorDurationMs: number;
  /** Candidates drawn per decision (power of d choices). Default 2. */
  choices: number;
  /**
   * A task waits for a busy worker only if its estimate there is below this fraction of the best
   * free worker's. Default 0.75: the estimates are EWMAs of noisy durations.
   */
  waitMargin: number;
  /** Most tasks queued or running; submit refuses beyond. Default 100 000. */
  maxTasks: number;
  /** Decisions kept for `recentDecisions`. Default 200. */
  decisionLog: number;
}

export const DEFAULT_SCHEDULER_CONFIG: Readonly<SchedulerConfig> = Object.freeze({
  agingMs: 10_000,
  ewmaAlpha: 0.1,
  priorDurationMs: 1000,
  choices: 2,
  waitMargin: 0.75,
  maxTasks: 100_000,
  decisionLog: 200,
});

export function validateSchedulerConfig(c: SchedulerConfig): void {
  const pos = (k: keyof SchedulerConfig, int = false, min = 0): void => {
    const v = c[k];
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= min || (int && !Number.isInteger(v))) throw new ConfigError(k, `must be a${int ? 'n integer' : ' number'} > ${min}`);
  };
  pos('agingMs');
  pos('priorDurationMs');
  pos('choices', true);
  pos('maxTasks', true);
  pos('decisionLog', true);
  if (!(c.ewmaAlpha > 0 && c.ewmaAlpha <= 1)) throw new ConfigError('ewmaAlpha', 'must be in (0, 1]');
  if (!(c.waitMargin > 0 && c.waitMargin <= 1)) throw new ConfigError('waitMargin', 'must be in (0, 1]');
}

export interface TaskSpec {
  id: string;
  type: string;
  /** Higher runs first. */
  priority: number;
  /** CPU cores the task holds while it runs (may be fractional). */
  cpu: number;
  memMb: number;
  timeoutMs: number;
  maxAttempts: number;
}

export interface WorkerInfo {
  id: string;
  /** Task types this worker handles. */
  types: readonly string[];
  /** Its capacity: cores and memory tasks may hold. */
  cpu: number;
  memMb: number;
}

export type Decision =
  | { kind: 'dispatch'; taskId: string; worker: string; attempt: number; reason: string }
  | { kind: 'retry'; taskId: string; attempt: number; reason: string }
  | { kind: 'fail'; taskId: string; reasons: string[] };

export type TaskState = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';

/** A task in this state is over: no attempt of it runs or will run. */
export function isFinishedState(state: TaskState): boolean {
  return state === 'succeeded' || state === 'failed' || state === 'cancelled';
}

export interface TaskStatus {
  id: string;
  state: TaskState;
  attempts: number;
  worker: string | null;
  reasons: string[];
}

interface Task extends TaskSpec {
  state: TaskState;
  attempts: number;
  worker: string | null;
  queuedAtMs: number;
  startedAtMs: number;
  reasons: string[];
}

interface TypeStats {
  durationMs: number;
  failureRate: number;
  samples: number;
}

interface Worker extends WorkerInfo {
  alive: boolean;
  usedCpu: number;
  usedMemMb: number;
  running: Set<string>;
  stats: Map<string, TypeStats>;
}

const EPS = 1e-9;

export class Scheduler {
  readonly config: SchedulerConfig;
  private readonly tasks = new Map<string, Task>();
  private readonly queue: Task[] = [];
  private readonly workers = new Map<string, Worker>();
  /** Per type over all workers: for a worker that never ran the type. */
  private readonly typeMean = new Map<string, TypeStats>();
  private readonly log: Array<{ atMs: number; decision: Decision }> = [];

  constructor(
    private readonly random: Random,
    config: Partial<SchedulerConfig> = {},
  ) {
    this.config = { ...DEFAULT_SCHEDULER_CONFIG, ...config };
    validateSchedulerConfig(this.config);
  }

  /**
   * Queues a task (`attemptsMade`: attempts an earlier decider already made, which count toward
   * maxAttempts). Returns false (nothing changes) when the id is known or the queue is full.
   */
  submit(nowMs: number, spec: TaskSpec, attemptsMade = 0): boolean {
    if (this.tasks.has(spec.id) || this.tasks.size >= this.config.maxTasks) return false;
    const t: Task = { ...spec, state: 'queued', attempts: attemptsMade, worker: null, queuedAtMs: nowMs, startedAtMs: 0, reasons: [] };
    this.tasks.set(t.id, t);
    this.queue.push(t);
    return true;
  }

  /** A task already running on `worker` (a new decider taking over): resumes tracking it. */
  adoptRunning(nowMs: number, spec: TaskSpec, worker: string, attempt: number, startedAtMs: number): void {
    if (this.tasks.has(spec.id)) return;
    const w = this.workers.get(worker);
    const t: Task = { ...spec, state: 'running', attempts: attempt, worker, queuedAtMs: nowMs, startedAtMs, reasons: [] };
    this.tasks.set(t.id, t);
    if (w === undefined || !w.alive) {
      t.state = 'queued';
      t.worker = null;
      this.queue.push(t);
      return;
    }
    this.hold(w, t);
  }

  /** Adds a worker or updates its types and capacity (alive). */
  upsertWorker(info: WorkerInfo): void {
    const w = this.workers.get(info.id);
    if (w === undefined) {
      this.workers.set(info.id, { ...info, types: [...info.types], alive: true, usedCpu: 0, usedMemMb: 0, running: new Set(), stats: new Map() });
      return;
    }
    w.types = [...info.types];
    w.cpu = info.cpu;
    w.memMb = info.memMb;
    w.alive = true;
  }

  /** The worker is gone (membership verdict): its tasks are queued again. */
  workerDead(nowMs: number, id: string): Decision[] {
    const w = this.workers.get(id);
    if (w === undefined) return [];
    w.alive = false;
    const out: Decision[] = [];
    for (const taskId of [...w.running]) out.push(...this.attemptOver(nowMs, this.tasks.get(taskId)!, `worker ${id} died`));
    this.record(nowMs, ...out);
    return out;
  }

  /**
   * The worker answered for `attempt` of the task: its result (ok) or its error. Returns what
   * follows (a retry or a final failure; nothing for a success), or null for a late answer
   * (another attempt is current, or the task is over), which is ignored.
   */
  finished(nowMs: number, taskId: string, worker: string, attempt: number, ok: boolean, error = ''): Decision[] | null {
    const t = this.tasks.get(taskId);
    if (t === undefined || t.state !== 'running' || t.worker !== worker || t.attempts !== attempt) return null;
    const w = this.workers.get(worker);
    if (w !== undefined) this.learn(w, t.type, nowMs - t.startedAtMs, !ok);
    if (ok) {
      this.release(t);
      t.state = 'succeeded';
      this.tasks.delete(taskId);
      return [];
    }
    const out = this.attemptOver(nowMs, t, `attempt ${attempt} on ${worker} failed: ${error}`);
    this.record(nowMs, ...out);
    return out;
  }

  /** Cancels a queued or running task (a running one's worker is told by the shell). */
  cancel(taskId: string): boolean {
    const t = this.tasks.get(taskId);
    if (t === undefined) return false;
    if (t.state === 'running') this.release(t);
    else this.unqueue(t);
    t.state = 'cancelled';
    this.tasks.delete(taskId);
    return true;
  }

  /** Timeouts, then as many dispatches as the free resources allow. */
  tick(nowMs: number): Decision[] {
    const out: Decision[] = [];
    for (const t of this.tasks.values()) {
      if (t.state === 'running' && nowMs - t.startedAtMs > t.timeoutMs) {
        const w = this.workers.get(t.worker!);
        if (w !== undefined) this.learn(w, t.type, nowMs - t.startedAtMs, true);
        out.push(...this.attemptOver(nowMs, t, `attempt ${t.attempts} on ${t.worker} ran past its timeout of ${t.timeoutMs} ms`));
      }
    }
    if (this.queue.length > 0) {
      const aging = this.config.agingMs;
      const eff = (t: Task): number => t.priority + (nowMs - t.queuedAtMs) / aging;
      this.queue.sort((a, b) => eff(b) - eff(a) || a.queuedAtMs - b.queuedAtMs);
      const live = [...this.workers.values()].filter((w) => w.alive);
      let freeAnywhere = live.some((w) => w.cpu - w.usedCpu > EPS);
      const keep: Task[] = [];
      for (const t of this.queue) {
        if (!freeAnywhere) {
          keep.push(t);
          continue;
        }
        const d = this.place(nowMs, t, live);
        if (d === null) {
          keep.push(t);
          continue;
        }
        out.push(d);
        freeAnywhere = live.some((w) => w.cpu - w.usedCpu > EPS);
      }
      this.queue.length = 0;
      this.queue.push(...keep);
    }
    this.record(nowMs, ...out);
    return out;
  }

  status(taskId: string): TaskStatus | null {
    const t = this.tasks.get(taskId);
    return t === undefined ? null : { id: t.id, state: t.state, attempts: t.attempts, worker: t.worker, reasons: [...t.reasons] };
  }

  /** Tasks queued and running, and per worker what it runs and its free resources. */
  summary(): { queued: number; running: number; workers: Array<{ id: string; alive: boolean; running: number; cpu: number; freeCpu: number; memMb: number; freeMemMb: number }> } {
    let running = 0;
    for (const t of this.tasks.values()) if (t.state === 'running') running++;
    return {
      queued: this.queue.length,
      running,
      workers: [...this.workers.values()].map((w) => ({ id: w.id, alive: w.alive, running: w.running.size, cpu: w.cpu, freeCpu: w.cpu - w.usedCpu, memMb: w.memMb, freeMemMb: w.memMb - w.usedMemMb })),
    };
  }

  /** The learnt duration (ms) and failure rate of `type` on `worker`, or null before any sample. */
  history(worker: string, type: string): TypeStats | null {
    const s = this.workers.get(worker)?.stats.get(type);
    return s === undefined ? null : { ...s };
  }

  recentDecisions(): Array<{ atMs: number; decision: Decision }> {
    return [...this.log];
  }

  // -------------------------------------------------------------------------------------------

  private place(nowMs: number, t: Task, live: Worker[]): Decision | null {
    const fits = (w: Worker): boolean => w.cpu + EPS >= t.cpu && w.memMb + EPS >= t.memMb && w.types.includes(t.type);
    const candidates = live.filter(fits);
    if (candidates.length === 0) return null;
    const estimates = new Map<Worker, { total: number; wait: number; run: number }>();
    const estimate = (w: Worker): { total: number; wait: number; run: number } => {
      let e = estimates.get(w);
      if (e === undefined) {
        const s = w.stats.get(t.type) ?? this.typeMean.get(t.type);
        const dur = s?.durationMs ?? this.config.priorDurationMs;
        const fail = Math.min(0.9, s?.failureRate ?? 0);
        const run = dur / (1 - fail);
        const wait = this.waitFor(nowMs, w, t);
        estimates.set(w, (e = { total: wait + run, wait, run }));
      }
      return e;
    };
    // The draw: `choices` at random, plus the best free worker.
    const drawn = new Set<Worker>();
    for (let k = 0; k < this.config.choices && drawn.size < candidates.length; k++) {
      for (let tries = 0; tries < 8; tries++) {
        const w = this.random.pick(candidates);
        if (!drawn.has(w)) {
          drawn.add(w);
          break;
        }
      }
    }
    let bestFree: Worker | null = null;
    let bestFreeRun = Infinity;
    for (const w of candidates) {
      const e = estimate(w);
      if (e.wait > 0) continue;
      const r = e.run;
      if (r < bestFreeRun) {
        bestFree = w;
        bestFreeRun = r;
      }
    }
    if (bestFree !== null) drawn.add(bestFree);
    let best: Worker | null = null;
    let bestEst = { total: Infinity, wait: 0, run: 0 };
    for (const w of drawn) {
      const e = estimate(w);
      if (e.total < bestEst.total || (e.total === bestEst.total && best !== null && w.id < best.id)) {
        best = w;
        bestEst = e;
      }
    }
    if (best === null) return null;
    if (bestEst.wait > 0) {
      // Wait for a busy worker only when it is clearly better than the best free one: the
      // estimates are noisy, and waiting on noise idles a free worker.
      if (bestFree === null || bestEst.total < estimate(bestFree).run * this.config.waitMargin) return null;
      best = bestFree;
      bestEst = estimate(bestFree);
    }
    t.attempts++;
    t.state = 'running';
    t.worker = best.id;
    t.startedAtMs = nowMs;
    this.hold(best, t);
    const others = [...drawn].filter((w) => w !== best).map((w) => `${w.id} ${Math.round(estimate(w).total)} ms`);
    return {
      kind: 'dispatch',
      taskId: t.id,
      worker: best.id,
      attempt: t.attempts,
      reason: `est. ${Math.round(bestEst.run)} ms on ${best.id}${others.length > 0 ? ` (vs ${others.join(', ')})` : ''}; priority ${t.priority}, waited ${Math.round(nowMs - t.queuedAtMs)} ms`,
    };
  }

  /** Estimated ms until `w` has room for `t` (0: now). */
  private waitFor(nowMs: number, w: Worker, t: Task): number {
    const needCpu = t.cpu - (w.cpu - w.usedCpu);
    const needMem = t.memMb - (w.memMb - w.usedMemMb);
    if (needCpu <= EPS && needMem <= EPS) return 0;
    // Running tasks in the order they should end; room once enough of them have.
    const ends = [...w.running]
      .map((id) => this.tasks.get(id)!)
      .map((r) => {
        const s = w.stats.get(r.type) ?? this.typeMean.get(r.type);
        const dur = s?.durationMs ?? this.config.priorDurationMs;
        return { at: Math.max(nowMs, r.startedAtMs + dur), cpu: r.cpu, mem: r.memMb };
      })
      .sort((a, b) => a.at - b.at);
    let cpu = needCpu;
    let mem = needMem;
    for (const e of ends) {
      cpu -= e.cpu;
      mem -= e.mem;
      if (cpu <= EPS && mem <= EPS) return Math.max(1, e.at - nowMs);
    }
    return Infinity;
  }

  private hold(w: Worker, t: Task): void {
    w.running.add(t.id);
    w.usedCpu += t.cpu;
    w.usedMemMb += t.memMb;
  }

  private release(t: Task): void {
    const w = t.worker === null ? undefined : this.workers.get(t.worker);
    if (w !== undefined && w.running.delete(t.id)) {
      w.usedCpu = Math.max(0, w.usedCpu - t.cpu);
      w.usedMemMb = Math.max(0, w.usedMemMb - t.memMb);
    }
  }

  private unqueue(t: Task): void {
    const i = this.queue.indexOf(t);
    if (i >= 0) this.queue.splice(i, 1);
  }

  /** The current attempt is over without success: queue again, or fail for good. */
  private attemptOver(nowMs: number, t: Task, reason: string): Decision[] {
    this.release(t);
    t.reasons.push(reason);
    if (t.reasons.length > 20) t.reasons.splice(0, t.reasons.length - 20);
    t.worker = null;
    if (t.attempts >= t.maxAttempts) {
      t.state = 'failed';
      this.tasks.delete(t.id);
      return [{ kind: 'fail', taskId: t.id, reasons: [...t.reasons] }];
    }
    t.state = 'queued';
    t.queuedAtMs = Math.min(t.queuedAtMs, nowMs); // keeps its age: a retry does not go to the back
    this.queue.push(t);
    return [{ kind: 'retry', taskId: t.id, attempt: t.attempts, reason }];
  }

  private learn(w: Worker, type: string, durationMs: number, failed: boolean): void {
    const a = this.config.ewmaAlpha;
    const upd = (s: TypeStats | undefined): TypeStats => {
      if (s === undefined) return { durationMs: Math.max(1, durationMs), failureRate: failed ? 1 : 0, samples: 1 };
      // A failure's duration says little about a success's: only the failure rate learns from it,
      // unless it ran longer than the estimate (a timeout is evidence of slowness).
      const dur = failed && durationMs < s.durationMs ? s.durationMs : s.durationMs * (1 - a) + durationMs * a;
      return { durationMs: Math.max(1, dur), failureRate: s.failureRate * (1 - a) + (failed ? a : 0), samples: s.samples + 1 };
    };
    w.stats.set(type, upd(w.stats.get(type)));
    this.typeMean.set(type, upd(this.typeMean.get(type)));
  }

  private record(nowMs: number, ...ds: Decision[]): void {
    for (const d of ds) this.log.push({ atMs: nowMs, decision: d });
    if (this.log.length > this.config.decisionLog) this.log.splice(0, this.log.length - this.config.decisionLog);
  }
}
