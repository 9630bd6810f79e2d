/**
 * Tasks (issue 11): the shell around the scheduler core (protocols/scheduler/scheduler.ts).
 *
 * ## Who decides
 *
 * One decider: the coordinator (the Raft leader) runs the Scheduler. Every peer is a worker for
 * the task types it handles (the built-in `sleep` and `hash`, plus what the program registered
 * with `peer.handle`): it reports its types, task slots and memory to the coordinator every
 * WORKER_REPORT_MS on `/shoal/task/1.0.0`; a worker silent for WORKER_SILENCE_MS is dead to the
 * scheduler (its tasks are dispatched again), one that reports again is back.
 *
 * ## Where tasks live
 *
 * In the replicated key-value store, under the reserved prefix `_shoal/` (refused to clients):
 * `_shoal/task/<id>` holds each task's record (state, attempts, peer, result or reasons);
 * `_shoal/tasks/open` lists the ids not finished (the coordinator is its only writer, with
 * compare-and-set); `_shoal/tasks/recent` the last finished ones; `_shoal/task-key/<key>` maps
 * an idempotency key to its task (created with compare-and-set, so one key is one task).
 * A submission is answered once the task's record and the open list hold it; a new coordinator
 * rebuilds its queue from them, so tasks survive coordinator failover and restarts.
 *
 * ## A task's life
 *
 * submit (any peer; forwarded to the coordinator) → queued → dispatch: the record says running
 * on P, attempt n, then the coordinator asks P to run it → P runs the handler and reports the
 * outcome to whoever is coordinator then (retried until one takes it) → succeeded (with the
 * result) or, on failure, timeout or P's death, queued again until maxAttempts, then failed
 * with every reason. At least once: a handler may run more than once (make it idempotent); one
 * outcome is recorded per task.
 */
import { createHash, randomBytes } from 'node:crypto';
import { availableParallelism, totalmem } from 'node:os';
import { performance } from 'node:perf_hooks';
import { SeededRandom } from '../protocols/random.js';
import { parseTaskSubmission, Scheduler, TaskInputError, type Decision, type TaskState, type TaskSubmission } from '../protocols/scheduler/index.js';
import type { Coordinator } from './coordinator.js';
import type { Host } from './host.js';
import type { Logger } from './log.js';
import { RpcEndpoint } from './rpc.js';
import { StoreError } from './store-api.js';
import type { StoreService } from './store-service.js';

export const TASK_PROTOCOL_ID = '/shoal/task/1.0.0';
export const RESERVED_KEY_PREFIX = '_shoal/';

const WORKER_REPORT_MS = 500;
const WORKER_SILENCE_MS = 3000;
const TICK_MS = 50;
const RECENT_KEPT = 500;
const MAX_OPEN = 20_000;

/** A task's record: what was submitted, and where it stands. */
export interface TaskRecord extends TaskSubmission {
  id: string;
  state: TaskState;
  attempts: number;
  /** The peer running (or that last ran) it. */
  peer: string | null;
  submittedAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  result?: unknown;
  error?: string;
  reasons: string[];
}

/** What a handler gets besides the payload. */
export interface TaskContext {
  id: string;
  attempt: number;
  /** Aborted when the task is cancelled or given up on. */
  signal: AbortSignal;
}

export type TaskHandler = (payload: unknown, ctx: TaskContext) => Promise<unknown>;

export interface TaskServiceOptions {
  host: Host;
  coordinator: Coordinator;
  kv: StoreService;
  log: Logger;
  /**
   * Task slots this peer offers at capacity 1 (CPU cores tasks may hold). The slots it reports
   * are this × its capacity in the committed cluster map (at least 1), so a capacity change
   * (`shoal capacity`, `PUT /v1/cluster/members/{id}`) moves its share of tasks as well as of data.
   */
  slotsPerCapacity: number;
  memMb: number;
}

type Msg =
  | { op: 'submit'; task: TaskSubmission }
  | { op: 'worker'; types: string[]; cpu: number; memMb: number }
  | { op: 'run'; id: string; type: string; payload: unknown; attempt: number; timeoutMs: number }
  | { op: 'done'; id: string; attempt: number; ok: boolean; result?: unknown; error?: string }
  | { op: 'cancel'; id: string };

