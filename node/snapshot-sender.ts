/**
 * The primary's side of snapshot transfers: one concern of the store service, kept apart.
 *
 * A replica whose needed op-log groups were trimmed gets a snapshot of the primary's applied
 * shard data over the bulk RPC: `snapBegin`, then numbered, checksummed chunks, one in flight
 * (the acknowledgement is the flow control, the token bucket the rate limit), then `snapEnd`.
 * A broken stream is held for SNAPSHOT_RESUME_HOLD_MS: when the core asks again
 * (`snapshotRetryMs`) it goes on from the last chunk the receiver acknowledged, or starts over
 * when the receiver no longer has it (protocols/rebalance/transfer.ts decides). The receiving
 * side stays in the store service: it installs into a replica core.
 */
import { randomBytes } from 'node:crypto';
import { crc32 } from '../storage/checksum.js';
import type { ShardEntry, ShardSnapshotReader, ShardStore } from '../storage/shard-store.js';
import { decideResume, TokenBucket, TransferTracker, type TransferProgress } from '../protocols/rebalance/index.js';
import type { Logger } from './log.js';
import { decodeFrame, encodeFrame, FrameKind } from './store-wire.js';

/** How long a broken snapshot stream is held (its storage snapshot open) for a resume, ms. */
export const SNAPSHOT_RESUME_HOLD_MS = 60_000;
/** Bytes of one snapshot chunk (one in flight per stream: larger chunks, fewer round trips). */
export const SNAPSHOT_CHUNK_BYTES = 4 * 1024 * 1024;

interface OutgoingSnapshot {
  reader: ShardSnapshotReader;
  batches: AsyncIterator<ShardEntry[]>;
  tracker: TransferTracker;
  seqEpoch: number;
  /** The chunk sent and not acknowledged yet (sent again on a resume unless the receiver has it). */
  pending: { index: number; entries: Array<[string, number, number]>; payload: Uint8Array; bytes: number } | null;
  /** A stream is running; false while held for a resume after a break. */
  active: boolean;
  brokeAtMs: number;
}

export interface SnapshotSenderOptions {
  self: string;
  shardStore: ShardStore;
  /** A request on the bulk protocol (node/rpc.ts). */
  request(to: string, frame: Uint8Array, timeoutMs: number): Promise<Uint8Array>;
  /** Bytes per second for all of this peer's snapshot streams (`--rebalance-rate`); null: unlimited. */
  rateBps: number | null;
  log: Logger;
  now(): number;
  stopped(): boolean;
  /** Called with the duration of each completed send, seconds (shoal_move_duration_seconds). */
  onMoveDone?(seconds: number): void;
}

export class SnapshotSender {
  readonly counters = {
    snapshotsSent: 0,
    snapshotBytesSent: 0,
    /** Streams that went on from the last acknowledged chunk after a break, and the bytes not sent again. */
    snapshotsResumed: 0,
    snapshotBytesResumed: 0,
    /** Seconds spent sending completed snapshots (shoal_store_move_seconds_total). */
    moveSecondsTotal: 0,
  };
  private readonly outgoing = new Map<string, OutgoingSnapshot>();
  private readonly bucket: TokenBucket;

  constructor(private readonly opts: SnapshotSenderOptions) {
    this.bucket = new TokenBucket(opts.now(), opts.rateBps);
  }

  /** Transfers under way or held for a resume. */
  get size(): number {
    return this.outgoing.size;
  }

  /** Snapshot transfers this peer is sending (or holding for a resume), for `/v1/moves`. */
  transfers(): TransferProgress[] {
    const now = this.opts.now();
    return [...this.outgoing.values()].map((o) => ({ ...o.tracker.progress(now), active: o.active }));
  }

  /** The progress of the transfer of `shard` to `to`, if this peer sends one. */
  progressOf(shard: number, to: string): TransferProgress | undefined {
    const o = this.outgoing.get(`${shard}:${to}`);
    return o === undefined ? undefined : o.tracker.progress(this.opts.now());
  }

