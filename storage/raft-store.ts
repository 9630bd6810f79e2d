import type { ConfState, Entry, EntryType, HardState, RecoveredState, Snapshot } from '../protocols/raft/types.js';
import type { BatchOp, KvStore } from './kv-store.js';
import { crc32 } from './checksum.js';
import { StorageError } from './storage-error.js';

/**
 * The durable side of Raft: hard state (term, vote, commit), the log and the
 * latest snapshot, in one KvStore view (a `raft` sublevel of the data dir).
 * Every `persist` is one atomic batch, so a crash leaves either all of a
 * Ready's state or none of it.
 *
 * Keys: `hard` (JSON), `snap` (header + data), `e<16 hex digits of index>` (header + data).
 *
 * Records are sealed with a CRC-32 (format byte 1, then the checksum of the rest); records of
 * the unsealed format (first byte 0: the u32 header length) are still read. At load a damaged
 * entry ends the log there: it and every later entry are deleted (Raft then treats the peer as
 * one that lost its tail and the leader sends them again). A damaged hard state or snapshot
 * refuses to start with StorageError CORRUPT naming the record: guessing a vote is not safe.
 */
export interface RaftStorage {
  /** What the core was told to keep: feed it to `new RaftNode({ storage })`. */
  load(): Promise<RecoveredState>;
  /**
   * Persist a Ready's durable parts. `entries` may overwrite stored entries from
   * their first index on (a stale suffix is removed); a `snapshot` replaces the
   * stored one and drops the entries it covers. `sync` fsyncs before resolving.
   */
  persist(p: { hardState?: HardState; entries: Entry[]; snapshot?: Snapshot }, opts: { sync: boolean }): Promise<void>;
  /**
   * Keep a snapshot this peer took itself (`RaftNode.compact`): the entries it
   * covers are dropped, the later ones stay.
   */
  saveCompaction(snapshot: Snapshot, opts: { sync: boolean }): Promise<void>;
  /** Highest stored entry index (or the snapshot index when the log is empty). */
  readonly lastIndex: number;
}

const HARD = 'hard';
const SNAP = 'snap';
const ENTRY_PREFIX = 'e';
const ENTRY_END = 'f';

function entryKey(index: number): string {
  return ENTRY_PREFIX + index.toString(16).padStart(16, '0');
}

const SEALED = 1;
const SEAL_BYTES = 5;

/** 1 | crc32 of the rest (4 bytes BE) | header length (4 bytes BE) | header JSON | data */
function frame(header: unknown, data: Uint8Array): Uint8Array {
  const head = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(SEAL_BYTES + 4 + head.length + data.length);
  const view = new DataView(out.buffer);
  view.setUint8(0, SEALED);
  view.setUint32(SEAL_BYTES, head.length);
  out.set(head, SEAL_BYTES + 4);
  out.set(data, SEAL_BYTES + 4 + head.length);
  view.setUint32(1, crc32(out.subarray(SEAL_BYTES)));
  return out;
}

/** The unsealed record inside `bytes`, checked; throws when the checksum does not match. */
function unseal(bytes: Uint8Array): Uint8Array {
  if (bytes.length === 0) throw new Error('empty record');
  if (bytes[0] === 0) return bytes; // written before records were sealed
  if (bytes[0] !== SEALED) throw new Error(`unknown record format ${bytes[0]}`);
  if (bytes.length < SEAL_BYTES) throw new Error('record shorter than its seal');
  const want = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(1);
  const body = bytes.subarray(SEAL_BYTES);
  if (crc32(body) !== want) throw new Error('checksum mismatch');
  return body;
}

function unframe<T>(sealed: Uint8Array, where: string, location: string): { header: T; data: Uint8Array } {
  try {
    const bytes = unseal(sealed);
    if (bytes.length < 4) throw new Error('record shorter than its header length');
    const len = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(0);
    if (4 + len > bytes.length) throw new Error('header longer than record');
    const header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(4, 4 + len))) as T;
    return { header, data: bytes.slice(4 + len) };
  } catch (err) {
    throw new StorageError('CORRUPT', location, `raft ${where} in ${location} is unreadable: ${(err as Error).message}`, err);
  }
}

/** Entries dropped at load because a record was damaged. */
export interface RaftLogRepair {
  fromIndex: number;
  throughIndex: number;
  problem: string;
}

export class LevelRaftStorage implements RaftStorage {
  private last = 0;
  private snapshotIndex = 0;
  /** Set by `load` when it cut the log at a damaged entry. */
  repair: RaftLogRepair | null = null;

  constructor(private readonly store: KvStore) {}