const enc = new TextEncoder();
const dec = new TextDecoder();
const json = (x: unknown): Uint8Array => enc.encode(JSON.stringify(x));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class TaskError extends Error {
  override readonly name = 'TaskError';
  constructor(
    readonly code: 'invalid_task' | 'not_found' | 'unavailable' | 'queue_full',
    message: string,
  ) {
    super(message);
  }
}

const taskKey = (id: string): string => `${RESERVED_KEY_PREFIX}task/${id}`;
const OPEN_KEY = `${RESERVED_KEY_PREFIX}tasks/open`;
const RECENT_KEY = `${RESERVED_KEY_PREFIX}tasks/recent`;
const idemKey = (k: string): string => `${RESERVED_KEY_PREFIX}task-key/${createHash('sha256').update(k).digest('hex').slice(0, 40)}`;

/** The built-in task types every peer handles: try tasks without writing code. */
export const BUILTIN_HANDLERS: Record<string, TaskHandler> = {
  /** `{ ms }`: waits that long (at most 10 minutes). */
  sleep: async (payload, ctx) => {
    const ms = Math.min(600_000, Math.max(0, Number((payload as { ms?: unknown } | null)?.ms ?? 100) || 0));
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(resolve, ms);
      ctx.signal.addEventListener('abort', () => {
        clearTimeout(t);
        reject(new Error('cancelled'));
      });
    });
    return { sleptMs: ms };
  },
  /** `{ data, rounds }`: SHA-256 of data, `rounds` times (at most 10^7): CPU work. */
  hash: async (payload) => {
    const p = (payload ?? {}) as { data?: unknown; rounds?: unknown };
    const rounds = Math.min(10_000_000, Math.max(1, Math.floor(Number(p.rounds ?? 1000)) || 1));
    let h: Buffer = Buffer.from(String(p.data ?? ''));
    for (let i = 0; i < rounds; i++) {
      h = createHash('sha256').update(h).digest();
      if (i % 20_000 === 19_999) await new Promise((r) => setImmediate(r));
    }
    return { sha256: h.toString('hex'), rounds };
  },
};

export class TaskService {
  private readonly self: string;
  private readonly rpc: RpcEndpoint;
  private readonly handlers = new Map<string, TaskHandler>(Object.entries(BUILTIN_HANDLERS));
  private timers: NodeJS.Timeout[] = [];
  private stopped = false;
  /** Attempts running here, by `id:attempt`. */
  private readonly running = new Map<string, AbortController>();
  // Coordinator side (while leader).
  private sched: Scheduler | null = null;
  private loading: Promise<void> | null = null;
  private readonly records = new Map<string, TaskRecord>();
  private openVersion = 0;
  private openDirty = false;
  private openWaiters: Array<{ resolve: () => void; reject: (e: Error) => void }> = [];
  private flushing = false;
  private readonly lastReport = new Map<string, number>();
  private readonly deadWorkers = new Set<string>();
  readonly counters = { submitted: 0, dispatched: 0, succeeded: 0, failed: 0, retried: 0, redispatchedAfterDeath: 0 };

  constructor(private readonly opts: TaskServiceOptions) {
    this.self = opts.host.peerId.toString();
    this.rpc = new RpcEndpoint({ host: opts.host, protocol: TASK_PROTOCOL_ID, handler: (from, body) => this.onRpc(from, body), log: opts.log });
  }

  static defaults(): { slotsPerCapacity: number; memMb: number } {
    return { slotsPerCapacity: availableParallelism(), memMb: Math.round((totalmem() / 1048576) * 0.5) };
  }

  /** The task slots this peer offers now: slots per capacity × its capacity in the committed map. */
  slots(): number {
    const capacity = this.opts.coordinator.mapView().members[this.self]?.capacity ?? 1;
    return Math.max(1, Math.min(4096, Math.round(this.opts.slotsPerCapacity * capacity)));
  }

  async start(): Promise<void> {
    await this.rpc.start();
    this.timers.push(setInterval(() => void this.report(), WORKER_REPORT_MS));
    this.timers.push(setInterval(() => void this.tick(), TICK_MS));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    for (const ac of this.running.values()) ac.abort();
    for (const w of this.openWaiters.splice(0)) w.reject(new TaskError('unavailable', 'stopping'));
    await this.rpc.stop();
  }

