/**
 * A token bucket for bulk data movement (`--rebalance-rate`): pure, time comes in as `nowMs`.
 *
 * `reserve(nowMs, bytes)` takes `bytes` from the bucket (it may go negative: one chunk larger than
 * the burst still passes) and returns how long to wait before sending them, so every sender of a
 * peer shares one rate. A rate of null is unlimited: every wait is 0.
 */
import { ConfigError } from '../errors.js';

export class TokenBucket {
  private tokens: number;
  private atMs: number;
  private rate: number | null;
  private readonly burst: number;

  /**
   * @param bytesPerSecond null (unlimited) or > 0
   * @param burstBytes how much may go at once after a quiet spell (default: 1 s worth, at least 1 MiB)
   */
  constructor(nowMs: number, bytesPerSecond: number | null, burstBytes?: number) {
    TokenBucket.check(bytesPerSecond);
    this.rate = bytesPerSecond;
    this.burst = burstBytes ?? Math.max(1024 * 1024, bytesPerSecond ?? 0);
    if (!(this.burst > 0)) throw new ConfigError('burstBytes', 'must be > 0');
    this.tokens = this.burst;
    this.atMs = nowMs;
  }

  static check(bytesPerSecond: number | null): void {
    if (bytesPerSecond !== null && !(Number.isFinite(bytesPerSecond) && bytesPerSecond > 0)) {
      throw new ConfigError('rebalanceRate', `must be a number of bytes per second > 0, or unlimited; got ${String(bytesPerSecond)}`);
    }
  }

  get bytesPerSecond(): number | null {
    return this.rate;
  }

  setRate(nowMs: number, bytesPerSecond: number | null): void {
    TokenBucket.check(bytesPerSecond);
    this.refill(nowMs);
    this.rate = bytesPerSecond;
  }

  /** Takes `bytes`; returns the milliseconds to wait before they may go (0: now). */
  reserve(nowMs: number, bytes: number): number {
    if (this.rate === null) return 0;
    this.refill(nowMs);
    this.tokens -= bytes;
    return this.tokens >= 0 ? 0 : Math.ceil((-this.tokens / this.rate) * 1000);
  }

  private refill(nowMs: number): void {
    const dt = Math.max(0, nowMs - this.atMs);
    this.atMs = Math.max(this.atMs, nowMs);
    if (this.rate !== null) this.tokens = Math.min(this.burst, this.tokens + (dt / 1000) * this.rate);
  }
}
