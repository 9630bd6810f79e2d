/**
 * The {@link KvStore} implementation over abstract-level 3 databases: classic-level (LevelDB) on
 * disk and memory-level in memory.
 *
 * Layout. Each view (the root store and every sublevel) is an abstract-level sublevel "node";
 * the view's own entries live in the node's child sublevel `_`, and a sublevel named `x` is the
 * node's child sublevel `x`. With the default `!` separator, root key `k` is stored as `!_!k` and
 * key `k` of sublevel `raft` as `!raft!!_!k`. Because sublevel names are `[a-z0-9-]`, the name `_`
 * never collides with a user's, and a view's `iterate` and `clear` never reach into its
 * sublevels' entries (with plain abstract-level sublevels, the parent's range would include them).
 *
 * Lock behaviour of classic-level 3.0 (tested in test/unit/storage-contract.test.ts): LevelDB
 * takes an exclusive `fcntl` lock on `db/LOCK`, and also refuses a second open of the same
 * directory from the same process. Either way `db.open()` rejects with code
 * `LEVEL_DATABASE_NOT_OPEN` whose `cause` has code `LEVEL_LOCKED` ("IO error: lock .../LOCK:
 * already held by process" in-process, "... Resource temporarily unavailable" across processes).
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ClassicLevel } from 'classic-level';
import { MemoryLevel } from 'memory-level';
import {
  type BatchOp,
  type KeyRange,
  type KvStore,
  type StoreStatus,
  type WriteOptions,
  validateSublevelName,
} from './kv-store.js';
import { StorageError } from './storage-error.js';

export { StorageError, type StorageErrorCode } from './storage-error.js';

/** Range options in the shape abstract-level's `iterator()` and `clear()` take: our KeyRange as is. */
type LevelRangeOptions = KeyRange;

/**
 * The part of an abstract-level 3 database (or sublevel) with `keyEncoding: 'utf8'` and
 * `valueEncoding: 'view'` that {@link LevelStore} uses. `ClassicLevel` and `MemoryLevel` fit it.
 */
export interface LevelDatabase {
  readonly status: StoreStatus;
  open(): Promise<void>;
  close(): Promise<void>;
  get(key: string): Promise<Uint8Array | undefined>;
  getMany(keys: string[]): Promise<(Uint8Array | undefined)[]>;
  put(key: string, value: Uint8Array, options: WriteOptions): Promise<void>;
  del(key: string, options: WriteOptions): Promise<void>;
  batch(ops: BatchOp[], options: WriteOptions): Promise<void>;
  iterator(options: LevelRangeOptions): AsyncIterable<[string, Uint8Array]>;
  clear(options: LevelRangeOptions): Promise<void>;
  sublevel(name: string, options: { valueEncoding: 'view' }): LevelDatabase;
}

/** Options of {@link LevelStore.open}. */
export interface LevelStoreOptions {
  /**
   * Where the data lives, for error messages and logs (`KvStore.location`). Default:
   * `':memory:'`.
   */
  location?: string;
  /**
   * Copy values on the way in and out. Default: `true`, because memory-level keeps the very
   * array it was given and hands it back from `get`, so a caller changing either would change the
   * stored value, which classic-level (copying into LevelDB) never does. Turn it off only for a
   * database that copies by itself, as `openDiskStore` does for classic-level.
   */
  copyValues?: boolean;
}

/** The name of the sublevel holding a view's own entries; outside the `[a-z0-9-]` of names. */
const OWN_ENTRIES = '_';

const SUBLEVEL_OPTIONS = { valueEncoding: 'view' } as const;

/** Error codes of a file system call that mean "you may not write here". */
const NOT_WRITABLE_FS_CODES = new Set(['EACCES', 'EPERM', 'EROFS', 'ENOTDIR', 'EEXIST']);

/**
 * A {@link KvStore} over one abstract-level database or one namespace of it. Create it with
 * {@link openDiskStore}, {@link openMemoryStore} or {@link LevelStore.open}.
 */
export class LevelStore implements KvStore {
  readonly location: string;
  readonly #node: LevelDatabase;
  readonly #own: LevelDatabase;
  readonly #copyValues: boolean;
  readonly #sublevels = new Map<string, LevelStore>();

