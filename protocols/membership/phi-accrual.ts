/**
 * The phi-accrual failure detector (Hayashibara et al. 2004, in Akka's form):
 * instead of a yes/no timeout, a suspicion level phi that grows with the time
 * since the last heartbeat, scaled by how regular heartbeats have been.
 * phi = -log10(P(a heartbeat arrives later than now)), so phi 8 means odds of
 * about 1e-8 that the member is merely late, under a normal model of intervals.
 *
 * Pure: time comes in as `nowMs` arguments (use a monotonic clock).
 */

/** phi is capped here so it is always finite (JSON, metrics, comparisons). */
export const PHI_MAX = 1000;

const LN_10 = Math.log(10);

/** log(1 + e^x) without overflow for large x or loss of precision for very negative x. */
function softplus(x: number): number {
  return x > 0 ? x + Math.log1p(Math.exp(-x)) : Math.log1p(Math.exp(x));
}

/**
 * Suspicion level after `timeSinceLastMs` of silence, for inter-arrival times
 * with the given mean and std deviation.
 *
 * Uses Akka's logistic approximation of the normal CDF:
 * y = (t - mean) / std, e = exp(-y (1.5976 + 0.070566 y²)),
 * phi = -log10(e / (1 + e)) when t > mean, else -log10(1 - 1 / (1 + e)).
 * Both branches equal log10(1 + 1/e) = softplus(y (1.5976 + 0.070566 y²)) / ln 10,
 * which is how it is computed here: the same values, but no overflow to
 * Infinity once e underflows (around 20 std deviations late).
 *
 * @returns a value in [0, PHI_MAX]; NaN or infinite inputs that leave the result undefined give PHI_MAX.
 */
export function phi(timeSinceLastMs: number, meanMs: number, stdDevMs: number): number {
  const y = (timeSinceLastMs - meanMs) / stdDevMs;
  const value = softplus(y * (1.5976 + 0.070566 * y * y)) / LN_10;
  if (Number.isNaN(value) || value > PHI_MAX) return PHI_MAX;
  return value;
}

export interface PhiAccrualOptions {
  /** Inter-arrival intervals kept; the oldest is evicted when full. Integer ≥ 1. */
  maxSampleSize: number;
  /** Floor on the std deviation used for phi, ms (> 0). */
  minStdDeviationMs: number;
  /** Added to the mean interval before phi rises, ms. */
  acceptableHeartbeatPauseMs: number;
  /** Interval assumed before any has been measured, ms; seeds the history on the first heartbeat. */
  firstHeartbeatEstimateMs: number;
  /**
   * Optional. When set, an interval that ends with phi already at or above this
   * is not recorded (Akka's rule: a member coming back from a long silence must
   * not skew the statistics). Omit to record every interval.
   */
  phiThreshold?: number;
}

/**
 * One member's detector: a bounded window of heartbeat inter-arrival times
 * with a running sum and sum of squares, so mean and std deviation are O(1).
 */
export class PhiAccrualDetector {
  private readonly intervalsMs: number[] = [];
  /** Index of the oldest interval once the window is full. */
  private oldestIndex = 0;
  private sumMs = 0;
  private sumOfSquaresMs2 = 0;
  private lastMs: number | null = null;

  constructor(private readonly options: PhiAccrualOptions) {
    if (!Number.isSafeInteger(options.maxSampleSize) || options.maxSampleSize < 1) {
      throw new RangeError(`maxSampleSize must be a positive integer, got ${options.maxSampleSize}`);
    }
    if (!(options.minStdDeviationMs > 0)) {
      throw new RangeError(`minStdDeviationMs must be > 0, got ${options.minStdDeviationMs}`);
    }
  }

  /**
   * A heartbeat arrived at `nowMs`. The first one only starts the clock and
   * seeds the history as Akka does (estimate ∓ estimate/4, i.e. mean =
   * estimate, std deviation = estimate/4); later ones record the interval.
   */
  heartbeat(nowMs: number): void {
    if (this.lastMs === null) {
      this.seedHistory();
    } else if (!this.isPastThreshold(nowMs)) {
      this.recordInterval(Math.max(0, nowMs - this.lastMs));
    }
    this.lastMs = nowMs;
  }

  /** Current suspicion level; 0 before the first heartbeat. */
  phi(nowMs: number): number {
    if (this.lastMs === null) return 0;
    const sinceLastMs = Math.max(0, nowMs - this.lastMs);
    const stdDevMs = Math.max(this.stdDevMs, this.options.minStdDeviationMs);
    return phi(sinceLastMs, this.meanMs + this.options.acceptableHeartbeatPauseMs, stdDevMs);
  }

  /**
   * Restart the silence at `nowMs` without recording an interval: after our
   * own process stalled, silence we could not observe is not the member's fault.
   * Does nothing before the first heartbeat.
   */
  resetClock(nowMs: number): void {
    if (this.lastMs !== null) this.lastMs = nowMs;
  }

  /** When the last heartbeat arrived (or the clock was reset); null before the first. */
  get lastArrivalMs(): number | null {
    return this.lastMs;
  }

  /** Mean of the intervals in the window, ms; 0 when empty. */
  get meanMs(): number {
    const n = this.intervalsMs.length;
    return n === 0 ? 0 : this.sumMs / n;
  }

  /** Population std deviation of the intervals in the window, ms (before the floor). */
  get stdDevMs(): number {
    const n = this.intervalsMs.length;
    if (n === 0) return 0;
    const mean = this.sumMs / n;
    return Math.sqrt(Math.max(0, this.sumOfSquaresMs2 / n - mean * mean));
  }

  /** Intervals currently in the window. */
  get sampleCount(): number {
    return this.intervalsMs.length;
  }

  private seedHistory(): void {
    const estimateMs = this.options.firstHeartbeatEstimateMs;
    const stdDevMs = estimateMs / 4;
    this.recordInterval(estimateMs - stdDevMs);
    this.recordInterval(estimateMs + stdDevMs);
  }

  private isPastThreshold(nowMs: number): boolean {
    const threshold = this.options.phiThreshold;
    return threshold !== undefined && this.phi(nowMs) >= threshold;
  }

  private recordInterval(intervalMs: number): void {
    if (this.intervalsMs.length < this.options.maxSampleSize) {
      this.intervalsMs.push(intervalMs);
      this.addToSums(intervalMs, 1);
      return;
    }
    this.addToSums(this.intervalsMs[this.oldestIndex] as number, -1);
    this.intervalsMs[this.oldestIndex] = intervalMs;
    this.addToSums(intervalMs, 1);
    this.oldestIndex = (this.oldestIndex + 1) % this.options.maxSampleSize;
    if (this.oldestIndex === 0) this.recomputeSums();
  }

  private addToSums(intervalMs: number, sign: 1 | -1): void {
    this.sumMs += sign * intervalMs;
    this.sumOfSquaresMs2 += sign * intervalMs * intervalMs;
  }

  /** Once per trip round the window, so floating-point drift in the running sums cannot accumulate. */
  private recomputeSums(): void {
    this.sumMs = 0;
    this.sumOfSquaresMs2 = 0;
    for (const intervalMs of this.intervalsMs) this.addToSums(intervalMs, 1);
  }
}