  get lastIndex(): number {
    return this.last;
  }

  async load(): Promise<RecoveredState> {
    const loc = this.store.location;
    const hardBytes = await this.store.get(HARD);
    const hardState: HardState =
      hardBytes === undefined ? { term: 0, vote: null, commit: 0 } : unframe<HardState>(hardBytes, 'hard state', loc).header;
    let snapshot: Snapshot | undefined;
    const snapBytes = await this.store.get(SNAP);
    if (snapBytes !== undefined) {
      const { header, data } = unframe<{ index: number; term: number; config: ConfState }>(snapBytes, 'snapshot', loc);
      snapshot = { index: header.index, term: header.term, config: header.config, data };
    }
    this.snapshotIndex = snapshot?.index ?? 0;
    const entries: Entry[] = [];
    let expect = this.snapshotIndex + 1;
    let damaged: { index: number; problem: string } | null = null;
    const dropKeys: string[] = [];
    for await (const [key, value] of this.store.iterate({ gt: entryKey(this.snapshotIndex), lt: ENTRY_END })) {
      const index = parseInt(key.slice(1), 16);
      if (damaged !== null) {
        dropKeys.push(key);
        continue;
      }
      let rec: { header: { term: number; type: EntryType }; data: Uint8Array };
      try {
        rec = unframe<{ term: number; type: EntryType }>(value, `entry ${key}`, loc);
      } catch (err) {
        damaged = { index, problem: (err as Error).message };
        dropKeys.push(key);
        continue;
      }
      if (index !== expect) {
        throw new StorageError('CORRUPT', loc, `raft log in ${loc} has a gap: expected entry ${expect}, found ${index}`);
      }
      entries.push({ index, term: rec.header.term, type: rec.header.type, data: rec.data });
      expect++;
    }
    if (damaged !== null) {
      // Cut the log before the damaged entry, durably, before anyone acts on it.
      await this.store.batch(dropKeys.map((key) => ({ type: 'del' as const, key })), { sync: true });
      this.repair = { fromIndex: damaged.index, throughIndex: parseInt((dropKeys[dropKeys.length - 1] as string).slice(1), 16), problem: damaged.problem };
    }
    this.last = expect - 1;
    return { hardState, snapshot, entries };
  }

  async persist(p: { hardState?: HardState; entries: Entry[]; snapshot?: Snapshot }, opts: { sync: boolean }): Promise<void> {
    const ops: BatchOp[] = [];
    let last = this.last;
    let snapshotIndex = this.snapshotIndex;
    if (p.snapshot !== undefined) {
      // A snapshot from the leader replaces the whole log (the core discarded its entries).
      const s = p.snapshot;
      ops.push({ type: 'put', key: SNAP, value: frame({ index: s.index, term: s.term, config: s.config }, s.data) });
      for (let i = snapshotIndex + 1; i <= last; i++) ops.push({ type: 'del', key: entryKey(i) });
      last = s.index;
      snapshotIndex = s.index;
    }
    if (p.entries.length > 0) {
      const first = (p.entries[0] as Entry).index;
      const newLast = (p.entries[p.entries.length - 1] as Entry).index;
      if (first > last + 1) {
        throw new Error(`raft storage: entries start at ${first} but the log ends at ${last} (a gap)`);
      }
      for (const e of p.entries) ops.push({ type: 'put', key: entryKey(e.index), value: frame({ term: e.term, type: e.type }, e.data) });
      for (let i = newLast + 1; i <= last; i++) ops.push({ type: 'del', key: entryKey(i) });
      last = newLast;
    }
    if (p.hardState !== undefined) ops.push({ type: 'put', key: HARD, value: frame(p.hardState, new Uint8Array(0)) });
    if (ops.length === 0) return;
    await this.store.batch(ops, { sync: opts.sync });
    this.last = last;
    this.snapshotIndex = snapshotIndex;
  }

  async saveCompaction(snapshot: Snapshot, opts: { sync: boolean }): Promise<void> {
    if (snapshot.index <= this.snapshotIndex) return;
    if (snapshot.index > this.last) throw new Error(`raft storage: compaction at ${snapshot.index} beyond the log end ${this.last}`);
    const ops: BatchOp[] = [
      { type: 'put', key: SNAP, value: frame({ index: snapshot.index, term: snapshot.term, config: snapshot.config }, snapshot.data) },
    ];
    for (let i = this.snapshotIndex + 1; i <= snapshot.index; i++) ops.push({ type: 'del', key: entryKey(i) });
    await this.store.batch(ops, { sync: opts.sync });
    this.snapshotIndex = snapshot.index;
  }
}
