/**
 * The receiving side of shard snapshots (the sender is node/snapshot-sender.ts): a primary sends
 * `snapBegin`, numbered and checksummed `snapChunk`s and `snapEnd` over the bulk RPC, one in
 * flight; the entries are staged in the shard store and installed atomically at the end.
 *
 * Every frame is untrusted: a begin is accepted only from the shard's primary at the map's
 * epoch, to a replica the map lists here; chunks and the end only from the sender of the begin,
 * with its id. A malformed frame throws InvalidMessageError (the RPC layer answers with an
 * error). A snapshot interrupted by a broken stream, or staged before a restart, resumes from
 * the chunks already staged (the begin's answer says how many).
 */
import type { ClusterMapView } from '../protocols/cluster-map/types.js';
import { InvalidMessageError } from '../protocols/errors.js';
import type { SnapshotMeta } from '../protocols/replication/types.js';
import { crc32 } from '../storage/checksum.js';
import { InvalidShardInputError, type ShardEntry, type ShardSnapshotWriter, type ShardStore } from '../storage/shard-store.js';
import type { Logger } from './log.js';
import { StoreError } from './store-api.js';
import { arr, encodeFrame, FrameKind, int, str } from './store-wire.js';

interface IncomingSnapshot {
  from: string;
  id: string;
  meta: SnapshotMeta;
  writer: ShardSnapshotWriter;
}

export interface SnapshotReceiverOptions {
  self: string;
  shardStore: ShardStore;
  view: () => ClusterMapView;
  /** Opens (or finds) this peer's replica of the shard; false when it cannot be held here. */
  hold: (shard: number) => Promise<boolean>;
  /**
   * Installs a fully staged snapshot into the shard's replica (its core agrees, then the writer
   * commits, in the shard's turn); resolves whether it was installed, or null when the replica
   * is gone (the staged data is then discarded).
   */
  install: (shard: number, meta: SnapshotMeta, writer: ShardSnapshotWriter) => Promise<boolean | null>;
  /** A frame the map does not back was refused (counted with the store's refused requests). */
  onRejected: () => void;
  log: Logger;
}

export class SnapshotReceiver {
  readonly counters = { snapshotsInstalled: 0 };
  private readonly incoming = new Map<number, IncomingSnapshot>();

  constructor(private readonly opts: SnapshotReceiverOptions) {}

  async begin(from: string, h: Record<string, unknown>): Promise<Uint8Array> {
    const shard = int(h, 'shard', 0, 1023);
    const meta: SnapshotMeta = { shard, epoch: int(h, 'epoch', 1), from: str(h, 'from', 128), seq: int(h, 'seq'), seqEpoch: int(h, 'seqEpoch') };
    const id = str(h, 'id', 64);
    if (meta.from !== from) throw new InvalidMessageError('from: not the sender');
    // Only the shard's primary at the map's epoch sends a snapshot, and only to a replica.
    const a = this.opts.view().shards[shard];
    if (a === undefined || a.primary !== from || meta.epoch !== a.epoch || !a.replicas.includes(this.opts.self)) {
      this.opts.onRejected();
      throw new StoreError('unavailable', `a snapshot of shard ${shard} at epoch ${meta.epoch} from ${from} is not backed by the map here (primary ${a?.primary ?? 'none'} at epoch ${a?.epoch ?? 0})`);
    }
    if (!(await this.opts.hold(shard))) throw new StoreError('unavailable', `shard ${shard} is not held here`);
    const old = this.incoming.get(shard);
    if (old !== undefined && old.id === id && old.from === from && old.meta.seq === meta.seq && old.meta.seqEpoch === meta.seqEpoch) {
      // The same snapshot again (its stream broke): go on; the epoch may have moved meanwhile.
      old.meta = meta;
      return encodeFrame(FrameKind.reply, { ok: true, have: old.writer.chunks });
    }
    if (old !== undefined) {
      this.incoming.delete(shard);
      await old.writer.abort().catch(() => {});
    }
    // A snapshot staged before a restart resumes if it is this one; any other is dropped.
    const writer = await this.opts.shardStore.beginSnapshot(shard, { id, from, seq: meta.seq, seqEpoch: meta.seqEpoch });
    if (writer.chunks > 0) this.opts.log.info('snapshot resumes after a restart', { shard, from, chunks: writer.chunks });
    this.incoming.set(shard, { from, id, meta, writer });
    return encodeFrame(FrameKind.reply, { ok: true, have: writer.chunks });
  }