  /** Sends (or resumes) a snapshot of `shard` to `to`, as the primary at `epoch`. Never throws. */
  async send(shard: number, to: string, epoch: number): Promise<void> {
    const { log } = this.opts;
    const now = (): number => this.opts.now();
    const key = `${shard}:${to}`;
    let out = this.outgoing.get(key);
    if (out?.active === true) return;
    if (out !== undefined && now() - out.brokeAtMs > SNAPSHOT_RESUME_HOLD_MS) {
      this.outgoing.delete(key);
      await out.reader.close().catch(() => {});
      out = undefined;
    }
    let fresh = false;
    if (out === undefined) {
      // A rate-limited stream goes in chunks of about a quarter second of its rate, so its
      // progress shows and a resume loses little; else in chunks of 4 MiB.
      const rate = this.bucket.bytesPerSecond;
      const batchBytes = rate === null ? SNAPSHOT_CHUNK_BYTES : Math.max(64 * 1024, Math.min(SNAPSHOT_CHUNK_BYTES, Math.floor(rate / 4)));
      let reader: ShardSnapshotReader;
      try {
        reader = await this.opts.shardStore.snapshotData(shard, { batchBytes });
      } catch (err) {
        log.warn('cannot read a snapshot to send', { shard, to, err });
        return;
      }
      const total = await this.opts.shardStore.approximateDataBytes(shard).catch(() => null);
      const id = randomBytes(12).toString('hex');
      out = {
        reader,
        batches: reader.batches[Symbol.asyncIterator](),
        tracker: new TransferTracker(shard, this.opts.self, to, id, reader.seq, now(), total),
        seqEpoch: reader.epoch,
        pending: null,
        active: true,
        brokeAtMs: 0,
      };
      this.outgoing.set(key, out);
      fresh = true;
    }
    out.active = true;
    const o = out;
    try {
      const t = o.tracker;
      const begin = { shard, epoch, from: this.opts.self, seq: t.seq, seqEpoch: o.seqEpoch, id: t.id };
      const reply = decodeFrame(await this.opts.request(to, encodeFrame(FrameKind.snapBegin, begin), 10_000)).header;
      const have = typeof reply.have === 'number' ? reply.have : 0;
      if (!fresh) {
        const d = decideResume(t.ackedChunks, o.pending !== null, have);
        if (d.kind === 'restart') {
          log.info('snapshot starts over', { shard, to, reason: d.reason });
          this.outgoing.delete(key);
          await o.reader.close().catch(() => {});
          return await this.send(shard, to, epoch);
        }
        const skipped = d.kind === 'skip-pending' ? o.pending!.bytes : 0;
        if (d.kind === 'skip-pending') {
          t.acknowledged(now(), o.pending!.index, o.pending!.bytes);
          o.pending = null;
        }
        t.resumed(now(), skipped);
        this.counters.snapshotsResumed++;
        this.counters.snapshotBytesResumed += t.bytesDone;
        log.info('snapshot resumed', { shard, to, chunk: t.ackedChunks, bytes: t.bytesDone });
      }
      for (;;) {
        if (this.opts.stopped()) throw new Error('stopping');
        if (o.pending === null) {
          const r = await o.batches.next();
          if (r.done === true) break;
          const index: Array<[string, number, number]> = [];
          const parts: Uint8Array[] = [];
          let bytes = 0;
          for (const e of r.value) {
            index.push([e.key, e.version, e.value === null ? -1 : e.value.length]);
            if (e.value !== null) parts.push(e.value);
            bytes += e.key.length + (e.value?.length ?? 0);
          }
          const payload = Buffer.concat(parts);
          o.pending = { index: t.ackedChunks, entries: index, payload, bytes };
        }
        const p = o.pending;
        const wait = this.bucket.reserve(now(), p.payload.byteLength);
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        const header = { shard, id: t.id, chunk: p.index, crc: crc32(p.payload), entries: p.entries };
        await this.opts.request(to, encodeFrame(FrameKind.snapChunk, header, p.payload), 30_000);
        t.acknowledged(now(), p.index, p.bytes);
        this.counters.snapshotBytesSent += p.payload.byteLength;
        o.pending = null;
      }
      await this.opts.request(to, encodeFrame(FrameKind.snapEnd, { shard, id: t.id }), 30_000);
      this.counters.snapshotsSent++;
      const seconds = (now() - t.startedAtMs) / 1000;
      this.counters.moveSecondsTotal += seconds;
      this.opts.onMoveDone?.(seconds);
      this.outgoing.delete(key);
      await o.reader.close().catch(() => {});
      log.info('snapshot sent', { shard, to, seq: t.seq, chunks: t.ackedChunks, bytes: t.bytesDone });
    } catch (err) {
      // Kept for SNAPSHOT_RESUME_HOLD_MS: the core asks again (snapshotRetryMs) and the stream
      // goes on from the last acknowledged chunk if the receiver still holds it.
      o.active = false;
      o.brokeAtMs = now();
      log.warn('snapshot interrupted', { shard, to, chunk: o.tracker.ackedChunks, err });
      const timer = setTimeout(() => {
        if (this.outgoing.get(key) === o && !o.active && now() - o.brokeAtMs >= SNAPSHOT_RESUME_HOLD_MS) {
          this.outgoing.delete(key);
          void o.reader.close().catch(() => {});
        }
      }, SNAPSHOT_RESUME_HOLD_MS + 100);
      timer.unref();
    }
  }
}