  /** Registers a handler for `type` on this peer (it then takes tasks of that type). */
  handle(type: string, fn: TaskHandler): void {
    parseTaskSubmission({ type }); // checks the name
    if (typeof fn !== 'function') throw new TaskInputError('handler', 'must be an async function');
    this.handlers.set(type, fn);
    void this.report();
  }

  // -------------------------------------------------------------------------------------------
  // Client side (any peer)

  /** Submits a task through the coordinator; returns its id (the same id for the same idempotency key). */
  async submit(body: unknown): Promise<string> {
    const task = parseTaskSubmission(body);
    const reply = await this.toCoordinator({ op: 'submit', task }, 15_000);
    return (reply as { id: string }).id;
  }

  async get(id: string): Promise<TaskRecord | null> {
    if (!/^[0-9a-f]{24}$/.test(id)) throw new TaskError('invalid_task', `${JSON.stringify(id)} is not a task id`);
    const r = await this.opts.kv.get(taskKey(id));
    return r === null ? null : (JSON.parse(dec.decode(r.value)) as TaskRecord);
  }

  /** Open tasks and the last finished ones (optionally of one state). */
  async list(state?: TaskState): Promise<TaskRecord[]> {
    const ids: string[] = [];
    for (const key of [OPEN_KEY, RECENT_KEY]) {
      const r = await this.opts.kv.get(key);
      if (r !== null) ids.push(...((JSON.parse(dec.decode(r.value)) as { ids: string[] }).ids ?? []));
    }
    const out: TaskRecord[] = [];
    for (const id of [...new Set(ids)]) {
      const rec = await this.get(id).catch(() => null);
      if (rec !== null && (state === undefined || rec.state === state)) out.push(rec);
    }
    return out.sort((a, b) => a.submittedAt - b.submittedAt);
  }

  async cancel(id: string): Promise<boolean> {
    if (!/^[0-9a-f]{24}$/.test(id)) throw new TaskError('invalid_task', `${JSON.stringify(id)} is not a task id`);
    const reply = await this.toCoordinator({ op: 'cancel', id }, 10_000);
    return (reply as { cancelled: boolean }).cancelled;
  }

  /** Scheduler state on the coordinator (null elsewhere): queue, workers, recent decisions. */
  schedulerStatus(): unknown {
    if (this.sched === null) return null;
    return { ...this.sched.summary(), decisions: this.sched.recentDecisions().slice(-20), counters: this.counters };
  }

  private async toCoordinator(m: Msg, timeoutMs: number): Promise<unknown> {
    const deadline = performance.now() + timeoutMs;
    let last: unknown = null;
    for (let i = 0; i < 1000 && performance.now() < deadline && !this.stopped; i++) {
      const leader = this.opts.coordinator.status().coordinator;
      try {
        if (leader === null) throw new TaskError('unavailable', 'no coordinator');
        if (leader === this.self) return await this.dispatchMessage(this.self, m);
        const bytes = await this.rpc.request(leader, json(m), { timeoutMs: Math.max(100, Math.min(5000, Math.round(deadline - performance.now()))) });
        const r = JSON.parse(dec.decode(bytes)) as { ok: boolean; code?: string; message?: string };
        if (r.ok) return r;
        if (r.code === 'invalid_task' || r.code === 'queue_full' || r.code === 'not_found') throw new TaskError(r.code, r.message ?? '');
        last = new TaskError('unavailable', r.message ?? 'the coordinator cannot take tasks now');
      } catch (err) {
        if (err instanceof TaskError && err.code !== 'unavailable') throw err;
        if (err instanceof TaskInputError) throw err;
        last = err;
      }
      await sleep(Math.min(200, 20 * (i + 1)));
    }
    throw last instanceof TaskError ? last : new TaskError('unavailable', `no coordinator took the request: ${(last as Error)?.message ?? 'timed out'}`);
  }

  // -------------------------------------------------------------------------------------------
  // RPC

  private async onRpc(from: string, body: Uint8Array): Promise<Uint8Array> {
    let m: Msg;
    try {
      m = JSON.parse(dec.decode(body)) as Msg;
    } catch {
      return json({ ok: false, code: 'invalid_task', message: 'not JSON' });
    }
    try {
      return json(await this.dispatchMessage(from, m));
    } catch (err) {
      const code = err instanceof TaskError ? err.code : err instanceof TaskInputError ? 'invalid_task' : 'unavailable';
      return json({ ok: false, code, message: (err as Error).message });
    }
  }

