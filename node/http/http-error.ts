/** Errors of the HTTP layer (node/http/). */

/** An error with its HTTP answer: JSON `{ error: code, message, ...extra }` with `headers`. */
export class HttpError extends Error {
  override readonly name = 'HttpError';
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
    readonly extra: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

/** The client went away (aborted or reset) before its request was read: nobody to answer. */
export class ClientGoneError extends Error {
  override readonly name = 'ClientGoneError';
}
