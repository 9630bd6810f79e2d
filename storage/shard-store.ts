/**
 * The durable side of the replication core (protocols/replication/replica.ts, "shell contract")
 * for every shard a peer holds: per shard the hard state, the op log, the data and the applied
 * sequence number, in one {@link KvStore} view (the node passes `root.sublevel('shards')`).
 *
 * ## Key layout
 *
 * Every key starts with the shard as 4 lowercase hex digits (`ssss`, shard ≤ MAX_SHARD = 1023), then
 * one letter naming the record, so one shard's records are the range [`ssss`, `ssss+1`) and each
 * kind of record is a sub-range:
 *
 * | key                          | value                                                          |
 * |------------------------------|----------------------------------------------------------------|
 * | `ssss` `a`                   | applied: format 1, seq u64, epoch u64, data generation u32     |
 * | `ssss` `d` `gggggggg` `key`  | data of generation `g` (8 hex): format 1, kind (1 put, 2 tombstone), version u64, value bytes |
 * | `ssss` `h`                   | hard state: JSON `{ epoch, expanding }`                        |
 * | `ssss` `l` `<16 hex seq>`    | op-log group: format 1, seq u64, epoch u64, op count u32, ops  |
 *
 * Integers are big-endian; a u64 holds a safe integer (< 2^53). An op is: kind u8 (1 put, 2
 * delete), version u64, key length u32, key UTF-8, and for a put value length u32 and the value.
 * `a` sorts before `d`, so one iterator over [`ssss a`, `ssss e`) reads the applied record and then
 * the data from one LevelDB snapshot: that is how {@link ShardStore.snapshotData} gets a consistent
 * copy together with its `{ seq, epoch }` header while writes go on.
 *
 * ## Generations (bounded-memory, atomic snapshot install)
 *
 * A shard's data lives under the generation named in its applied record (0 when there is none).
 * A snapshot is received into the next generation in bounded batches that nothing reads
 * ({@link ShardStore.beginSnapshot}); `commit` then switches, in ONE atomic batch, the applied
 * record to `{ seq, epoch, generation + 1 }` and deletes the op log. The old generation is
 * invisible from that moment and is cleared afterwards (not atomic, and it need not be). At open,
 * data of any generation other than the current one (a crash while receiving or clearing) is
 * cleared. So a snapshot of any size is installed atomically with memory bounded by one batch.
 *
 * ## In memory
 *
 * Per shard: the log bounds (first and last seq; loaded at open with two seeks per shard) so that
 * truncation and trim can name the keys to delete inside one batch without reading, the applied
 * seq and epoch, and the data generation. These change only after the batch that changes them
 * on disk has completed.
 *
 * ## Reads and `durableAtSeq`
 *
 * {@link ShardStore.readValue} takes the shard's in-memory applied seq *before* it starts the key
 * read and returns it as `durableAtSeq`: every group up to it was applied by a batch that had
 * completed, so the read sees it (WriteRequest.durableAtSeq). Later applies may or may not show,
 * which the core's version overlay covers. The shell passes `{ version, present }` and
 * `durableAtSeq` to `ReplicaCore.write` as they are.
 *
 * ## Concurrency
 *
 * Writes of one shard (persistReady, snapshot commit, deleteShard) are serialized by a per-shard
 * queue; shards are independent. Reads take no lock.
 */
import { ConfigError } from '../protocols/errors.js';
import { MAX_KEY_BYTES, MAX_OPS_PER_GROUP, MAX_VALUE_BYTES } from '../protocols/replication/config.js';
import { MAX_REPLICA_ID_LENGTH, MAX_SHARD } from '../protocols/replication/codec.js';
import { hasLoneSurrogate } from '../protocols/replication/versions.js';
import type {
  LogGroup,
  LoggedOp,
  RecoveredReplicaState,
  ReplicaHardState,
  ReplicationReady,
} from '../protocols/replication/types.js';
import type { BatchOp, KvStore } from './kv-store.js';
import { crc32 } from './checksum.js';
import { StorageError } from './storage-error.js';

// ---------------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------------

/**
 * Damaged op-log records `recover` removed: `tail` — from group `seq` (above the applied seq) to
 * the end, so the replica must be caught up again; `prefix` — through group `seq` (already
 * applied), so older groups are served from snapshots instead.
 */
export interface ShardLogRepair {
  kind: 'tail' | 'prefix';
  seq: number;
  problem: string;
  dropped: number;
}

/** One key of a shard's data: a value, or a tombstone (`value: null`) keeping its version. */
export interface ShardEntry {
  /** At most MAX_KEY_BYTES UTF-8 bytes, well-formed UTF-16 (no lone surrogates). */
  key: string;
  /** At most MAX_VALUE_BYTES; null for a tombstone (the key was deleted). */
  value: Uint8Array | null;
  /** ≥ 1: the version the last put or delete set. */
  version: number;
}

/** The answer of {@link ShardStore.readValue}. */
export interface ShardRead {
  /** The stored bytes, or null when the key is absent (never written, or a tombstone). */
  value: Uint8Array | null;
  /** 0 when never written. */
  version: number;
  present: boolean;
  /** Every group up to here was applied (durably) before the read started: `WriteRequest.durableAtSeq`. */
  durableAtSeq: number;
}

/** The sequence numbers of the op-log groups a shard holds: `firstSeq..lastSeq`, empty when first > last. */
export interface LogBounds {
  firstSeq: number;
  /** The last group held; when the log is empty, the last one it held (or the applied seq). */
  lastSeq: number;
}

/** A consistent copy of a shard's applied data (see {@link ShardStore.snapshotData}). */
export interface ShardSnapshotReader {
  /** Applied seq of the copy: the snapshot header's `seq`. 0 when nothing was applied. */
  readonly seq: number;
  /** Epoch of group `seq`: the header's `seqEpoch`. */
  readonly epoch: number;
  /**
   * The entries (tombstones included: a receiver must keep deleted keys' versions) in batches of
   * at most `snapshotBatchEntries` entries and about `snapshotBatchBytes`. Iterate once.
   */
  readonly batches: AsyncIterable<ShardEntry[]>;
  /** Releases the underlying iterator; done by itself when `batches` ends or the loop breaks. */
  close(): Promise<void>;
}

/** A snapshot being received into a staging generation (see {@link ShardStore.beginSnapshot}). */
export interface ShardSnapshotWriter {
  /** Stages entries (validated, split into bounded batches). Nothing is visible before `commit`. */
  write(entries: readonly ShardEntry[]): Promise<void>;
  /**
   * Stages chunk `chunk` of a snapshot begun with an id, counting it in the same batch as its
   * last entries: a chunk below the count is already staged (nothing happens), one above it is
   * refused (InvalidShardInputError `chunk`).
   */
  writeChunk(chunk: number, entries: readonly ShardEntry[]): Promise<void>;
  /** Chunks staged (0 for a snapshot begun without an id). */
  readonly chunks: number;
  /**
   * Atomically makes the staged entries the shard's data, empties its op log and stores
   * `appliedSeq = seq, appliedEpoch = epoch` (durably when `sync`); then clears the old data.
   */
  commit(meta: { seq: number; epoch: number }, opts: { sync: boolean }): Promise<void>;
  /** Drops the staged entries. Harmless after commit or a second time. */
  abort(): Promise<void>;
}

/** Options of {@link ShardStore.open}. Defaults in DEFAULT_SHARD_STORE_OPTIONS. */
export interface ShardStoreOptions {
  /**
   * Most entries in one snapshot batch (read from `snapshotData`, or one storage batch written
   * while staging). Default 1024: amortizes per-batch cost while keeping batches small.
   */
  snapshotBatchEntries: number;
  /**
   * About this many key and value bytes in one snapshot batch (a single larger entry still forms
   * a batch of its own). Default 4 MiB: four maximal values; bounds memory while sending or
   * receiving a snapshot of any size.
   */
  snapshotBatchBytes: number;
}

export const DEFAULT_SHARD_STORE_OPTIONS: Readonly<ShardStoreOptions> = Object.freeze({
  snapshotBatchEntries: 1024,
  snapshotBatchBytes: 4 * 1024 * 1024,
});