  private async dispatchMessage(from: string, m: Msg): Promise<Record<string, unknown>> {
    if (typeof m !== 'object' || m === null) throw new TaskError('invalid_task', 'not a message');
    // Only members of the map take part.
    if (from !== this.self && !Object.hasOwn(this.opts.coordinator.mapView().members, from)) throw new TaskError('unavailable', `${from} is not a member`);
    switch (m.op) {
      case 'run':
        return this.runHere(from, m);
      case 'cancel':
        if (from !== this.self && !this.opts.coordinator.isLeader) {
          // A worker told by the coordinator to stop an attempt.
          for (const [k, ac] of this.running) if (k.startsWith(`${String(m.id)}:`)) ac.abort();
          return { ok: true, cancelled: true };
        }
        return { ok: true, cancelled: await this.coordCancel(String(m.id)) };
      case 'submit':
      case 'worker':
      case 'done': {
        const sched = await this.leaderScheduler();
        if (m.op === 'submit') return { ok: true, id: await this.coordSubmit(sched, parseTaskSubmission(m.task)) };
        if (m.op === 'worker') {
          const types = Array.isArray(m.types) ? m.types.filter((t) => typeof t === 'string').slice(0, 256) : [];
          const cpu = Number(m.cpu);
          const memMb = Number(m.memMb);
          if (!(cpu > 0 && cpu <= 4096 && memMb >= 0 && memMb <= 1e8)) throw new TaskError('invalid_task', 'bad worker report');
          this.lastReport.set(from, performance.now());
          if (this.deadWorkers.delete(from)) this.opts.log.info('task worker back', { worker: from });
          sched.upsertWorker({ id: from, types, cpu, memMb });
          return { ok: true };
        }
        await this.coordDone(sched, from, m);
        return { ok: true };
      }
      default:
        throw new TaskError('invalid_task', 'unknown op');
    }
  }

  // -------------------------------------------------------------------------------------------
  // Worker side

  private async report(): Promise<void> {
    if (this.stopped) return;
    await this.toCoordinator({ op: 'worker', types: [...this.handlers.keys()], cpu: this.slots(), memMb: this.opts.memMb }, 400).catch(() => {});
  }

  private runHere(from: string, m: Extract<Msg, { op: 'run' }>): Record<string, unknown> {
    const leader = this.opts.coordinator.status().coordinator;
    if (from !== leader && from !== this.self) throw new TaskError('unavailable', `${from} is not the coordinator`);
    const fn = this.handlers.get(String(m.type));
    if (fn === undefined) throw new TaskError('invalid_task', `no handler for ${m.type} here`);
    const key = `${m.id}:${m.attempt}`;
    if (this.running.has(key)) return { ok: true };
    const ac = new AbortController();
    this.running.set(key, ac);
    const timer = setTimeout(() => ac.abort(), Math.max(10, Number(m.timeoutMs) || 60_000) + 1000);
    void (async () => {
      let outcome: Extract<Msg, { op: 'done' }>;
      try {
        const result = await fn(m.payload, { id: m.id, attempt: m.attempt, signal: ac.signal });
        outcome = { op: 'done', id: m.id, attempt: m.attempt, ok: true, result: result ?? null };
      } catch (err) {
        outcome = { op: 'done', id: m.id, attempt: m.attempt, ok: false, error: String((err as Error)?.message ?? err).slice(0, 1000) };
      } finally {
        clearTimeout(timer);
        this.running.delete(key);
      }
      if (ac.signal.aborted && outcome.ok === false) return; // cancelled or given up: the coordinator knows
      // Report to whoever is coordinator, until one takes it (bounded).
      await this.toCoordinator(outcome, 120_000).catch((err: unknown) => this.opts.log.warn('task outcome not reported', { id: m.id, err }));
    })();
    return { ok: true };
  }

  // -------------------------------------------------------------------------------------------
  // Coordinator side

