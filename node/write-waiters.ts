/**
 * The clients waiting for the answers of writes this peer's replica cores accepted: one concern
 * of the store service (node/store-service.ts), kept apart.
 *
 * A write waits at most `timeoutMs` for its answer, then fails `indeterminate` (it may or may not
 * have been applied). Deadlines are checked on the store's tick (`expire`, every 20 ms) rather
 * than with a timer per write: at thousands of writes a second the timers were a measurable
 * share of the peer's CPU. Every write waits the same time and the clock is monotonic, so the
 * waiters in insertion order are in deadline order, and `expire` looks only at the expired ones.
 */
import type { WriteAnswer, WriteResult } from '../protocols/replication/types.js';
import { StoreError } from './store-api.js';

interface Waiter {
  resolve: (r: WriteResult) => void;
  reject: (e: Error) => void;
  acceptedMs: number;
  deadlineMs: number;
}

/** Told how long each applied write waited for its answer (shoal_replication_write_duration_seconds). */
export interface WriteTimer {
  /** The same monotonic clock `wait` is given. */
  now(): number;
  applied(waitedMs: number): void;
}

export class WriteWaiters {
  private readonly waiting = new Map<number, Waiter>();
  private lastDeadlineMs = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly timeoutMs: number,
    private readonly timer: WriteTimer | null = null,
  ) {
    if (!(timeoutMs > 0)) throw new RangeError(`timeoutMs must be positive, got ${timeoutMs}`);
  }

  get size(): number {
    return this.waiting.size;
  }

  /** The answer to `requestId`, which its core has accepted at `nowMs` (a monotonic clock). */
  wait(requestId: number, nowMs: number): Promise<WriteResult> {
    if (this.waiting.has(requestId)) throw new RangeError(`request ${requestId} is already waiting`);
    // Never earlier than a deadline before it: insertion order stays deadline order.
    const deadlineMs = Math.max(nowMs + this.timeoutMs, this.lastDeadlineMs);
    this.lastDeadlineMs = deadlineMs;
    return new Promise<WriteResult>((resolve, reject) => {
      this.waiting.set(requestId, { resolve, reject, acceptedMs: nowMs, deadlineMs });
    });
  }

  /**
   * Settles the waiters these answers are for (answers nobody waits for any more are dropped),
   * timing the applied ones (a refused compare-and-set replicated nothing).
   */
  deliver(answers: readonly WriteAnswer[]): void {
    const nowMs = this.timer === null || answers.length === 0 ? 0 : this.timer.now();
    for (const a of answers) {
      const w = this.waiting.get(a.requestId);
      if (w === undefined) continue;
      this.waiting.delete(a.requestId);
      if (a.ok) {
        if (a.result.applied) this.timer?.applied(nowMs - w.acceptedMs);
        w.resolve(a.result);
      } else w.reject(a.error);
    }
  }

  /** Fails every write whose deadline has passed at `nowMs`. */
  expire(nowMs: number): void {
    for (const [id, w] of this.waiting) {
      if (w.deadlineMs > nowMs) return;
      this.waiting.delete(id);
      w.reject(new StoreError('indeterminate', `no answer within ${this.timeoutMs} ms; the write may or may not have been applied`));
    }
  }

  /** Fails every waiting write (the peer stops). */
  rejectAll(message: string): void {
    const all = [...this.waiting.values()];
    this.waiting.clear();
    for (const w of all) w.reject(new StoreError('indeterminate', message));
  }
}
