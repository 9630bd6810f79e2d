/**
 * What went wrong in a {@link StorageError}:
 *
 * - `LOCKED`: the database is open elsewhere, most likely by another shoal peer using the same
 *   data directory.
 * - `NOT_WRITABLE`: the data directory cannot be created or written (permissions, a read-only
 *   file system, or a path that runs through a regular file).
 * - `CORRUPT`: stored data cannot be read back as written.
 * - `IO`: any other failure of the disk or file system.
 * - `CLOSED`: the store was used after it was closed, for example by a request that raced a
 *   shutdown.
 */
export type StorageErrorCode = 'LOCKED' | 'NOT_WRITABLE' | 'CORRUPT' | 'IO' | 'CLOSED';

/**
 * A storage failure a caller can handle: report it, refuse a request, or exit with a clear message.
 * Check `code`, never the message text; the original error, when there is one, is in `cause`.
 */
export class StorageError extends Error {
  override readonly name = 'StorageError';

  /**
   * @param code What went wrong.
   * @param path The data directory (or file) concerned, or `':memory:'` for a memory store.
   * @param message A sentence for a human that names `path` and suggests a fix where there is one.
   * @param cause The underlying error, if any.
   */
  constructor(
    readonly code: StorageErrorCode,
    readonly path: string,
    message: string,
    cause?: unknown,
  ) {
    super(message, cause === undefined ? undefined : { cause });
  }
}