  /** The scheduler, once this peer is the leader and has rebuilt the queue from the store. */
  private async leaderScheduler(): Promise<Scheduler> {
    if (!this.opts.coordinator.isLeader) throw new TaskError('unavailable', 'not the coordinator');
    if (this.sched !== null) return this.sched;
    this.loading ??= this.load().finally(() => (this.loading = null));
    await this.loading;
    if (this.sched === null) throw new TaskError('unavailable', 'the task queue is loading');
    return this.sched;
  }

  private async load(): Promise<void> {
    const sched = new Scheduler(new SeededRandom(randomBytes(4).readUInt32LE(0)));
    this.records.clear();
    // What an earlier leadership of this peer heard is stale: every worker reports within WORKER_REPORT_MS.
    this.lastReport.clear();
    this.deadWorkers.clear();
    const recent = await this.opts.kv.get(RECENT_KEY);
    this.recent = recent === null ? [] : ((JSON.parse(dec.decode(recent.value)) as { ids: string[] }).ids ?? []).slice(-RECENT_KEPT);
    this.recentDirty = false;
    const open = await this.opts.kv.get(OPEN_KEY);
    this.openVersion = open?.version ?? 0;
    const ids = open === null ? [] : ((JSON.parse(dec.decode(open.value)) as { ids: string[] }).ids ?? []);
    const now = performance.now();
    for (const id of ids) {
      const r = await this.opts.kv.get(taskKey(id));
      if (r === null) continue;
      const rec = JSON.parse(dec.decode(r.value)) as TaskRecord;
      this.records.set(id, rec);
      const spec = { id, type: rec.type, priority: rec.priority, cpu: rec.resources.cpu, memMb: rec.resources.memMb, timeoutMs: rec.timeoutMs, maxAttempts: rec.maxAttempts };
      if (rec.state === 'running' && rec.peer !== null) {
        // Reports of the workers come within WORKER_REPORT_MS; until then the worker is assumed alive.
        sched.upsertWorker({ id: rec.peer, types: [rec.type], cpu: Math.max(rec.resources.cpu, 1), memMb: Math.max(rec.resources.memMb, 1) });
        this.lastReport.set(rec.peer, now);
        sched.adoptRunning(now, spec, rec.peer, rec.attempts, now - Math.max(0, Date.now() - (rec.startedAt ?? Date.now())));
      } else {
        sched.submit(now, spec, rec.attempts); // attempts already made count
      }
    }
    if (!this.opts.coordinator.isLeader) return;
    this.sched = sched;
    this.opts.log.info('task queue loaded', { open: ids.length });
  }

  private async coordSubmit(sched: Scheduler, t: TaskSubmission): Promise<string> {
    if (this.records.size >= MAX_OPEN) throw new TaskError('queue_full', `${MAX_OPEN} tasks are open; try later`);
    let id = randomBytes(12).toString('hex');
    if (t.idempotencyKey !== null) {
      const k = idemKey(t.idempotencyKey);
      try {
        await this.opts.kv.put(k, id, { ifVersion: 0 });
      } catch (err) {
        if (!(err instanceof StoreError) || err.code !== 'version_mismatch') throw err;
        const existing = await this.opts.kv.get(k);
        if (existing === null) throw new TaskError('unavailable', 'idempotency key race; retry');
        id = dec.decode(existing.value);
        if (this.records.has(id) || (await this.opts.kv.get(taskKey(id))) !== null) return id;
      }
    }
    const rec: TaskRecord = {
      ...t,
      id,
      state: 'queued',
      attempts: 0,
      peer: null,
      submittedAt: Date.now(),
      startedAt: null,
      finishedAt: null,
      reasons: [],
    };
    await this.opts.kv.put(taskKey(id), JSON.stringify(rec));
    this.records.set(id, rec);
    await this.persistOpen();
    if (this.sched !== sched) throw new TaskError('unavailable', 'the coordinator changed; retry');
    sched.submit(performance.now(), { id, type: t.type, priority: t.priority, cpu: t.resources.cpu, memMb: t.resources.memMb, timeoutMs: t.timeoutMs, maxAttempts: t.maxAttempts });
    this.counters.submitted++;
    return id;
  }

  /** Writes the open list (batched: every caller waits for a write made after its change). */
  private persistOpen(): Promise<void> {
    this.openDirty = true;
    const p = new Promise<void>((resolve, reject) => this.openWaiters.push({ resolve, reject }));
    void this.flushOpen();
    return p;
  }