  /**
   * The root database and this view's full key prefix, for the hot calls (get, getMany, put,
   * del, batch): one call on the root with prefixed keys writes exactly the bytes the sublevel
   * chain would (`!a!!_!key`), without a trip through every level of it (each one re-encodes
   * keys and copies batches). Null when the database does not expose them.
   */
  readonly #flat: { root: LevelDatabase; prefix: string } | null;

  /** The flat path while this view is open (a closed view's calls go the sublevel way, and fail as they should). */
  #fast(): { root: LevelDatabase; prefix: string } | null {
    return this.#flat !== null && this.#own.status === 'open' && this.#flat.root.status === 'open' ? this.#flat : null;
  }

  private constructor(node: LevelDatabase, location: string, copyValues: boolean) {
    this.#node = node;
    this.#own = node.sublevel(OWN_ENTRIES, SUBLEVEL_OPTIONS);
    this.location = location;
    this.#copyValues = copyValues;
    const own = this.#own as unknown as { prefix?: unknown; db?: Partial<LevelDatabase> };
    const root = own.db;
    this.#flat =
      typeof own.prefix === 'string' && root !== undefined && typeof root.get === 'function' && typeof root.batch === 'function' && typeof root.getMany === 'function'
        ? { root: root as LevelDatabase, prefix: own.prefix }
        : null;
  }

  /**
   * Wraps an abstract-level 3 database created with `keyEncoding: 'utf8'` and
   * `valueEncoding: 'view'`, and waits until it is open. The store owns the database from then
   * on: {@link close} closes it.
   *
   * @throws StorageError when the database fails to open (see {@link openDiskStore}).
   */
  static async open(db: LevelDatabase, options: LevelStoreOptions = {}): Promise<LevelStore> {
    const location = options.location ?? ':memory:';
    try {
      await db.open();
    } catch (error) {
      throw describeOpenError(error, location);
    }
    const store = new LevelStore(db, location, options.copyValues ?? true);
    try {
      await store.#own.open();
    } catch (error) {
      await db.close().catch(() => {});
      throw toStorageError(error, location);
    }
    return store;
  }

  get status(): StoreStatus {
    return this.#own.status;
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    assertKey(key);
    const f = this.#fast();
    const value = await this.#run(() => (f === null ? this.#own.get(key) : f.root.get(f.prefix + key)));
    return value === undefined ? undefined : this.#valueOut(value);
  }

  async getMany(keys: string[]): Promise<(Uint8Array | undefined)[]> {
    if (!Array.isArray(keys)) throw new TypeError('getMany() takes an array of keys');
    keys.forEach(assertKey);
    const f = this.#fast();
    const values = await this.#run(() => (f === null ? this.#own.getMany(keys) : f.root.getMany(keys.map((k) => f.prefix + k))));
    return values.map((value) => (value === undefined ? undefined : this.#valueOut(value)));
  }

  async put(key: string, value: Uint8Array, opts: WriteOptions = {}): Promise<void> {
    assertKey(key);
    assertValue(value, key);
    const stored = this.#valueIn(value);
    const f = this.#fast();
    await this.#run(() => (f === null ? this.#own.put(key, stored, writeOptions(opts)) : f.root.put(f.prefix + key, stored, writeOptions(opts))));
  }

  async del(key: string, opts: WriteOptions = {}): Promise<void> {
    assertKey(key);
    const f = this.#fast();
    await this.#run(() => (f === null ? this.#own.del(key, writeOptions(opts)) : f.root.del(f.prefix + key, writeOptions(opts))));
  }

  async batch(ops: BatchOp[], opts: WriteOptions = {}): Promise<void> {
    if (!Array.isArray(ops)) throw new TypeError('batch() takes an array of operations');
    const f = this.#fast();
    const prefix = f === null ? '' : f.prefix;
    const checked = ops.map((op) => this.#checkBatchOp(op, prefix));
    await this.#run(() => (f === null ? this.#own.batch(checked, writeOptions(opts)) : f.root.batch(checked, writeOptions(opts))));
  }

  iterate(range: KeyRange = {}): AsyncIterable<[string, Uint8Array]> {
    return this.#iterateEntries(toLevelRange(range));
  }

  async approximateBytes(gte: string, lt: string): Promise<number | null> {
    const root = this.#flat?.root as { approximateSize?: (a: string, b: string) => Promise<number> } | undefined;
    if (this.#flat === null || typeof root?.approximateSize !== 'function') return null;
    try {
      return await root.approximateSize(this.#flat.prefix + gte, this.#flat.prefix + lt);
    } catch {
      return null;
    }
  }

  async clear(range: KeyRange = {}): Promise<void> {
    const options = toLevelRange(range);
    await this.#run(() => this.#own.clear(options));
  }

  sublevel(name: string): KvStore {
    validateSublevelName(name);
    let view = this.#sublevels.get(name);
    if (view === undefined) {
      const node = this.#node.sublevel(name, SUBLEVEL_OPTIONS);
      view = new LevelStore(node, this.location, this.#copyValues);
      this.#sublevels.set(name, view);
    }
    return view;
  }

  async close(): Promise<void> {
    await this.#run(() => this.#node.close());
  }

  async *#iterateEntries(options: LevelRangeOptions): AsyncGenerator<[string, Uint8Array]> {
    try {
      for await (const [key, value] of this.#own.iterator(options)) {
        yield [key, this.#valueOut(value)];
      }
    } catch (error) {
      throw toStorageError(error, this.location);
    }
  }

  /** Runs one database call, turning abstract-level's coded errors into `StorageError`s. */
  async #run<T>(call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (error) {
      throw toStorageError(error, this.location);
    }
  }

  /** Checks one batch operation; its key comes back with `prefix` in front. */
  #checkBatchOp(op: BatchOp, prefix: string): BatchOp {
    if (op === null || typeof op !== 'object') {
      throw new TypeError('A batch operation must be an object');
    }
    assertKey(op.key);
    switch (op.type) {
      case 'put':
        assertValue(op.value, op.key);
        return { type: 'put', key: prefix + op.key, value: this.#valueIn(op.value) };
      case 'del':
        return { type: 'del', key: prefix + op.key };
      default:
        const type = JSON.stringify((op as { type: unknown }).type);
        throw new TypeError(`A batch operation's type must be 'put' or 'del', not ${type}`);
    }
  }

  #valueIn(value: Uint8Array): Uint8Array {
    return this.#copyValues ? new Uint8Array(value) : value;
  }

  /** A plain `Uint8Array` (not a `Buffer`), so both implementations compare equal in tests. */
  #valueOut(value: Uint8Array): Uint8Array {
    if (this.#copyValues) return new Uint8Array(value);
    if (value.constructor === Uint8Array) return value;
    return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  }
}

/**
 * Opens (creating if needed) the shoal database in data directory `dir`, at `dir/db`, leaving the
 * rest of `dir` to other files of the peer.
 *
 * @throws StorageError `NOT_WRITABLE` when `dir` cannot be created or written; `LOCKED` when the
 *   database is already open, in this process or another (most likely another shoal peer with
 *   the same data directory); `CORRUPT` or `IO` when LevelDB cannot read it.
 */
export async function openDiskStore(dir: string): Promise<KvStore> {
  try {
    await mkdir(dir, { recursive: true });
  } catch (error) {
    throw describeFsError(error, dir);
  }
  const db = new ClassicLevel<string, Uint8Array>(join(dir, 'db'), {
    keyEncoding: 'utf8',
    valueEncoding: 'view',
  });
  // classic-level copies values into and out of LevelDB, so the store need not.
  return LevelStore.open(db, { location: dir, copyValues: false });
}

/** Opens an empty store held in memory, for simulations and fast tests. */
export async function openMemoryStore(): Promise<KvStore> {
  const db = new MemoryLevel<string, Uint8Array>({ keyEncoding: 'utf8', valueEncoding: 'view' });
  return LevelStore.open(db, { location: ':memory:', copyValues: true });
}

function assertKey(key: unknown): asserts key is string {
  if (typeof key !== 'string') throw new TypeError(`A key must be a string, not ${typeof key}`);
}

function assertValue(value: unknown, key: string): asserts value is Uint8Array {
  if (!(value instanceof Uint8Array)) {
    throw new TypeError(`The value of key ${JSON.stringify(key)} must be a Uint8Array`);
  }
}

function writeOptions(opts: WriteOptions): WriteOptions {
  return { sync: opts.sync === true };
}

function toLevelRange(range: KeyRange): LevelRangeOptions {
  if (range === null || typeof range !== 'object') throw new TypeError('A range must be an object');
  const { gt, gte, lt, lte, limit, reverse } = range;
  if (gt !== undefined && gte !== undefined) {
    throw new TypeError('A range takes gt or gte, not both');
  }
  if (lt !== undefined && lte !== undefined) {
    throw new TypeError('A range takes lt or lte, not both');
  }
  const options: LevelRangeOptions = {};
  for (const [name, bound] of [['gt', gt], ['gte', gte], ['lt', lt], ['lte', lte]] as const) {
    if (bound === undefined) continue;
    if (typeof bound !== 'string') throw new TypeError(`Range bound ${name} must be a string`);
    options[name] = bound;
  }
  if (limit !== undefined) {
    if (!Number.isSafeInteger(limit) || limit < 0) {
      throw new TypeError(`Range limit must be a non-negative integer, not ${limit}`);
    }
    options.limit = limit;
  }
  if (reverse !== undefined) options.reverse = reverse === true;
  return options;
}

/** The `code` of an abstract-level (or Node) error, if it has one. */
function errorCode(error: unknown): string | undefined {
  if (error === null || typeof error !== 'object') return undefined;
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' ? code : undefined;
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * A `StorageError` for an abstract-level error with a known code; any other error (an invalid
 * argument, a bug) passes through unchanged.
 */
function toStorageError(error: unknown, location: string): unknown {
  if (error instanceof StorageError) return error;
  switch (errorCode(error)) {
    case 'LEVEL_DATABASE_NOT_OPEN':
    case 'LEVEL_ITERATOR_NOT_OPEN':
    case 'LEVEL_BATCH_NOT_OPEN':
      return new StorageError('CLOSED', location, `The store at ${location} is closed`, error);
    case 'LEVEL_CORRUPTION':
      return new StorageError(
        'CORRUPT',
        location,
        `The database at ${location} is corrupt: ${errorMessage(error)}`,
        error,
      );
    case 'LEVEL_IO_ERROR':
      return new StorageError(
        'IO',
        location,
        `The database at ${location} failed to read or write: ${errorMessage(error)}`,
        error,
      );
    default:
      return error;
  }
}

/**
 * A `StorageError` for a failed `db.open()`. abstract-level rejects with
 * `LEVEL_DATABASE_NOT_OPEN` and puts the reason in `cause`: `LEVEL_LOCKED`, `LEVEL_CORRUPTION`,
 * `LEVEL_IO_ERROR`, or a Node file system error from creating the directory.
 */
function describeOpenError(error: unknown, location: string): StorageError {
  const wrapped = errorCode(error) === 'LEVEL_DATABASE_NOT_OPEN' && error instanceof Error;
  const cause = wrapped && error.cause !== undefined ? error.cause : error;
  const code = errorCode(cause);
  if (code === 'LEVEL_LOCKED') {
    return new StorageError(
      'LOCKED',
      location,
      `The database in ${location} is locked: another shoal peer is probably using this data ` +
        'directory. Stop that peer, or give this one a different data directory.',
      cause,
    );
  }
  if (code === 'LEVEL_CORRUPTION') {
    return new StorageError(
      'CORRUPT',
      location,
      `The database in ${location} is corrupt (${errorMessage(cause)}). Move the directory away ` +
        'to start this peer with an empty one.',
      cause,
    );
  }
  if (code === 'LEVEL_IO_ERROR') {
    // LevelDB reports only the strerror() text of a failed file operation.
    if (/Permission denied|Read-only file system/i.test(errorMessage(cause))) {
      return notWritable(location, cause);
    }
    return new StorageError(
      'IO',
      location,
      `The database in ${location} could not be opened: ${errorMessage(cause)}`,
      cause,
    );
  }
  return describeFsError(cause, location);
}

/** A `StorageError` for a failed file system call on the data directory. */
function describeFsError(error: unknown, location: string): StorageError {
  const code = errorCode(error);
  if (code !== undefined && NOT_WRITABLE_FS_CODES.has(code)) return notWritable(location, error);
  return new StorageError(
    'IO',
    location,
    `The data directory ${location} could not be prepared: ${errorMessage(error)}`,
    error,
  );
}

function notWritable(location: string, cause: unknown): StorageError {
  return new StorageError(
    'NOT_WRITABLE',
    location,
    `The data directory ${location} cannot be created or written (${errorMessage(cause)}). ` +
      'Check that the path is a directory this user may write to, on a writable file system.',
    cause,
  );
}