/** Throws `ConfigError` naming the first bad field. */
export function validateShardStoreOptions(o: ShardStoreOptions): void {
  const check = (field: keyof ShardStoreOptions, max: number): void => {
    const v = o[field];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1 || v > max) {
      throw new ConfigError(field, `must be an integer in [1, ${max}], got ${String(v)}`);
    }
  };
  check('snapshotBatchEntries', 1_000_000);
  check('snapshotBatchBytes', 256 * 1024 * 1024);
}

/**
 * An argument a caller should not have passed: a shard out of range, a key or value too large, a
 * malformed group or entry, a log append that leaves a gap, an apply out of order. Nothing was
 * written. `field` names the argument (`shard`, `key`, `rd.appendLog[0].seq`, ...).
 */
export class InvalidShardInputError extends Error {
  override readonly name = 'InvalidShardInputError';
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
  }
}

/** `readLog` asked for groups the log no longer holds: send a snapshot instead. */
export class LogTrimmedError extends Error {
  override readonly name = 'LogTrimmedError';
  constructor(
    readonly shard: number,
    readonly afterSeq: number,
    /** The first group still held (or lastSeq + 1 when the log is empty). */
    readonly firstSeq: number,
  ) {
    super(`shard ${shard}: groups after ${afterSeq} are trimmed; the log starts at ${firstSeq}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Keys and records
// ---------------------------------------------------------------------------------------------

const APPLIED = 'a';
const DATA = 'd';
const DATA_END = 'e';
const HARD = 'h';
const LOG = 'l';
const LOG_END = 'm';
const STAGING = 's';
const FORMAT = 1;
/** Bits of a shard's key filter (128 KiB) and the keys it holds well (about 1 % false positives). */
const KEY_FILTER_BITS = 1 << 20;
const KEY_FILTER_MAX_KEYS = 100_000;
/** A shard's key filter is built only when its data is at most this big (the scan reads it). */
const KEY_FILTER_SCAN_MAX_BYTES = 64 * 1024 * 1024;
/** Keys whose applied version a ShardStore keeps in memory, over all shards. */
const VERSION_CACHE_ENTRIES = 200_000;
/** A group-commit batch stops growing at this many bytes (the next one starts gathering). */
const GROUP_COMMIT_MAX_BYTES = 8 * 1024 * 1024;
const KIND_PUT = 1;
const KIND_DELETE = 2;
const GEN_SPACE = 0x1_0000_0000;
const TWO_32 = 0x1_0000_0000;

const hex = (n: number, width: number): string => n.toString(16).padStart(width, '0');

/** The key layout, exported for tests and tools (see the module comment). */
export const shardKeys = Object.freeze({
  prefix: (shard: number): string => hex(shard, 4),
  applied: (shard: number): string => hex(shard, 4) + APPLIED,
  hard: (shard: number): string => hex(shard, 4) + HARD,
  log: (shard: number, seq: number): string => hex(shard, 4) + LOG + hex(seq, 16),
  dataGen: (shard: number, gen: number): string => hex(shard, 4) + DATA + hex(gen, 8),
  /** Exclusive upper bound of generation `gen`'s data keys. */
  dataGenEnd: (shard: number, gen: number): string => (gen + 1 < GEN_SPACE ? hex(shard, 4) + DATA + hex(gen + 1, 8) : hex(shard, 4) + DATA_END),
  data: (shard: number, gen: number, key: string): string => hex(shard, 4) + DATA + hex(gen, 8) + key,
  staging: (shard: number): string => hex(shard, 4) + STAGING,
});

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/** Format byte of a sealed record: SEALED, crc32 (u32) of the rest, then a FORMAT record. */
const SEALED = 2;
const SEAL_BYTES = 5;

/** Writes one sealed record: the seal is filled in by `done`. */
class Writer {
  private buf: Uint8Array;
  private view: DataView;
  private pos = SEAL_BYTES;
  constructor(size: number) {
    this.buf = new Uint8Array(SEAL_BYTES + size);
    this.view = new DataView(this.buf.buffer);
  }
  u8(n: number): void {
    this.view.setUint8(this.pos, n);
    this.pos += 1;
  }
  u32(n: number): void {
    this.view.setUint32(this.pos, n);
    this.pos += 4;
  }
  u64(n: number): void {
    this.view.setUint32(this.pos, Math.floor(n / TWO_32));
    this.view.setUint32(this.pos + 4, n % TWO_32);
    this.pos += 8;
  }
  bytes(b: Uint8Array): void {
    this.buf.set(b, this.pos);
    this.pos += b.byteLength;
  }
  done(): Uint8Array {
    if (this.pos !== this.buf.byteLength) throw new Error(`shard store: encoded ${this.pos} of ${this.buf.byteLength} bytes`);
    this.view.setUint8(0, SEALED);
    this.view.setUint32(1, crc32(this.buf.subarray(SEAL_BYTES)));
    return this.buf;
  }
}

/** The FORMAT record inside a sealed one, checked (records written before sealing pass as they are). */
function unseal(b: Uint8Array): Uint8Array {
  if (b.byteLength === 0) throw new Malformed('empty record');
  if (b[0] === FORMAT) return b;
  if (b[0] !== SEALED) throw new Malformed(`unknown format ${b[0]}`);
  if (b.byteLength < SEAL_BYTES) throw new Malformed('record shorter than its seal');
  const body = b.subarray(SEAL_BYTES);
  if (crc32(body) !== new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(1)) throw new Malformed('checksum mismatch');
  return body;
}

/** Thrown inside decoders; turned into StorageError CORRUPT with the key. */
class Malformed extends Error {}

class Reader {
  private readonly view: DataView;
  private pos = 0;
  constructor(private readonly buf: Uint8Array) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  private need(n: number): void {
    if (this.pos + n > this.buf.byteLength) throw new Malformed(`truncated at byte ${this.pos}`);
  }
  u8(): number {
    this.need(1);
    return this.view.getUint8(this.pos++);
  }
  u32(): number {
    this.need(4);
    const n = this.view.getUint32(this.pos);
    this.pos += 4;
    return n;
  }
  u64(): number {
    this.need(8);
    const n = this.view.getUint32(this.pos) * TWO_32 + this.view.getUint32(this.pos + 4);
    this.pos += 8;
    if (!Number.isSafeInteger(n)) throw new Malformed('integer beyond 2^53');
    return n;
  }
  bytes(n: number): Uint8Array {
    this.need(n);
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  rest(): Uint8Array {
    return this.bytes(this.buf.byteLength - this.pos);
  }
  end(): void {
    if (this.pos !== this.buf.byteLength) throw new Malformed(`${this.buf.byteLength - this.pos} trailing bytes`);
  }
}

interface AppliedRecord {
  seq: number;
  epoch: number;
  gen: number;
}

function encodeApplied(r: AppliedRecord): Uint8Array {
  const w = new Writer(1 + 8 + 8 + 4);
  w.u8(FORMAT);
  w.u64(r.seq);
  w.u64(r.epoch);
  w.u32(r.gen);
  return w.done();
}

function decodeApplied(sealed: Uint8Array): AppliedRecord {
  const r = new Reader(unseal(sealed));
  if (r.u8() !== FORMAT) throw new Malformed('unknown format');
  const rec = { seq: r.u64(), epoch: r.u64(), gen: r.u32() };
  r.end();
  if ((rec.seq === 0) !== (rec.epoch === 0)) throw new Malformed('epoch must be 0 exactly when seq is 0');
  return rec;
}

/** The snapshot a shard is receiving, and how many of its chunks are durably staged. */
export interface StagedSnapshot {
  /** The sender's name for this snapshot (one consistent copy): a resume must name the same. */
  id: string;
  /** The sending peer. */
  from: string;
  /** The snapshot's applied seq and the epoch of that group (its header). */
  seq: number;
  seqEpoch: number;
  /** Chunks 0..chunks-1 are staged (durable once the batch that counted them completed). */
  chunks: number;
  /** Key and value bytes staged so far. */
  bytes: number;
}

interface StagingRecord extends StagedSnapshot {
  gen: number;
}

function encodeStaging(r: StagingRecord): Uint8Array {
  const text = encoder.encode(JSON.stringify({ id: r.id, from: r.from }));
  const w = new Writer(1 + 8 + 8 + 4 + 4 + 8 + text.byteLength);
  w.u8(FORMAT);
  w.u64(r.seq);
  w.u64(r.seqEpoch);
  w.u32(r.gen);
  w.u32(r.chunks);
  w.u64(r.bytes);
  w.bytes(text);
  return w.done();
}

function decodeStaging(sealed: Uint8Array): StagingRecord {
  const r = new Reader(unseal(sealed));
  if (r.u8() !== FORMAT) throw new Malformed('unknown format');
  const seq = r.u64();
  const seqEpoch = r.u64();
  const gen = r.u32();
  const chunks = r.u32();
  const bytes = r.u64();
  let o: { id?: unknown; from?: unknown };
  try {
    o = JSON.parse(decoder.decode(r.rest())) as typeof o;
  } catch {
    throw new Malformed('not UTF-8 JSON');
  }
  if (typeof o?.id !== 'string' || typeof o.from !== 'string' || o.id.length === 0 || o.id.length > 128 || o.from.length === 0 || o.from.length > MAX_REPLICA_ID_LENGTH) {
    throw new Malformed('id and from must be short strings');
  }
  return { id: o.id, from: o.from, seq, seqEpoch, gen, chunks, bytes };
}

function encodeData(value: Uint8Array | null, version: number): Uint8Array {
  const w = new Writer(1 + 1 + 8 + (value === null ? 0 : value.byteLength));
  w.u8(FORMAT);
  w.u8(value === null ? KIND_DELETE : KIND_PUT);
  w.u64(version);
  if (value !== null) w.bytes(value);
  return w.done();
}

function decodeData(sealed: Uint8Array): { value: Uint8Array | null; version: number } {
  const r = new Reader(unseal(sealed));
  if (r.u8() !== FORMAT) throw new Malformed('unknown format');
  const kind = r.u8();
  const version = r.u64();
  if (version < 1) throw new Malformed('version 0');
  if (kind === KIND_DELETE) {
    r.end();
    return { value: null, version };
  }
  if (kind !== KIND_PUT) throw new Malformed(`unknown kind ${kind}`);
  const value = r.rest();
  if (value.byteLength > MAX_VALUE_BYTES) throw new Malformed('value larger than the limit');
  return { value, version };
}

function encodeGroup(g: LogGroup): Uint8Array {
  const keys = g.ops.map((op) => encoder.encode(op.key));
  let size = 1 + 8 + 8 + 4;
  g.ops.forEach((op, k) => {
    size += 1 + 8 + 4 + keys[k]!.byteLength + (op.kind === 'put' ? 4 + op.value.byteLength : 0);
  });
  const w = new Writer(size);
  w.u8(FORMAT);
  w.u64(g.seq);
  w.u64(g.epoch);
  w.u32(g.ops.length);
  g.ops.forEach((op, k) => {
    w.u8(op.kind === 'put' ? KIND_PUT : KIND_DELETE);
    w.u64(op.version);
    w.u32(keys[k]!.byteLength);
    w.bytes(keys[k]!);
    if (op.kind === 'put') {
      w.u32(op.value.byteLength);
      w.bytes(op.value);
    }
  });
  return w.done();
}

function decodeGroup(sealed: Uint8Array): LogGroup {
  const r = new Reader(unseal(sealed));
  if (r.u8() !== FORMAT) throw new Malformed('unknown format');
  const seq = r.u64();
  const epoch = r.u64();
  const count = r.u32();
  if (seq < 1 || epoch < 1) throw new Malformed('seq and epoch must be ≥ 1');
  if (count > MAX_OPS_PER_GROUP) throw new Malformed(`${count} ops`);
  const ops: LoggedOp[] = [];
  for (let k = 0; k < count; k++) {
    const kind = r.u8();
    const version = r.u64();
    if (version < 1) throw new Malformed(`op ${k}: version 0`);
    const keyLength = r.u32();
    if (keyLength > MAX_KEY_BYTES) throw new Malformed(`op ${k}: key longer than the limit`);
    const key = decodeUtf8(r.bytes(keyLength));
    if (kind === KIND_DELETE) {
      ops.push({ kind: 'delete', key, version });
    } else if (kind === KIND_PUT) {
      const valueLength = r.u32();
      if (valueLength > MAX_VALUE_BYTES) throw new Malformed(`op ${k}: value larger than the limit`);
      ops.push({ kind: 'put', key, value: r.bytes(valueLength), version });
    } else {
      throw new Malformed(`op ${k}: unknown kind ${kind}`);
    }
  }
  r.end();
  return { seq, epoch, ops };
}

function decodeUtf8(b: Uint8Array): string {
  try {
    return decoder.decode(b);
  } catch {
    throw new Malformed('key is not UTF-8');
  }
}

function decodeHard(b: Uint8Array): ReplicaHardState {
  let o: unknown;
  try {
    o = JSON.parse(decoder.decode(b));
  } catch {
    throw new Malformed('not UTF-8 JSON');
  }
  const h = o as { epoch?: unknown; expanding?: unknown };
  if (typeof o !== 'object' || o === null || !Number.isSafeInteger(h.epoch) || (h.epoch as number) < 0) {
    throw new Malformed('epoch must be a safe integer ≥ 0');
  }
  if (!Array.isArray(h.expanding) || !h.expanding.every((id) => typeof id === 'string' && id.length > 0 && id.length <= MAX_REPLICA_ID_LENGTH)) {
    throw new Malformed('expanding must be an array of replica ids');
  }
  return { epoch: h.epoch as number, expanding: [...(h.expanding as string[])] };
}

// ---------------------------------------------------------------------------------------------
// Input validation
// ---------------------------------------------------------------------------------------------

function checkShard(shard: unknown): asserts shard is number {
  if (typeof shard !== 'number' || !Number.isInteger(shard) || shard < 0 || shard > MAX_SHARD) {
    throw new InvalidShardInputError('shard', `must be an integer in [0, ${MAX_SHARD}], got ${String(shard)}`);
  }
}

function checkKey(key: unknown, field: string): asserts key is string {
  if (typeof key !== 'string') throw new InvalidShardInputError(field, 'must be a string');
  if (key.length > MAX_KEY_BYTES || Buffer.byteLength(key, 'utf8') > MAX_KEY_BYTES) {
    throw new InvalidShardInputError(field, `longer than ${MAX_KEY_BYTES} UTF-8 bytes`);
  }
  // A lone surrogate has no UTF-8 form: stored, it would read back as a different key (U+FFFD).
  if (hasLoneSurrogate(key)) throw new InvalidShardInputError(field, 'is not well-formed UTF-16 (lone surrogate)');
}

function checkValue(value: unknown, field: string): asserts value is Uint8Array {
  if (!(value instanceof Uint8Array)) throw new InvalidShardInputError(field, 'must be a Uint8Array');
  if (value.byteLength > MAX_VALUE_BYTES) throw new InvalidShardInputError(field, `larger than ${MAX_VALUE_BYTES} bytes`);
}

function checkCount(n: unknown, field: string, min: number): asserts n is number {
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < min) {
    throw new InvalidShardInputError(field, `must be a safe integer ≥ ${min}, got ${String(n)}`);
  }
}

function checkGroup(g: LogGroup, field: string): void {
  if (g === null || typeof g !== 'object') throw new InvalidShardInputError(field, 'must be a group');
  checkCount(g.seq, `${field}.seq`, 1);
  checkCount(g.epoch, `${field}.epoch`, 1);
  if (!Array.isArray(g.ops) || g.ops.length > MAX_OPS_PER_GROUP) {
    throw new InvalidShardInputError(`${field}.ops`, `must be an array of at most ${MAX_OPS_PER_GROUP} ops`);
  }
  g.ops.forEach((op, k) => {
    const f = `${field}.ops[${k}]`;
    if (op === null || typeof op !== 'object' || (op.kind !== 'put' && op.kind !== 'delete')) {
      throw new InvalidShardInputError(`${f}.kind`, "must be 'put' or 'delete'");
    }
    checkKey(op.key, `${f}.key`);
    checkCount(op.version, `${f}.version`, 1);
    if (op.kind === 'put') checkValue(op.value, `${f}.value`);
  });
}

function checkEntry(e: ShardEntry, field: string): void {
  if (e === null || typeof e !== 'object') throw new InvalidShardInputError(field, 'must be an entry');
  checkKey(e.key, `${field}.key`);
  if (e.value !== null) checkValue(e.value, `${field}.value`);
  checkCount(e.version, `${field}.version`, 1);
}

function entryBytes(key: string, value: Uint8Array | null): number {
  return key.length * 3 + (value === null ? 0 : value.byteLength) + 16;
}

// ---------------------------------------------------------------------------------------------
// The store
// ---------------------------------------------------------------------------------------------

interface ShardState {
  appliedSeq: number;
  appliedEpoch: number;
  /** Data generation (see the module comment). */
  gen: number;
  /** The log holds firstSeq..lastSeq (empty when firstSeq > lastSeq). */
  firstSeq: number;
  lastSeq: number;
  /** The snapshot being staged, if any. */
  staging: SnapshotWriter | null;
  /** A snapshot found half-received at open (its generation kept), until resumed or dropped. */
  resumable: StagingRecord | null;
  /** Tail of the per-shard write queue. */
  queue: Promise<unknown>;
}

function freshState(): ShardState {
  return { appliedSeq: 0, appliedEpoch: 0, gen: 0, firstSeq: 1, lastSeq: 0, staging: null, resumable: null, queue: Promise.resolve() };
}

export class ShardStore {
  readonly options: Readonly<ShardStoreOptions>;
  readonly #kv: KvStore;
  readonly #shards = new Map<number, ShardState>();
  readonly #repairs = new Map<number, ShardLogRepair>();

  private constructor(kv: KvStore, options: ShardStoreOptions) {
    this.#kv = kv;
    this.options = options;
  }

  /**
   * Opens the shard store in `kv` (a view of its own, e.g. `root.sublevel('shards')`): loads each
   * stored shard's log bounds, applied seq and data generation, and clears data left over from an
   * interrupted snapshot install or shard deletion.
   *
   * @throws StorageError CORRUPT when a key or an applied record cannot be read; ConfigError for bad options.
   */
  static async open(kv: KvStore, options: Partial<ShardStoreOptions> = {}): Promise<ShardStore> {
    const resolved = { ...DEFAULT_SHARD_STORE_OPTIONS, ...options };
    validateShardStoreOptions(resolved);
    const store = new ShardStore(kv, resolved);
    await store.#load();
    return store;
  }

  /** What `recover` cut from the shard's log because records were damaged (null when nothing); cleared by reading it. */
  takeRepair(shard: number): ShardLogRepair | null {
    const r = this.#repairs.get(shard) ?? null;
    this.#repairs.delete(shard);
    return r;
  }

  /** The shards with anything stored, ascending. */
  shards(): number[] {
    return [...this.#shards.keys()].sort((a, b) => a - b);
  }

  /** Highest group applied to the shard's data by a completed batch (0 for none). */
  appliedSeq(shard: number): number {
    checkShard(shard);
    return this.#shards.get(shard)?.appliedSeq ?? 0;
  }

  /** The op-log groups the shard holds. */
  logBounds(shard: number): LogBounds {
    checkShard(shard);
    const s = this.#shards.get(shard) ?? freshState();
    return { firstSeq: s.firstSeq, lastSeq: s.lastSeq };
  }

  /**
   * Everything the core needs at start (`new ReplicaCore({ recovered })`): exactly what earlier
   * Readys and snapshot installs persisted.
   *
   * @throws StorageError CORRUPT when a record cannot be read or the log has a gap.
   */
  async recover(shard: number): Promise<RecoveredReplicaState> {
    checkShard(shard);
    const [hardBytes, appliedBytes] = await this.#kv.getMany([shardKeys.hard(shard), shardKeys.applied(shard)]);
    const hard = hardBytes === undefined ? { epoch: 0, expanding: [] } : this.#decode(shardKeys.hard(shard), hardBytes, decodeHard);
    const applied =
      appliedBytes === undefined ? { seq: 0, epoch: 0, gen: 0 } : this.#decode(shardKeys.applied(shard), appliedBytes, decodeApplied);
    let log: LogGroup[] = [];
    // A damaged group (bad checksum or shape) at or below the applied seq is history: the log is
    // cut after it (its data was applied). Above, it ends the log: it and every later group go,
    // and the replica reports the shorter log, so it is caught up again rather than trusted.
    const drop: string[] = [];
    let tailCut: { seq: number; problem: string } | null = null;
    let prefixCut: { seq: number; problem: string } | null = null;
    for await (const [key, value] of this.#kv.iterate({ gt: shardKeys.log(shard, 0), lt: shardKeys.prefix(shard) + LOG_END })) {
      const seq = this.#logSeqOf(key);
      if (tailCut !== null) {
        drop.push(key);
        continue;
      }
      let g: LogGroup;
      try {
        g = decodeGroup(value);
        if (g.seq !== seq) throw new Malformed(`holds group ${g.seq}`);
      } catch (error) {
        if (!(error instanceof Malformed)) throw error;
        drop.push(key);
        if (seq > applied.seq) {
          tailCut = { seq, problem: error.message };
        } else {
          prefixCut = { seq, problem: error.message };
          for (const earlier of log) drop.push(shardKeys.log(shard, earlier.seq));
          log = [];
        }
        continue;
      }
      const expect = log.length === 0 ? seq : log[log.length - 1]!.seq + 1;
      if (g.seq !== expect) this.#corrupt(key, `group ${g.seq} where ${expect} belongs (a gap)`);
      log.push(g);
    }
    if (drop.length > 0) {
      await this.#kv.batch(drop.map((key) => ({ type: 'del' as const, key })), { sync: true });
      const s = this.#shards.get(shard);
      if (s !== undefined) {
        s.firstSeq = log.length > 0 ? log[0]!.seq : applied.seq + 1;
        s.lastSeq = log.length > 0 ? log[log.length - 1]!.seq : applied.seq;
      }
      const cut = tailCut ?? prefixCut!;
      this.#repairs.set(shard, {
        kind: tailCut !== null ? 'tail' : 'prefix',
        seq: cut.seq,
        problem: cut.problem,
        dropped: drop.length,
      });
    }
    if (log.length > 0) {
      const first = log[0]!.seq;
      const last = log[log.length - 1]!.seq;
      if (first > applied.seq + 1 || last < applied.seq) {
        this.#corrupt(shardKeys.prefix(shard), `log ${first}..${last} does not cover applied seq ${applied.seq} + 1`);
      }
    }
    return { epoch: hard.epoch, expanding: hard.expanding, appliedSeq: applied.seq, appliedEpoch: applied.epoch, log };
  }

  /**
   * Persists the durable part of a Ready in ONE atomic batch, in contract order: hard state, log
   * truncation after `truncateLogAfterSeq`, log appends, the `apply` groups (puts, and deletes as
   * tombstones keeping their version) with the last one's seq and epoch, then the trim through
   * `trimLogThroughSeq`. Messages, answers and the rest of the Ready are the shell's business.
   *
   * @throws InvalidShardInputError for a malformed Ready (nothing written): a bad group, an append
   *   that leaves a gap, an apply that does not follow the applied seq.
   */
  async persistReady(
    shard: number,
    rd: Pick<ReplicationReady, 'hardState' | 'truncateLogAfterSeq' | 'appendLog' | 'apply' | 'trimLogThroughSeq'>,
    opts: { sync: boolean },
  ): Promise<void> {
    checkShard(shard);
    if (rd === null || typeof rd !== 'object') throw new InvalidShardInputError('rd', 'must be a Ready');
    if (!Array.isArray(rd.appendLog)) throw new InvalidShardInputError('rd.appendLog', 'must be an array');
    if (!Array.isArray(rd.apply)) throw new InvalidShardInputError('rd.apply', 'must be an array');
    if (rd.hardState !== undefined) {
      const h = rd.hardState;
      checkCount(h?.epoch, 'rd.hardState.epoch', 0);
      if (!Array.isArray(h.expanding) || !h.expanding.every((id) => typeof id === 'string' && id.length > 0 && id.length <= MAX_REPLICA_ID_LENGTH)) {
        throw new InvalidShardInputError('rd.hardState.expanding', 'must be an array of replica ids');
      }
    }
    if (rd.truncateLogAfterSeq !== undefined) checkCount(rd.truncateLogAfterSeq, 'rd.truncateLogAfterSeq', 0);
    if (rd.trimLogThroughSeq !== undefined) checkCount(rd.trimLogThroughSeq, 'rd.trimLogThroughSeq', 0);
    rd.appendLog.forEach((g, k) => checkGroup(g, `rd.appendLog[${k}]`));
    rd.apply.forEach((g, k) => checkGroup(g, `rd.apply[${k}]`));
    await this.#exclusive(shard, async (s) => {
      const ops: BatchOp[] = [];
      const applied: LoggedOp[] = [];
      let { firstSeq, lastSeq, appliedSeq, appliedEpoch } = s;
      if (rd.hardState !== undefined) {
        const text = JSON.stringify({ epoch: rd.hardState.epoch, expanding: rd.hardState.expanding });
        ops.push({ type: 'put', key: shardKeys.hard(shard), value: encoder.encode(text) });
      }
      if (rd.truncateLogAfterSeq !== undefined && rd.truncateLogAfterSeq < lastSeq) {
        const t = rd.truncateLogAfterSeq;
        for (let seq = Math.max(firstSeq, t + 1); seq <= lastSeq; seq++) ops.push({ type: 'del', key: shardKeys.log(shard, seq) });
        lastSeq = t;
        firstSeq = Math.min(firstSeq, t + 1);
      }
      rd.appendLog.forEach((g, k) => {
        if (g.seq !== lastSeq + 1) throw new InvalidShardInputError(`rd.appendLog[${k}].seq`, `${g.seq} does not follow the log's last seq ${lastSeq}`);
        ops.push({ type: 'put', key: shardKeys.log(shard, g.seq), value: encodeGroup(g) });
        lastSeq = g.seq;
      });
      if (rd.apply.length > 0) {
        // The last op on a key wins: write each key once.
        const latest = new Map<string, LoggedOp>();
        rd.apply.forEach((g, k) => {
          if (g.seq !== appliedSeq + 1) throw new InvalidShardInputError(`rd.apply[${k}].seq`, `${g.seq} does not follow the applied seq ${appliedSeq}`);
          for (const op of g.ops) {
            latest.delete(op.key);
            latest.set(op.key, op);
          }
          appliedSeq = g.seq;
          appliedEpoch = g.epoch;
        });
        for (const op of latest.values()) {
          applied.push(op);
          ops.push({ type: 'put', key: shardKeys.data(shard, s.gen, op.key), value: encodeData(op.kind === 'put' ? op.value : null, op.version) });
        }
        ops.push({ type: 'put', key: shardKeys.applied(shard), value: encodeApplied({ seq: appliedSeq, epoch: appliedEpoch, gen: s.gen }) });
      }
      if (rd.trimLogThroughSeq !== undefined && rd.trimLogThroughSeq >= firstSeq) {
        const t = rd.trimLogThroughSeq;
        for (let seq = firstSeq; seq <= Math.min(t, lastSeq); seq++) ops.push({ type: 'del', key: shardKeys.log(shard, seq) });
        firstSeq = t + 1;
        lastSeq = Math.max(lastSeq, t);
      }
      if (ops.length === 0) return;
      await this.#commit(ops, opts.sync);
      Object.assign(s, { firstSeq, lastSeq, appliedSeq, appliedEpoch });
      const filter = this.#filters.get(shard);
      for (const op of applied) {
        this.#remember(shard, s.gen, op.key, op.version, op.kind === 'put');
        if (filter !== undefined && filter.gen === s.gen) filter.add(op.key);
      }
    });
  }

  /**
   * Reads one key of the shard's applied data, for client reads and for the `durable` version and
   * `durableAtSeq` that `ReplicaCore.write` needs (see the module comment).
   */
  async readValue(shard: number, key: string): Promise<ShardRead> {
    checkShard(shard);
    checkKey(key, 'key');
    // A snapshot install switches the generation at most a few times during one read; retry then.
    for (let attempt = 0; ; attempt++) {
      const s = this.#shards.get(shard);
      const gen = s?.gen ?? 0;
      const durableAtSeq = s?.appliedSeq ?? 0;
      const dataKey = shardKeys.data(shard, gen, key);
      const bytes = await this.#kv.get(dataKey);
      if ((this.#shards.get(shard)?.gen ?? 0) !== gen && attempt < 8) continue;
      if (bytes === undefined) return { value: null, version: 0, present: false, durableAtSeq };
      const d = this.#decode(dataKey, bytes, decodeData);
      return { value: d.value, version: d.version, present: d.value !== null, durableAtSeq };
    }
  }

  /**
   * The applied version of one key, for a write's `durable` version and `durableAtSeq`: from
   * memory when this peer applied or read the key lately (a put then reads nothing from disk),
   * else from disk like {@link readValue}.
   */
  readVersion(shard: number, key: string): Promise<Omit<ShardRead, 'value'>> | Omit<ShardRead, 'value'> {
    const s = this.#shards.get(shard);
    const versionOf = (r: ShardRead): Omit<ShardRead, 'value'> => ({ version: r.version, present: r.present, durableAtSeq: r.durableAtSeq });
    if (s === undefined) return this.readValue(shard, key).then(versionOf);
    const m = this.#versions.get(shard);
    const hit = m?.get(key);
    if (hit !== undefined && hit.gen === s.gen) {
      // Most recently used last.
      m!.delete(key);
      m!.set(key, hit);
      return { version: hit.version, present: hit.present, durableAtSeq: s.appliedSeq };
    }
    // A key this shard never held (the filter of its keys is built and says no): version 0.
    const f = this.#filters.get(shard);
    if (f !== undefined && f.complete && f.gen === s.gen && !f.mightHold(key)) {
      this.counters.versionReadsSaved++;
      return { version: 0, present: false, durableAtSeq: s.appliedSeq };
    }
    if (f === undefined) this.#buildFilter(shard, s.gen);
    const gen = s.gen;
    return this.readValue(shard, key).then((r) => {
      // Remember it only if nothing was applied or installed meanwhile (else it may be older than memory's).
      if (this.#shards.get(shard) === s && s.gen === gen && s.appliedSeq === r.durableAtSeq && !this.#versions.get(shard)?.has(key)) this.#remember(shard, gen, key, r.version, r.present);
      return versionOf(r);
    });
  }

  /** Where the shard's key filter stands (status and tests). */
  keyFilterState(shard: number): 'none' | 'building' | 'complete' | 'off' {
    const f = this.#filters.get(shard);
    return f === undefined ? 'none' : f.disabled ? 'off' : f.complete ? 'complete' : 'building';
  }

  /** What the in-memory shortcuts saved: version reads answered by the key filter. */
  readonly counters = { versionReadsSaved: 0 };

  /** Per shard: a Bloom filter of every key its current generation holds, once a scan built it. */
  readonly #filters = new Map<number, KeyFilter>();

  /**
   * Builds the shard's key filter in the background: every key applied from now on goes in, and
   * a scan of the generation's keys adds what was there before; complete when the scan ends with
   * the generation unchanged. Shards over KEY_FILTER_SCAN_MAX_BYTES, or with more keys than the
   * filter holds well, keep reading from disk.
   */
  #buildFilter(shard: number, gen: number): void {
    const f = new KeyFilter(gen);
    this.#filters.set(shard, f);
    const from = shardKeys.dataGen(shard, gen);
    const to = shardKeys.dataGenEnd(shard, gen);
    void (async () => {
      const size = await this.#kv.approximateBytes(from, to);
      if (size !== null && size > KEY_FILTER_SCAN_MAX_BYTES) return f.disable();
      for await (const [k] of this.#kv.iterate({ gte: from, lt: to })) {
        if (this.#filters.get(shard) !== f || f.disabled) return;
        f.add(k.slice(from.length));
      }
      if (this.#filters.get(shard) === f && this.#shards.get(shard)?.gen === gen && !f.disabled) f.complete = true;
    })().catch(() => f.disable());
  }

  /** Per shard, key → applied version (an LRU over all shards of VERSION_CACHE_ENTRIES). */
  readonly #versions = new Map<number, Map<string, { gen: number; version: number; present: boolean }>>();
  #versionCount = 0;

  #remember(shard: number, gen: number, key: string, version: number, present: boolean): void {
    let m = this.#versions.get(shard);
    if (m === undefined) this.#versions.set(shard, (m = new Map()));
    if (m.delete(key)) this.#versionCount--;
    m.set(key, { gen, version, present });
    this.#versionCount++;
    // Over the bound: drop the oldest entries of this shard (cheap, and a busy shard refills).
    for (let i = 0; i < 16 && this.#versionCount > VERSION_CACHE_ENTRIES && m.size > 0; i++) {
      m.delete(m.keys().next().value as string);
      this.#versionCount--;
    }
  }

  /** The shard's data changed other than by applying groups (install, deletion): forget it. */
  #forgetVersions(shard: number): void {
    this.#filters.delete(shard);
    const m = this.#versions.get(shard);
    if (m === undefined) return;
    this.#versionCount -= m.size;
    this.#versions.delete(shard);
  }

  /**
   * Up to `maxGroups` op-log groups after `afterSeq` (contiguous, fewer when the log ends; at least
   * one when there is one, then up to about `maxBytes`), read from one consistent view.
   *
   * @throws LogTrimmedError when the group after `afterSeq` was trimmed: send a snapshot instead.
   */
  async readLog(shard: number, afterSeq: number, maxGroups: number, maxBytes = DEFAULT_SHARD_STORE_OPTIONS.snapshotBatchBytes): Promise<LogGroup[]> {
    checkShard(shard);
    checkCount(afterSeq, 'afterSeq', 0);
    checkCount(maxGroups, 'maxGroups', 1);
    checkCount(maxBytes, 'maxBytes', 1);
    const out: LogGroup[] = [];
    let bytes = 0;
    for await (const [key, value] of this.#kv.iterate({ gt: shardKeys.log(shard, afterSeq), lt: shardKeys.prefix(shard) + LOG_END })) {
      const seq = this.#logSeqOf(key);
      if (seq !== afterSeq + 1 + out.length) {
        if (out.length === 0) throw new LogTrimmedError(shard, afterSeq, seq);
        this.#corrupt(key, `group ${seq} where ${afterSeq + 1 + out.length} belongs (a gap)`);
      }
      if (out.length > 0 && bytes + value.byteLength > maxBytes) break;
      const g = this.#decode(key, value, decodeGroup);
      if (g.seq !== seq) this.#corrupt(key, `holds group ${g.seq}`);
      out.push(g);
      bytes += value.byteLength;
      if (out.length >= maxGroups) break;
    }
    if (out.length === 0) {
      const s = this.#shards.get(shard);
      if (s !== undefined && afterSeq < s.firstSeq - 1) throw new LogTrimmedError(shard, afterSeq, s.firstSeq);
    }
    return out;
  }

  /**
   * A consistent copy of the shard's applied data with its `{ seq, epoch }`, read from one storage
   * snapshot (later writes do not show), in bounded batches (`batchBytes`: about this many bytes
   * per batch instead of the store's snapshotBatchBytes). Send it as the snapshot stream.
   * Iterate `batches` to the end, break out of the loop, or call `close()`.
   */
  async snapshotData(shard: number, opts: { batchBytes?: number } = {}): Promise<ShardSnapshotReader> {
    checkShard(shard);
    const batchBytes = opts.batchBytes ?? this.options.snapshotBatchBytes;
    if (!Number.isSafeInteger(batchBytes) || batchBytes < 1) throw new InvalidShardInputError('batchBytes', 'must be an integer ≥ 1');
    const prefix = shardKeys.prefix(shard);
    const it = this.#kv.iterate({ gte: prefix + APPLIED, lt: prefix + DATA_END })[Symbol.asyncIterator]();
    let first: IteratorResult<[string, Uint8Array]>;
    try {
      first = await it.next();
    } catch (error) {
      await it.return?.();
      throw error;
    }
    let applied: AppliedRecord = { seq: 0, epoch: 0, gen: 0 };
    let pending: [string, Uint8Array] | undefined;
    if (!first.done) {
      const [key, value] = first.value;
      if (key === prefix + APPLIED) {
        try {
          applied = this.#decode(key, value, decodeApplied);
        } catch (error) {
          await it.return?.();
          throw error;
        }
      } else {
        pending = first.value;
      }
    }
    const genPrefix = shardKeys.dataGen(shard, applied.gen);
    const { snapshotBatchEntries } = this.options;
    const snapshotBatchBytes = batchBytes;
    let closed = first.done === true;
    const close = async (): Promise<void> => {
      if (closed) return;
      closed = true;
      await it.return?.();
    };
    const decode = (key: string, value: Uint8Array): ShardEntry => ({ key: key.slice(genPrefix.length), ...this.#decode(key, value, decodeData) });
    async function* batches(): AsyncGenerator<ShardEntry[]> {
      try {
        let batch: ShardEntry[] = [];
        let bytes = 0;
        for (;;) {
          let entry: [string, Uint8Array];
          if (pending !== undefined) {
            entry = pending;
            pending = undefined;
          } else {
            if (closed) break;
            const r = await it.next();
            if (r.done) break;
            entry = r.value;
          }
          const [key, value] = entry;
          if (key < genPrefix) continue; // an older generation not cleared yet
          if (!key.startsWith(genPrefix)) break; // a staging generation: past our data
          const e = decode(key, value);
          batch.push(e);
          bytes += entryBytes(e.key, e.value);
          if (batch.length >= snapshotBatchEntries || bytes >= snapshotBatchBytes) {
            yield batch;
            batch = [];
            bytes = 0;
          }
        }
        if (batch.length > 0) yield batch;
      } finally {
        await close();
      }
    }
    return { seq: applied.seq, epoch: applied.epoch, batches: batches(), close };
  }

  /**
   * Starts receiving a snapshot of `shard` into a staging generation: reads and Readys of the
   * shard go on meanwhile and see the old data. Call `commit` once the core's `installSnapshot`
   * returned true, else `abort` (also when the stream fails: one snapshot per shard at a time).
   *
   * @throws InvalidShardInputError (`shard`) when a snapshot of the shard is already being received.
   */
  async beginSnapshot(shard: number, resume?: Omit<StagedSnapshot, 'chunks' | 'bytes'>): Promise<ShardSnapshotWriter> {
    checkShard(shard);
    const s = this.#state(shard);
    if (s.staging !== null) throw new InvalidShardInputError('shard', `a snapshot of shard ${shard} is already being received`);
    const r = s.resumable;
    if (resume !== undefined && r !== null && r.id === resume.id && r.from === resume.from && r.seq === resume.seq && r.seqEpoch === resume.seqEpoch) {
      // The same snapshot again, from the same sender: go on after the chunks already staged.
      s.resumable = null;
      const writer = new SnapshotWriter(this, shard, r.gen, r);
      s.staging = writer;
      return writer;
    }
    const gen = (s.gen + 1) % GEN_SPACE;
    const writer = new SnapshotWriter(this, shard, gen, resume === undefined ? null : { ...resume, gen, chunks: 0, bytes: 0 });
    s.staging = writer;
    if (r !== null) {
      s.resumable = null;
      await this.#clearGen(shard, r.gen);
    }
    await this.#clearGen(shard, gen);
    if (writer.record !== null) await this.#kv.put(shardKeys.staging(shard), encodeStaging(writer.record), { sync: false });
    else await this.#kv.del(shardKeys.staging(shard));
    return writer;
  }

  /** About how many bytes the shard's data takes on disk (null: unknown). For progress reports. */
  async approximateDataBytes(shard: number): Promise<number | null> {
    checkShard(shard);
    const gen = this.#shards.get(shard)?.gen ?? 0;
    return this.#kv.approximateBytes(shardKeys.dataGen(shard, gen), shardKeys.dataGenEnd(shard, gen));
  }

  /**
   * The snapshot of `shard` being received or left half-received (by a stream that broke, or
   * before a restart), with the chunks staged: what a sender may resume after. Null when none.
   */
  stagedSnapshot(shard: number): StagedSnapshot | null {
    checkShard(shard);
    const s = this.#shards.get(shard);
    const r = s?.staging?.record ?? s?.resumable ?? null;
    return r === null ? null : { id: r.id, from: r.from, seq: r.seq, seqEpoch: r.seqEpoch, chunks: r.chunks, bytes: r.bytes };
  }

  /**
   * Replaces the shard's data with `batches`, empties its op log and stores `appliedSeq = seq,
   * appliedEpoch = epoch`, atomically (see {@link beginSnapshot}; memory is bounded by one batch).
   */
  async installSnapshot(
    shard: number,
    batches: AsyncIterable<readonly ShardEntry[]> | Iterable<readonly ShardEntry[]>,
    meta: { seq: number; epoch: number },
    opts: { sync: boolean },
  ): Promise<void> {
    const writer = await this.beginSnapshot(shard);
    try {
      for await (const batch of batches) await writer.write(batch);
      await writer.commit(meta, opts);
    } finally {
      await writer.abort();
    }
  }

  /**
   * Deletes the shard's data and op log (its role became `removed`). The hard state stays: the
   * highest accepted epoch fences stale primaries and must never go back, even for a replica that
   * is added again later (the same reason a delete keeps a key's version). The log and the
   * applied record go in one batch together with a switch to an empty data generation; the old
   * data is cleared after. A snapshot being received is aborted.
   */
  async deleteShard(shard: number, opts: { sync: boolean }): Promise<void> {
    checkShard(shard);
    const staging = this.#shards.get(shard)?.staging;
    if (staging != null) await staging.abort();
    await this.#exclusive(shard, async (s) => {
      const ops: BatchOp[] = [{ type: 'del', key: shardKeys.staging(shard) }];
      s.resumable = null;
      for (let seq = s.firstSeq; seq <= s.lastSeq; seq++) ops.push({ type: 'del', key: shardKeys.log(shard, seq) });
      const gen = (s.gen + 1) % GEN_SPACE;
      ops.push({ type: 'put', key: shardKeys.applied(shard), value: encodeApplied({ seq: 0, epoch: 0, gen }) });
      await this.#kv.batch(ops, { sync: opts.sync });
      Object.assign(s, { gen, appliedSeq: 0, appliedEpoch: 0, firstSeq: 1, lastSeq: 0 });
      const prefix = shardKeys.prefix(shard);
      await this.#kv.clear({ gte: prefix + DATA, lt: prefix + DATA_END });
      // Every generation is empty now: back to "no applied record", generation 0.
      await this.#kv.del(shardKeys.applied(shard), { sync: opts.sync });
      s.gen = 0;
      // What memory learnt of this shard at any generation in between is gone with the data.
      this.#forgetVersions(shard);
    });
  }

  // -------------------------------------------------------------------------------------------
  // Internals (the SnapshotWriter uses the ones marked internal)
  // -------------------------------------------------------------------------------------------

  /** @internal */
  async writeStaged(shard: number, writer: SnapshotWriter, entries: readonly ShardEntry[], chunk?: number): Promise<void> {
    if (!Array.isArray(entries)) throw new InvalidShardInputError('entries', 'must be an array');
    entries.forEach((e, k) => checkEntry(e, `entries[${k}]`));
    const rec = writer.record;
    if (chunk !== undefined) {
      if (rec === null) throw new InvalidShardInputError('chunk', 'this snapshot was begun without an id: it has no chunks');
      checkCount(chunk, 'chunk', 0);
      if (chunk < rec.chunks) return; // staged before (its acknowledgement was lost): puts are idempotent
      if (chunk > rec.chunks) throw new InvalidShardInputError('chunk', `chunk ${chunk} does not follow the ${rec.chunks} staged`);
    }
    const { snapshotBatchEntries, snapshotBatchBytes } = this.options;
    let ops: BatchOp[] = [];
    let bytes = 0;
    let total = 0;
    for (const e of entries) {
      if (this.#shards.get(shard)?.staging !== writer) throw new InvalidShardInputError('snapshot', 'the snapshot was aborted or committed');
      ops.push({ type: 'put', key: shardKeys.data(shard, writer.gen, e.key), value: encodeData(e.value, e.version) });
      bytes += entryBytes(e.key, e.value);
      total += entryBytes(e.key, e.value);
      if (ops.length >= snapshotBatchEntries || bytes >= snapshotBatchBytes) {
        await this.#kv.batch(ops, { sync: false });
        ops = [];
        bytes = 0;
      }
    }
    if (this.#shards.get(shard)?.staging !== writer) throw new InvalidShardInputError('snapshot', 'the snapshot was aborted or committed');
    let next: StagingRecord | null = null;
    if (chunk !== undefined && rec !== null) {
      // The chunk counts as staged in the same batch as its last entries.
      next = { ...rec, chunks: chunk + 1, bytes: rec.bytes + total };
      ops.push({ type: 'put', key: shardKeys.staging(shard), value: encodeStaging(next) });
    }
    if (ops.length > 0) await this.#kv.batch(ops, { sync: false });
    if (next !== null) writer.record = next;
  }

  /** @internal */
  async commitStaged(shard: number, writer: SnapshotWriter, meta: { seq: number; epoch: number }, opts: { sync: boolean }): Promise<void> {
    checkCount(meta?.seq, 'meta.seq', 1);
    checkCount(meta.epoch, 'meta.epoch', 1);
    await this.#exclusive(shard, async (s) => {
      if (s.staging !== writer) throw new InvalidShardInputError('snapshot', 'the snapshot was aborted or committed');
      const ops: BatchOp[] = [];
      for (let seq = s.firstSeq; seq <= s.lastSeq; seq++) ops.push({ type: 'del', key: shardKeys.log(shard, seq) });
      ops.push({ type: 'put', key: shardKeys.applied(shard), value: encodeApplied({ seq: meta.seq, epoch: meta.epoch, gen: writer.gen }) });
      ops.push({ type: 'del', key: shardKeys.staging(shard) });
      await this.#kv.batch(ops, { sync: opts.sync });
      const oldGen = s.gen;
      this.#forgetVersions(shard);
      Object.assign(s, { gen: writer.gen, appliedSeq: meta.seq, appliedEpoch: meta.epoch, firstSeq: meta.seq + 1, lastSeq: meta.seq, staging: null });
      await this.#clearGen(shard, oldGen);
    });
  }

  /** @internal */
  async abortStaged(shard: number, writer: SnapshotWriter): Promise<void> {
    const s = this.#shards.get(shard);
    if (s === undefined || s.staging !== writer) return;
    s.staging = null;
    await this.#clearGen(shard, writer.gen);
    await this.#kv.del(shardKeys.staging(shard));
  }

  #state(shard: number): ShardState {
    let s = this.#shards.get(shard);
    if (s === undefined) {
      s = freshState();
      this.#shards.set(shard, s);
    }
    return s;
  }

  /**
   * Group commit across shards (one storage writer per peer): a Ready's operations join the batch
   * being gathered; one batch is written at a time, and the next takes every Ready that arrived
   * meanwhile, from any shard (one LevelDB write and, when any asks for it, one fsync for all).
   * An idle writer writes at once, so a lone write waits for nothing. Order holds: a shard's next
   * Ready waits for its previous one (`#exclusive`), so it lands in a later batch.
   *
   * `#batches`: waiting to be written, oldest first; the last one gathers until full or written.
   */
  readonly #batches: Array<{ ops: BatchOp[]; bytes: number; sync: boolean; done: Promise<void>; resolve: () => void; reject: (e: unknown) => void }> = [];
  #writing = false;

  #commit(ops: BatchOp[], sync: boolean): Promise<void> {
    let p = this.#batches[this.#batches.length - 1];
    if (p === undefined || p.bytes >= GROUP_COMMIT_MAX_BYTES) {
      let resolve!: () => void;
      let reject!: (e: unknown) => void;
      const done = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      p = { ops: [], bytes: 0, sync: false, done, resolve, reject };
      this.#batches.push(p);
    }
    for (const op of ops) {
      p.ops.push(op);
      p.bytes += op.key.length + (op.type === 'put' ? op.value.byteLength : 0);
    }
    p.sync ||= sync;
    if (!this.#writing) void this.#writeLoop();
    return p.done;
  }

  async #writeLoop(): Promise<void> {
    this.#writing = true;
    try {
      for (let i = 0; i < 1_000_000 && this.#batches.length > 0; i++) {
        const p = this.#batches.shift()!;
        try {
          await this.#kv.batch(p.ops, { sync: p.sync });
          p.resolve();
        } catch (err) {
          p.reject(err);
        }
      }
    } finally {
      this.#writing = false;
      if (this.#batches.length > 0) void this.#writeLoop();
    }
  }

  /** Runs `fn` after every earlier write of the shard has finished (success or not). */
  async #exclusive<T>(shard: number, fn: (s: ShardState) => Promise<T>): Promise<T> {
    const s = this.#state(shard);
    const run = s.queue.then(() => fn(s));
    s.queue = run.catch(() => {});
    return run;
  }

  async #clearGen(shard: number, gen: number): Promise<void> {
    await this.#kv.clear({ gte: shardKeys.dataGen(shard, gen), lt: shardKeys.dataGenEnd(shard, gen) });
  }

  async #first(range: { gt?: string; gte?: string; lt: string; reverse?: boolean }): Promise<string | undefined> {
    for await (const [key] of this.#kv.iterate({ ...range, limit: 1 })) return key;
    return undefined;
  }

  async #load(): Promise<void> {
    let cursor = '';
    for (;;) {
      const key = await this.#first({ gte: cursor, lt: '~' });
      if (key === undefined) return;
      const prefix = key.slice(0, 4);
      if (!/^[0-9a-f]{4}$/.test(prefix) || parseInt(prefix, 16) > MAX_SHARD) this.#corrupt(key, 'not a shard store key');
      const shard = parseInt(prefix, 16);
      const s = freshState();
      const appliedBytes = await this.#kv.get(shardKeys.applied(shard));
      if (appliedBytes !== undefined) {
        const a = this.#decode(shardKeys.applied(shard), appliedBytes, decodeApplied);
        Object.assign(s, { appliedSeq: a.seq, appliedEpoch: a.epoch, gen: a.gen });
      }
      const firstLog = await this.#first({ gt: shardKeys.log(shard, 0), lt: prefix + LOG_END });
      if (firstLog === undefined) {
        s.firstSeq = s.appliedSeq + 1;
        s.lastSeq = s.appliedSeq;
      } else {
        s.firstSeq = this.#logSeqOf(firstLog);
        s.lastSeq = this.#logSeqOf((await this.#first({ gt: shardKeys.log(shard, 0), lt: prefix + LOG_END, reverse: true }))!);
      }
      // A snapshot being received when the peer stopped: kept for a resume (a damaged record is
      // only a lost head start: the snapshot is received again).
      const stagingBytes = await this.#kv.get(shardKeys.staging(shard));
      if (stagingBytes !== undefined) {
        try {
          const r = decodeStaging(stagingBytes);
          if (r.gen !== s.gen && r.chunks > 0) s.resumable = r;
        } catch (error) {
          if (!(error instanceof Malformed)) throw error;
        }
        if (s.resumable === null) await this.#kv.del(shardKeys.staging(shard));
      }
      // Data of other generations: an interrupted snapshot install or shard deletion.
      const keep = s.resumable === null ? [s.gen] : [s.gen, s.resumable.gen].sort((a, b) => a - b);
      let from = prefix + DATA;
      for (const gen of keep) {
        await this.#kv.clear({ gte: from, lt: shardKeys.dataGen(shard, gen) });
        from = shardKeys.dataGenEnd(shard, gen);
      }
      await this.#kv.clear({ gte: from, lt: prefix + DATA_END });
      this.#shards.set(shard, s);
      if (shard === MAX_SHARD) return;
      cursor = shardKeys.prefix(shard + 1);
    }
  }

  #logSeqOf(key: string): number {
    const digits = key.slice(5);
    if (!/^[0-9a-f]{16}$/.test(digits)) this.#corrupt(key, 'not a log key');
    const seq = parseInt(digits, 16);
    if (!Number.isSafeInteger(seq) || seq < 1) this.#corrupt(key, 'log seq out of range');
    return seq;
  }

  #decode<T>(key: string, bytes: Uint8Array, decode: (b: Uint8Array) => T): T {
    try {
      return decode(bytes);
    } catch (error) {
      if (error instanceof Malformed) this.#corrupt(key, error.message, error);
      throw error;
    }
  }

  #corrupt(key: string, problem: string, cause?: unknown): never {
    const loc = this.#kv.location;
    throw new StorageError('CORRUPT', loc, `shard store in ${loc}: record ${JSON.stringify(key)} is unreadable: ${problem}`, cause);
  }
}

