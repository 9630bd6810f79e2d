/**
 * JSON records in a {@link KvStore}, stored as UTF-8 text: for small, rarely written state such
 * as settings and bookkeeping. Hot paths (log entries, shard data) should use a binary encoding.
 */
import type { KvStore, WriteOptions } from './kv-store.js';
import { StorageError } from './storage-error.js';

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/**
 * The JSON value stored under `key`, or `undefined` when there is none.
 *
 * The result is cast to `T`, not checked: validate its shape when the data may come from an
 * older version or another writer.
 *
 * @throws StorageError `CORRUPT` when the stored bytes are not UTF-8 JSON.
 */
export async function getJson<T>(store: KvStore, key: string): Promise<T | undefined> {
  const bytes = await store.get(key);
  if (bytes === undefined) return undefined;
  try {
    return JSON.parse(decoder.decode(bytes)) as T;
  } catch (error) {
    throw new StorageError(
      'CORRUPT',
      store.location,
      `The value of key ${JSON.stringify(key)} in ${store.location} is not valid JSON`,
      error,
    );
  }
}

/**
 * Stores `value` as JSON under `key`.
 *
 * @throws TypeError when `value` has no JSON form (`undefined`, a function, a symbol) or cannot
 *   be serialized (a cycle, a `bigint`).
 */
export async function putJson(
  store: KvStore,
  key: string,
  value: unknown,
  opts?: WriteOptions,
): Promise<void> {
  const text = JSON.stringify(value) as string | undefined;
  if (text === undefined) {
    throw new TypeError(`The value of key ${JSON.stringify(key)} has no JSON form`);
  }
  await store.put(key, encoder.encode(text), opts);
}