  /**
   * Writes the open list until a write made after every waiter's change succeeds. A write that
   * failed may still have applied (an `indeterminate` answer at a primary hand-over): the version
   * is read again and the list written again (this peer is its only writer). Waiters learn of
   * success only once it is stored, so a task is never acknowledged without being findable.
   */
  private async flushOpen(): Promise<void> {
    if (this.flushing) return;
    this.flushing = true;
    let failures = 0;
    try {
      for (let i = 0; i < 10_000 && this.openDirty && !this.stopped; i++) {
        this.openDirty = false;
        const waiters = this.openWaiters.splice(0);
        const ids = [...this.records.values()].filter((r) => r.state === 'queued' || r.state === 'running').map((r) => r.id);
        try {
          if (!this.opts.coordinator.isLeader) throw new TaskError('unavailable', 'no longer the coordinator');
          const w = await this.opts.kv.put(OPEN_KEY, JSON.stringify({ ids }), { ifVersion: this.openVersion });
          this.openVersion = w.version;
          failures = 0;
          for (const x of waiters) x.resolve();
          if (this.recentDirty) {
            this.recentDirty = false;
            await this.opts.kv.put(RECENT_KEY, JSON.stringify({ ids: this.recent })).catch(() => (this.recentDirty = true));
          }
        } catch (err) {
          failures++;
          if (failures > 20 || !this.opts.coordinator.isLeader) {
            this.opts.log.warn('task open list not written; the queue is reloaded from the store', { err });
            this.sched = null;
            for (const x of waiters) x.reject(new TaskError('unavailable', 'the task list could not be written; retry'));
            continue;
          }
          this.openWaiters.unshift(...waiters);
          this.openDirty = true;
          await sleep(Math.min(1000, 50 * failures));
          const cur = await this.opts.kv.get(OPEN_KEY).catch(() => null);
          if (cur !== null) this.openVersion = cur.version;
        }
      }
    } finally {
      this.flushing = false;
    }
  }

  /** Writes of one record, one at a time (a later state never lands before an earlier one). */
  private readonly recordWrites = new Map<string, Promise<void>>();

  /** Writes a task's record (its state at the time of each try), retried for about 20 s. */
  private saveRecord(rec: TaskRecord): Promise<void> {
    const prev = this.recordWrites.get(rec.id) ?? Promise.resolve();
    const next = prev.then(() => this.writeRecord(rec));
    this.recordWrites.set(rec.id, next);
    void next.finally(() => {
      if (this.recordWrites.get(rec.id) === next) this.recordWrites.delete(rec.id);
    });
    return next;
  }

  private async writeRecord(rec: TaskRecord): Promise<void> {
    for (let attempt = 0; attempt < 40 && !this.stopped; attempt++) {
      try {
        await this.opts.kv.put(taskKey(rec.id), JSON.stringify(rec));
        return;
      } catch (err) {
        if (attempt === 39) this.opts.log.warn('task record not written', { id: rec.id, err });
        await sleep(Math.min(500, 50 * (attempt + 1)));
      }
    }
  }

  private async finish(rec: TaskRecord): Promise<void> {
    rec.finishedAt = Date.now();
    await this.saveRecord(rec);
    this.records.delete(rec.id);
    this.recent.push(rec.id);
    if (this.recent.length > RECENT_KEPT) this.recent.splice(0, this.recent.length - RECENT_KEPT);
    this.recentDirty = true;
    await this.persistOpen();
  }

  /** The last finished tasks (written with the open list). */
  private recent: string[] = [];
  private recentDirty = false;

  private async coordDone(sched: Scheduler, from: string, m: Extract<Msg, { op: 'done' }>): Promise<void> {
    const rec = this.records.get(String(m.id));
    const ds = sched.finished(performance.now(), String(m.id), from, Number(m.attempt), m.ok === true, String(m.error ?? ''));
    if (ds === null || rec === undefined) return; // late or unknown: ignored
    if (m.ok === true) {
      rec.state = 'succeeded';
      rec.result = m.result ?? null;
      this.counters.succeeded++;
      await this.finish(rec);
      return;
    }
    await this.apply(ds);
  }

