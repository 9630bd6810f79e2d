/**
 * Errors a caller of `RpcEndpoint.request` can handle. Tests and callers check
 * `name` (and `code` / `reason` / `where`), never the message text.
 */

/** The request's deadline passed, or the caller's AbortSignal fired, before a response came. */
export class RpcTimeoutError extends Error {
  override readonly name = 'RpcTimeoutError';
  constructor(
    /** `timeout`: the deadline passed; `aborted`: the caller's signal fired. */
    readonly reason: 'timeout' | 'aborted',
    message: string,
  ) {
    super(message);
  }
}

/**
 * The remote handler failed. `code` is the `code` of the error it threw (a
 * string of `[A-Za-z0-9_.-]`, at most 64 bytes), or `internal` when it threw
 * something without a usable code. Codes starting with `rpc.` come from the
 * RPC layer itself (`rpc.deadline`, `rpc.too_large`).
 */
export class RpcRemoteError extends Error {
  override readonly name = 'RpcRemoteError';
  constructor(readonly code: string, message: string) {
    super(message);
  }
}

/**
 * No response can come: the stream could not be opened, or it failed (peer
 * stopped, connection reset, bad frame from the peer) while the request was
 * in flight, or the endpoint is stopped. The handler may or may not have run.
 */
export class RpcUnavailableError extends Error {
  override readonly name = 'RpcUnavailableError';
  constructor(
    message: string,
    /** True when the request surely never left this peer (no stream could be opened): safe to retry. */
    readonly notSent = false,
  ) {
    super(message);
  }
}

/**
 * Too many requests in flight: `local` — this endpoint's limit of requests
 * awaiting a response from that peer; `remote` — the peer refused it at its
 * per-stream limit (its handler did not run). Back off and retry.
 */
export class RpcOverloadedError extends Error {
  override readonly name = 'RpcOverloadedError';
  constructor(readonly where: 'local' | 'remote', message: string) {
    super(message);
  }
}

/** The request body does not fit in one frame (`maxFrameBytes`). Nothing was sent. */
export class RpcTooLargeError extends Error {
  override readonly name = 'RpcTooLargeError';
}