  async chunk(from: string, h: Record<string, unknown>, payload: Uint8Array): Promise<Uint8Array> {
    const shard = int(h, 'shard', 0, 1023);
    const inc = this.incoming.get(shard);
    if (inc === undefined || inc.from !== from || inc.id !== str(h, 'id', 64)) throw new InvalidMessageError('no such snapshot of this shard is being received from you');
    const chunk = int(h, 'chunk');
    const crc = int(h, 'crc', 0, 0xffff_ffff);
    if (crc32(payload) !== crc) throw new InvalidMessageError(`chunk ${chunk}: checksum mismatch`);
    const index = arr(h, 'entries', 1_000_000);
    const entries: ShardEntry[] = [];
    let offset = 0;
    for (const [k, row] of index.entries()) {
      if (!Array.isArray(row) || row.length !== 3) throw new InvalidMessageError(`entries[${k}]: must be [key, version, length]`);
      const [key, version, length] = row as [unknown, unknown, unknown];
      if (typeof key !== 'string' || typeof version !== 'number' || typeof length !== 'number' || !Number.isSafeInteger(length) || length < -1) {
        throw new InvalidMessageError(`entries[${k}]: bad entry`);
      }
      if (length > payload.length - offset) throw new InvalidMessageError(`entries[${k}]: value runs past the payload`);
      const value = length < 0 ? null : payload.slice(offset, offset + length);
      offset += Math.max(0, length);
      entries.push({ key, version, value });
    }
    if (offset !== payload.length) throw new InvalidMessageError(`chunk ${chunk}: ${payload.length - offset} payload bytes no entry names`);
    try {
      await inc.writer.writeChunk(chunk, entries); // validates keys, versions, sizes and the chunk's place
    } catch (err) {
      if (err instanceof InvalidShardInputError) throw new InvalidMessageError(err.message);
      throw err;
    }
    return encodeFrame(FrameKind.reply, { ok: true, have: inc.writer.chunks });
  }

  async end(from: string, h: Record<string, unknown>): Promise<Uint8Array> {
    const shard = int(h, 'shard', 0, 1023);
    const inc = this.incoming.get(shard);
    if (inc === undefined || inc.from !== from || inc.id !== str(h, 'id', 64)) throw new InvalidMessageError('no such snapshot of this shard is being received from you');
    this.incoming.delete(shard);
    // The shard's epoch may have moved on while the stream ran (another replica added or
    // removed). The snapshot is committed data at (seq, seqEpoch), valid at any later epoch; if
    // its sender is still the primary the map names, it installs at the map's epoch instead of
    // being refused and sent all over again.
    const a = this.opts.view().shards[shard];
    if (a !== undefined && a.primary === from && a.epoch > inc.meta.epoch && a.replicas.includes(this.opts.self)) inc.meta = { ...inc.meta, epoch: a.epoch };
    const installed = await this.opts.install(shard, inc.meta, inc.writer);
    if (installed === null) {
      await inc.writer.abort();
      return encodeFrame(FrameKind.reply, { ok: true, installed: false });
    }
    if (installed) {
      this.counters.snapshotsInstalled++;
      this.opts.log.info('snapshot installed', { shard, from, seq: inc.meta.seq });
    }
    return encodeFrame(FrameKind.reply, { ok: true, installed });
  }

  /** Drops the snapshot being received for `shard`, if any (its replica was removed). */
  async drop(shard: number): Promise<void> {
    const inc = this.incoming.get(shard);
    if (inc === undefined) return;
    this.incoming.delete(shard);
    await inc.writer.abort().catch(() => {});
  }

  /** Drops every snapshot being received (the peer stops). */
  async dropAll(): Promise<void> {
    for (const shard of [...this.incoming.keys()]) await this.drop(shard);
  }
}
