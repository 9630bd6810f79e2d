/**
 * The bookkeeping of one bulk snapshot transfer (a replica being filled), pure: time comes in as
 * `nowMs`. The shell (node/store-service.ts) streams chunks over the bulk protocol; this decides
 * where a resumed stream goes on and reports progress (bytes, rate, ETA) for `/v1/moves`.
 *
 * ## Resume
 *
 * The sender reads one consistent copy (a storage snapshot) named by `id`, in numbered chunks;
 * a chunk is acknowledged after the receiver staged it durably together with the count of staged
 * chunks. The sender keeps the last chunk it sent until it is acknowledged. When a stream breaks
 * (or the receiver restarts) and the sender begins again with the same id, the receiver answers
 * with the chunks it holds for that id (`have`):
 *
 * - `have === acked`: the chunk in flight was lost; send it again, then go on;
 * - `have === acked + 1`: it arrived but its acknowledgement was lost; go on after it;
 * - anything else (the receiver lost its staging, or holds another snapshot): start over with a
 *   fresh copy and a fresh id.
 */

/** What a resumed sender does with the receiver's count of staged chunks. */
export type ResumeDecision = { kind: 'resend-pending' } | { kind: 'skip-pending' } | { kind: 'restart'; reason: string };

export function decideResume(acked: number, hasPending: boolean, have: number): ResumeDecision {
  if (!Number.isSafeInteger(have) || have < 0) return { kind: 'restart', reason: `the receiver reported ${String(have)} chunks` };
  if (have === acked) return { kind: 'resend-pending' };
  if (have === acked + 1 && hasPending) return { kind: 'skip-pending' };
  return { kind: 'restart', reason: `the receiver holds ${have} chunks of this snapshot, the sender ${acked} acknowledged` };
}

/** Progress of one transfer, as `/v1/moves` shows it. */
export interface TransferProgress {
  shard: number;
  from: string;
  to: string;
  /** The snapshot's id and header. */
  id: string;
  seq: number;
  chunks: number;
  bytesDone: number;
  /** An estimate (storage's size of the data), at least bytesDone; null while unknown. */
  bytesTotal: number | null;
  /** Bytes per second over the last few seconds (0 before the first chunk). */
  rateBps: number;
  /** Estimated milliseconds left (null: unknown). */
  etaMs: number | null;
  startedAtMs: number;
  /** How many times the stream broke and went on from the last acknowledged chunk. */
  resumes: number;
  /** Bytes that were already at the receiver when a stream went on (not sent again). */
  bytesResumed: number;
}

/** How much of the rate estimate a new sample replaces per second (an EWMA of about 3 s). */
const RATE_WINDOW_MS = 3000;

export class TransferTracker {
  private acked = 0;
  private bytes = 0;
  private rate = 0;
  private lastAtMs: number;
  private resumeCount = 0;
  private resumedBytes = 0;

  constructor(
    readonly shard: number,
    readonly from: string,
    readonly to: string,
    readonly id: string,
    readonly seq: number,
    readonly startedAtMs: number,
    private total: number | null,
  ) {
    this.lastAtMs = startedAtMs;
  }

  /** Chunks acknowledged: the next chunk to send is this one. */
  get ackedChunks(): number {
    return this.acked;
  }

  get bytesDone(): number {
    return this.bytes;
  }

  /** Chunk `index` of `bytes` bytes was acknowledged at `nowMs`. */
  acknowledged(nowMs: number, index: number, bytes: number): void {
    if (index !== this.acked) return;
    this.acked++;
    this.bytes += bytes;
    const dt = Math.max(1, nowMs - this.lastAtMs);
    const sample = (bytes * 1000) / dt;
    const w = Math.min(1, dt / RATE_WINDOW_MS);
    this.rate = this.rate === 0 ? sample : this.rate * (1 - w) + sample * w;
    this.lastAtMs = nowMs;
  }

  /** The stream went on after a break; `skipped` bytes of the pending chunk were already there. */
  resumed(nowMs: number, skippedBytes: number): void {
    this.resumeCount++;
    this.resumedBytes += this.bytes + skippedBytes;
    this.lastAtMs = nowMs;
  }

  progress(nowMs: number): TransferProgress {
    const total = this.total === null ? null : Math.max(this.total, this.bytes);
    const idle = nowMs - this.lastAtMs;
    // A stream that has not moved for a while is not going at its old rate.
    const rate = idle > RATE_WINDOW_MS ? (this.rate * RATE_WINDOW_MS) / idle : this.rate;
    const etaMs = total === null || rate <= 0 ? null : Math.round(((total - this.bytes) / rate) * 1000);
    return {
      shard: this.shard,
      from: this.from,
      to: this.to,
      id: this.id,
      seq: this.seq,
      chunks: this.acked,
      bytesDone: this.bytes,
      bytesTotal: total,
      rateBps: Math.round(rate),
      etaMs,
      startedAtMs: this.startedAtMs,
      resumes: this.resumeCount,
      bytesResumed: this.resumedBytes,
    };
  }
}