  private async coordCancel(id: string): Promise<boolean> {
    const sched = await this.leaderScheduler();
    const rec = this.records.get(id);
    if (rec === undefined) {
      if ((await this.get(id)) === null) throw new TaskError('not_found', `no task ${id}`);
      return false; // finished already
    }
    const peer = rec.state === 'running' ? rec.peer : null;
    sched.cancel(id);
    rec.state = 'cancelled';
    await this.finish(rec);
    if (peer !== null && peer !== this.self) void this.rpc.request(peer, json({ op: 'cancel', id }), { timeoutMs: 2000 }).catch(() => {});
    else if (peer === this.self) for (const [k, ac] of this.running) if (k.startsWith(`${id}:`)) ac.abort();
    return true;
  }

  /** Carries out decisions: records first, then the dispatch; one task's in order, tasks side by side. */
  private async apply(ds: Decision[]): Promise<void> {
    const byTask = new Map<string, Decision[]>();
    for (const d of ds) byTask.set(d.taskId, [...(byTask.get(d.taskId) ?? []), d]);
    await Promise.all([...byTask.values()].map((list) => this.applyInOrder(list)));
  }

  private async applyInOrder(ds: Decision[]): Promise<void> {
    for (const d of ds) {
      const rec = this.records.get(d.taskId);
      if (rec === undefined) continue;
      if (d.kind === 'dispatch') {
        rec.state = 'running';
        rec.attempts = d.attempt;
        rec.peer = d.worker;
        rec.startedAt = Date.now();
        this.counters.dispatched++;
        await this.saveRecord(rec);
        const run: Msg = { op: 'run', id: rec.id, type: rec.type, payload: rec.payload, attempt: d.attempt, timeoutMs: rec.timeoutMs };
        const send = d.worker === this.self ? this.dispatchMessage(this.self, run) : this.rpc.request(d.worker, json(run), { timeoutMs: 5000 }).then((b) => JSON.parse(dec.decode(b)) as { ok: boolean; message?: string });
        void send
          .then((r) => {
            if (!(r as { ok: boolean }).ok) throw new Error((r as { message?: string }).message ?? 'refused');
          })
          .catch(async (err: unknown) => {
            // The worker did not take it: this attempt is over. Unreachable: dead to the
            // scheduler until it reports again (its other tasks go elsewhere now, not after
            // WORKER_SILENCE_MS).
            const sched = this.sched;
            if (sched === null) return;
            const now = performance.now();
            const more = sched.finished(now, rec.id, d.worker, d.attempt, false, `not started: ${(err as Error).message}`) ?? [];
            if ((err as Error).name === 'RpcUnavailableError' && !this.deadWorkers.has(d.worker)) {
              this.deadWorkers.add(d.worker);
              more.push(...sched.workerDead(now, d.worker));
              this.opts.log.warn('task worker unreachable: its tasks go elsewhere', { worker: d.worker });
            }
            if (more.length > 0) await this.apply(more);
          });
      } else if (d.kind === 'retry') {
        rec.state = 'queued';
        rec.peer = null;
        rec.reasons.push(`${d.reason} (at ${new Date().toISOString()})`);
        this.counters.retried++;
        await this.saveRecord(rec);
      } else {
        rec.state = 'failed';
        rec.reasons = d.reasons;
        rec.error = d.reasons[d.reasons.length - 1] ?? 'failed';
        this.counters.failed++;
        await this.finish(rec);
      }
    }
  }

  private ticking = false;

  private async tick(): Promise<void> {
    if (this.stopped || this.ticking) return;
    if (!this.opts.coordinator.isLeader) {
      this.sched = null;
      return;
    }
    this.ticking = true;
    try {
      const sched = await this.leaderScheduler().catch(() => null);
      if (sched === null) return;
      const now = performance.now();
      const out: Decision[] = [];
      for (const [peer, at] of this.lastReport) {
        if (now - at > WORKER_SILENCE_MS && !this.deadWorkers.has(peer)) {
          this.deadWorkers.add(peer);
          const ds = sched.workerDead(now, peer);
          this.counters.redispatchedAfterDeath += ds.length;
          if (ds.length > 0) this.opts.log.warn('task worker silent: its tasks go elsewhere', { peer, tasks: ds.length });
          out.push(...ds);
        }
      }
      out.push(...sched.tick(now));
      if (out.length > 0) await this.apply(out);
    } finally {
      this.ticking = false;
    }
  }
}
