/**
 * The key-value store interface that every other piece of storage/ is built on.
 *
 * Keys are strings, values are bytes. Keys sort by the bytes of their UTF-8 encoding (LevelDB's
 * order), which differs from JavaScript's `<` on strings for characters outside the Basic
 * Multilingual Plane: `'\uffff'` sorts before `'\u{10000}'` here. Use fixed-width or ASCII keys
 * where order matters (a Raft log index as 16 hex digits, for example).
 *
 * Implementations: `storage/level-store.ts` (classic-level on disk, memory-level in memory). Both
 * pass the same contract suite, test/unit/storage-contract.test.ts.
 */

/** Where a store is in its life. Mirrors abstract-level's `db.status`. */
export type StoreStatus = 'opening' | 'open' | 'closing' | 'closed';

/** Options of a write (`put`, `del`, `batch`). */
export interface WriteOptions {
  /**
   * Flush the write to stable storage (fsync) before the promise resolves. Default: `false`,
   * because most writes can be recovered from a replica and fsync costs milliseconds; set it for
   * what must survive a power cut, such as a Raft vote or an acknowledged write. A memory store
   * accepts and ignores it.
   */
  sync?: boolean;
}

/** One operation of an atomic {@link KvStore.batch}. */
export type BatchOp =
  | { type: 'put'; key: string; value: Uint8Array }
  | { type: 'del'; key: string };

/**
 * A range of keys. A bound left out is open on that side; give at most one lower bound (`gt` or
 * `gte`) and at most one upper bound (`lt` or `lte`).
 */
export interface KeyRange {
  /** Keys strictly greater than this. */
  gt?: string;
  /** Keys greater than or equal to this. */
  gte?: string;
  /** Keys strictly less than this. */
  lt?: string;
  /** Keys less than or equal to this. */
  lte?: string;
  /** At most this many entries (a non-negative integer). Default: no limit. */
  limit?: number;
  /**
   * Walk from the upper bound down. Default: `false`. With `limit`, this picks the last entries
   * of the range instead of the first.
   */
  reverse?: boolean;
}

/**
 * A namespaced, ordered key-value store over string keys and byte values.
 *
 * Every method that touches data returns a promise that rejects with a `StorageError`
 * (storage/storage-error.ts) when the store is closed (`CLOSED`) or the disk fails (`IO`,
 * `CORRUPT`). Arguments of the wrong type (a key that is not a string, a value that is not a
 * `Uint8Array`) are programming errors and reject with a `TypeError`.
 *
 * Values are copied in and out: changing an array after `put`, or one returned by `get`, never
 * changes what is stored.
 */
export interface KvStore {
  /**
   * `'open'` while the store serves requests; `'closed'` after {@link close} (of this view or of
   * the store it belongs to). A sublevel is `'opening'` until the next turn of the event loop
   * after `sublevel()` creates it; operations wait for it meanwhile.
   */
  readonly status: StoreStatus;

  /**
   * Where the data lives, for error messages and logs: the data directory given to
   * `openDiskStore`, or `':memory:'`. Sublevels report the location of their store.
   */
  readonly location: string;

  /** The value stored under `key`, or `undefined` when there is none. */
  get(key: string): Promise<Uint8Array | undefined>;

  /** The values stored under `keys`, in the same order, `undefined` for each missing key. */
  getMany(keys: string[]): Promise<(Uint8Array | undefined)[]>;

  /** Stores `value` under `key`, replacing any previous value. An empty value is a value. */
  put(key: string, value: Uint8Array, opts?: WriteOptions): Promise<void>;

  /** Removes `key`. Removing a missing key is not an error. */
  del(key: string, opts?: WriteOptions): Promise<void>;

  /**
   * Applies `ops` in order, atomically: after a crash either all of them are visible or none.
   * The operations are validated before any is applied, so a bad one fails the whole batch.
   */
  batch(ops: BatchOp[], opts?: WriteOptions): Promise<void>;

  /**
   * The entries of `range` in key order (or reverse order), as `[key, value]` pairs. Breaking out
   * of a `for await` loop early releases the underlying iterator.
   */
  iterate(range?: KeyRange): AsyncIterable<[string, Uint8Array]>;

  /**
   * About how many bytes `[gte, lt)` takes on disk (LevelDB's estimate from its table files:
   * recent writes still in memory are not counted), or null when the store cannot tell (memory).
   * For progress reports only.
   */
  approximateBytes(gte: string, lt: string): Promise<number | null>;

  /**
   * Deletes every entry of `range` (all entries of this view when left out). Not atomic on disk:
   * a crash midway may leave part of the range; use {@link batch} when that matters.
   */
  clear(range?: KeyRange): Promise<void>;

  /**
   * A view whose keys live apart from this store's own keys and from every other sublevel's:
   * `iterate` and `clear` on one never see another's entries. A batch on a sublevel is atomic.
   * Calling it twice with the same name returns the same view. Sublevels nest.
   *
   * @param name 1 to 64 characters of `[a-z0-9-]`; anything else throws a `TypeError`.
   */
  sublevel(name: string): KvStore;

  /**
   * Closes this view and every sublevel of it; on the root store, closes the database and
   * releases its lock. Later operations reject with a `StorageError` of code `CLOSED`. Closing
   * twice is harmless.
   */
  close(): Promise<void>;
}

const SUBLEVEL_NAME = /^[a-z0-9-]{1,64}$/;

/**
 * Throws a `TypeError` unless `name` is a valid sublevel name: 1 to 64 characters of `[a-z0-9-]`.
 * The narrow alphabet keeps names readable in logs and leaves other characters free for the
 * storage layout's own separators.
 */
export function validateSublevelName(name: string): void {
  if (typeof name !== 'string' || !SUBLEVEL_NAME.test(name)) {
    throw new TypeError(
      `Invalid sublevel name ${JSON.stringify(name)}: use 1 to 64 characters of [a-z0-9-]`,
    );
  }
}