/** A snapshot being staged; see {@link ShardStore.beginSnapshot}. */
class SnapshotWriter implements ShardSnapshotWriter {
  constructor(
    private readonly store: ShardStore,
    readonly shard: number,
    readonly gen: number,
    /** @internal What is staged (null for a snapshot begun without an id). */
    public record: StagingRecord | null,
  ) {}

  get chunks(): number {
    return this.record?.chunks ?? 0;
  }

  write(entries: readonly ShardEntry[]): Promise<void> {
    return this.store.writeStaged(this.shard, this, entries);
  }

  writeChunk(chunk: number, entries: readonly ShardEntry[]): Promise<void> {
    return this.store.writeStaged(this.shard, this, entries, chunk);
  }

  commit(meta: { seq: number; epoch: number }, opts: { sync: boolean }): Promise<void> {
    return this.store.commitStaged(this.shard, this, meta, opts);
  }

  abort(): Promise<void> {
    return this.store.abortStaged(this.shard, this);
  }
}

/** A Bloom filter of a shard's keys (7 probes, FNV-1a double hashing). */
class KeyFilter {
  readonly bits = new Uint8Array(KEY_FILTER_BITS / 8);
  count = 0;
  complete = false;
  disabled = false;
  constructor(readonly gen: number) {}

  add(key: string): void {
    if (this.disabled) return;
    if (++this.count > KEY_FILTER_MAX_KEYS) return this.disable();
    const [h1, h2] = hashes(key);
    for (let i = 0; i < 7; i++) {
      const b = (h1 + i * h2) & (KEY_FILTER_BITS - 1);
      this.bits[b >>> 3]! |= 1 << (b & 7);
    }
  }

  mightHold(key: string): boolean {
    if (this.disabled) return true;
    const [h1, h2] = hashes(key);
    for (let i = 0; i < 7; i++) {
      const b = (h1 + i * h2) & (KEY_FILTER_BITS - 1);
      if ((this.bits[b >>> 3]! & (1 << (b & 7))) === 0) return false;
    }
    return true;
  }

  disable(): void {
    this.disabled = true;
    this.complete = false;
  }
}

function hashes(key: string): [number, number] {
  let a = 0x811c9dc5;
  let b = 0x01000193 ^ 0x5bd1e995;
  for (let i = 0; i < key.length; i++) {
    const c = key.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x5bd1e995);
  }
  return [a >>> 0, (b >>> 0) | 1];
}
