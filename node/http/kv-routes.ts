/**
 * The key-value routes of the HTTP API (`/v1/kv/{key}`, `/v1/shards`) and the request parsing
 * they need: the key from the raw request target, the query parameters each method accepts, a
 * bounded request body, and the mapping of StoreError codes to HTTP answers.
 */
import type { CatchUpReport } from '../../protocols/shard-control/index.js';
import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  READ_CONSISTENCIES,
  STORE_ERROR_HTTP_STATUS,
  StoreError,
  type GetOptions,
  type KvApi,
  type PutOptions,
  type ReadConsistency,
  type ShardInfo,
  type StoreErrorCode,
  type StoreLimits,
} from '../store-api.js';
import { ClientGoneError, HttpError } from './http-error.js';
import { keyProblem } from '../../protocols/replication/versions.js';

/** The store as the HTTP API needs it: the operations plus the shard table. */
export type HttpKv = KvApi & {
  shards(): ShardInfo[];
  /** Catch-ups under way and abandoned ones (see ShardController.catchUpReport); null unless this peer is the coordinator. */
  catchUps?(): CatchUpReport | null;
};

/** The request target split into its raw (not decoded, not normalised) path and its query. */
export interface RequestTarget {
  path: string;
  query: string;
}

/**
 * Split `req.url` into path and query without any normalisation: `new URL` would resolve `..`
 * and `.` segments (also percent-encoded ones) and read `//x` as a host, which would change keys.
 * An absolute-form target (`http://host/path`) loses its scheme and authority.
 */
export function splitRequestTarget(url: string | undefined): RequestTarget {
  let u = url ?? '/';
  const abs = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^/?#]*/.exec(u);
  if (abs !== null) u = u.slice(abs[0].length);
  const hash = u.indexOf('#');
  if (hash >= 0) u = u.slice(0, hash);
  const q = u.indexOf('?');
  const path = q >= 0 ? u.slice(0, q) : u;
  return { path: path === '' ? '/' : path, query: q >= 0 ? u.slice(q + 1) : '' };
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  return -1;
}

/**
 * Percent-decode a raw path piece into the bytes it names, then read them as UTF-8. Raw bytes
 * above 0x7f (Node hands the request target over as latin1) count as themselves, so a client
 * that sends unencoded UTF-8 gets the key it meant. Returns null for a malformed `%` escape or
 * bytes that are not well-formed UTF-8.
 */
export function percentDecodeUtf8(raw: string): string | null {
  const bytes = new Uint8Array(raw.length);
  let n = 0;
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if (c === 0x25 /* % */) {
      if (i + 2 >= raw.length) return null;
      const hi = hexValue(raw.charCodeAt(i + 1));
      const lo = hexValue(raw.charCodeAt(i + 2));
      if (hi < 0 || lo < 0) return null;
      bytes[n++] = hi * 16 + lo;
      i += 2;
    } else if (c > 0xff) {
      return null;
    } else {
      bytes[n++] = c;
    }
  }
  try {
    return utf8.decode(bytes.subarray(0, n));
  } catch {
    return null;
  }
}

/** Show a key in a message: JSON-quoted, long keys cut. */
export function showKey(key: string): string {
  return JSON.stringify(key.length > 80 ? `${key.slice(0, 80)}…` : key);
}

/** The key named by the raw path after `/v1/kv/`; 400 `invalid_key` if it is not a valid key. */
export function parseKey(rawKey: string, limits: StoreLimits): string {
  const key = percentDecodeUtf8(rawKey);
  if (key === null) throw new HttpError(400, 'invalid_key', 'the key is not well-formed: bad percent-encoding or not UTF-8');
  const problem = keyProblem(key, limits.maxKeyBytes);
  if (problem !== null) throw new HttpError(400, 'invalid_key', problem);
  if (key.startsWith('_shoal/')) throw new HttpError(400, 'invalid_key', 'keys starting with "_shoal/" are reserved for the cluster\'s own records (tasks)');
  return key;
}

/**
 * The query parameters of a request: each must be in `allowed` and appear at most once;
 * otherwise 400 `invalid_request` naming the parameter.
 */
export function parseQuery(query: string, allowed: readonly string[], method: string): Map<string, string> {
  const out = new Map<string, string>();
  if (query === '') return out;
  for (const [name, value] of new URLSearchParams(query)) {
    if (!allowed.includes(name)) {
      const which = allowed.length === 0 ? 'none' : allowed.join(', ');
      throw new HttpError(400, 'invalid_request', `unknown query parameter ${JSON.stringify(name)} for ${method} (accepted: ${which})`);
    }
    if (out.has(name)) throw new HttpError(400, 'invalid_request', `query parameter ${name} given more than once`);
    out.set(name, value);
  }
  return out;
}

/** `ifVersion`: a non-negative integer in decimal digits (no sign, point or exponent). */
export function parseIfVersion(value: string): number {
  const n = Number(value);
  if (!/^[0-9]{1,16}$/.test(value) || !Number.isSafeInteger(n)) {
    throw new HttpError(400, 'invalid_request', `ifVersion must be a non-negative integer, got ${JSON.stringify(value)}`);
  }
  return n;
}

export function parseConsistency(value: string): ReadConsistency {
  if (!(READ_CONSISTENCIES as readonly string[]).includes(value)) {
    throw new HttpError(400, 'invalid_request', `consistency must be one of ${READ_CONSISTENCIES.join(', ')}, got ${JSON.stringify(value)}`);
  }
  return value as ReadConsistency;
}

/** After a 413, the rest of a body is read and discarded up to this many bytes, then the connection is cut. */
const DISCARD_MAX_BYTES = 8 * 1024 * 1024;
/** ... or for at most this long. */
const DISCARD_MAX_MS = 10_000;

/** Requests that asked `Expect: 100-continue` and have not been told to go on yet, with their response. */
const continueOwed = new WeakMap<IncomingMessage, ServerResponse>();

/**
 * Mark a request that expects `100 Continue` (the server's `checkContinue` event): the `100` is
 * sent only when a handler starts reading the body, so a request refused before that (bad key,
 * value declared too large) never sends its body. Until then the answer closes the connection.
 */
export function markContinueOwed(req: IncomingMessage, res: ServerResponse): void {
  continueOwed.set(req, res);
  res.setHeader('connection', 'close');
}

/**
 * Read and throw away the rest of a refused body, so the client (which may still be sending)
 * gets to read the answer instead of a reset; cut the connection past DISCARD_MAX_BYTES or
 * DISCARD_MAX_MS.
 */
function discardRest(req: IncomingMessage): void {
  let discarded = 0;
  const cut = (): void => {
    req.socket.destroy();
  };
  const timer = setTimeout(cut, DISCARD_MAX_MS);
  timer.unref();
  const done = (): void => clearTimeout(timer);
  req.on('data', (chunk: Buffer) => {
    discarded += chunk.length;
    if (discarded > DISCARD_MAX_BYTES) {
      done();
      cut();
    }
  });
  req.once('end', done);
  req.once('close', done);
  req.resume();
}

/**
 * Read a request body of at most `maxBytes`. A declared or actual size over the limit rejects
 * at once with `tooLarge()`; the rest of the body is discarded, never buffered (a body that
 * was announced with `Expect: 100-continue` is never sent). A client that aborts rejects with
 * ClientGoneError. Keeps an `error` listener on `req` so a late reset cannot crash the process.
 */
export function readBoundedBody(req: IncomingMessage, maxBytes: number, tooLarge: () => HttpError, budget?: BodyBudget): Promise<Buffer> {
  req.on('error', () => {});
  const declared = req.headers['content-length'];
  const declaredBytes = declared === undefined ? null : Number(declared);
  // Over budget already, or a declared body that would take it over: refuse before reading.
  if (budget !== undefined && declaredBytes !== null && declaredBytes <= maxBytes && budget.usedBytes + declaredBytes > budget.maxBytes) {
    continueOwed.delete(req);
    req.resume();
    return Promise.reject(overloaded());
  }
  const owed = continueOwed.get(req);
  if (owed !== undefined) {
    continueOwed.delete(req);
    if (declaredBytes !== null && declaredBytes > maxBytes) return Promise.reject(tooLarge()); // the answer closes the connection
    owed.removeHeader('connection');
    owed.writeContinue();
  }
  if (declaredBytes !== null && declaredBytes > maxBytes) {
    const err = tooLarge();
    if (declaredBytes - maxBytes > DISCARD_MAX_BYTES) {
      // Not worth reading: answer and close.
      req.resume();
      return Promise.reject(new HttpError(err.status, err.code, err.message, { ...err.headers, connection: 'close' }, err.extra));
    }
    discardRest(req);
    return Promise.reject(err);
  }
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const finish = (err: Error | null): void => {
      if (settled) return;
      settled = true;
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('close', onClose);
      if (err === null) return resolve(Buffer.concat(chunks, size));
      // The caller releases what a body it got holds; a failed read releases here.
      if (budget !== undefined) budget.usedBytes -= Math.min(size, maxBytes + 1);
      chunks.length = 0;
      if (!(err instanceof ClientGoneError)) discardRest(req);
      reject(err);
    };
    const onData = (chunk: Buffer): void => {
      if (settled) return;
      const before = size;
      size += chunk.length;
      if (budget !== undefined) {
        budget.usedBytes += Math.min(size, maxBytes + 1) - Math.min(before, maxBytes + 1);
        if (budget.usedBytes > budget.maxBytes) return finish(overloaded());
      }
      if (size > maxBytes) finish(tooLarge());
      else chunks.push(chunk);
    };
    const onEnd = (): void => finish(null);
    const onClose = (): void => finish(new ClientGoneError('the client closed the connection before sending the whole body'));
    req.on('error', () => finish(new ClientGoneError('the client connection failed while sending the body')));
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('close', onClose);
  });
}

function isStoreError(err: unknown): err is StoreError {
  if (err instanceof StoreError) return true;
  const e = err as { name?: unknown; code?: unknown } | null;
  return typeof e === 'object' && e !== null && e.name === 'StoreError' && typeof e.code === 'string' && Object.hasOwn(STORE_ERROR_HTTP_STATUS, e.code);
}

/** The HTTP answer for a StoreError (status from STORE_ERROR_HTTP_STATUS); null for any other error. */
export function httpErrorFromStore(err: unknown): HttpError | null {
  if (!isStoreError(err)) return null;
  const code: StoreErrorCode = err.code;
  const status = STORE_ERROR_HTTP_STATUS[code];
  const headers: Record<string, string> = {};
  if (status === 503) {
    const hint = err.retryAfterSeconds;
    const seconds = typeof hint === 'number' && Number.isFinite(hint) && hint >= 0 ? Math.ceil(hint) : 1;
    headers['retry-after'] = String(seconds);
  }
  const extra: Record<string, unknown> = {};
  if (code === 'version_mismatch') {
    extra.currentVersion = err.current?.version ?? null;
    extra.present = err.current?.present ?? null;
  }
  return new HttpError(status, code, err.message, headers, extra);
}

/** Answers a `/v1/kv/{key}` request; thrown HttpErrors and StoreErrors become JSON errors. */
export interface KvRouteDeps {
  /** The store; null while the peer starts (503 `starting`). */
  kv(): HttpKv | null;
  limits(): StoreLimits;
  /** Bytes of request bodies held by this server at once, all requests together. */
  bodyBudget?: BodyBudget;
}

/**
 * A byte budget shared by every request body being read or written to the store: a flood of
 * connections each sending a megabyte gets 503 `overloaded` instead of the peer's memory.
 */
export interface BodyBudget {
  maxBytes: number;
  usedBytes: number;
}

function overloaded(): HttpError {
  return new HttpError(503, 'overloaded', 'this peer holds as many request bodies as it takes at once; retry', { 'retry-after': '1', connection: 'close' });
}

function requireKv(deps: KvRouteDeps): HttpKv {
  const kv = deps.kv();
  if (kv === null) throw new HttpError(503, 'starting', 'the peer is starting', { 'retry-after': '1' });
  return kv;
}

function sendJsonBody(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

const KV_PREFIX = '/v1/kv';

/** The raw key part of a `/v1/kv...` path (everything after `/v1/kv/`; raw `/` kept). */
function rawKeyOf(path: string): string {
  return path.startsWith(`${KV_PREFIX}/`) ? path.slice(KV_PREFIX.length + 1) : '';
}

export async function handleKvGet(req: IncomingMessage, res: ServerResponse, deps: KvRouteDeps): Promise<void> {
  const { path, query } = splitRequestTarget(req.url);
  const key = parseKey(rawKeyOf(path), deps.limits());
  const params = parseQuery(query, ['consistency'], req.method ?? 'GET');
  const options: GetOptions = {};
  const consistency = params.get('consistency');
  if (consistency !== undefined) options.consistency = parseConsistency(consistency);
  const found = await requireKv(deps).get(key, options);
  if (found === null) throw new HttpError(404, 'not_found', `key ${showKey(key)} not found`);
  res.writeHead(200, {
    'content-type': 'application/octet-stream',
    'content-length': found.value.byteLength,
    'x-shoal-version': String(found.version),
  });
  res.end(found.value);
}

export async function handleKvPut(req: IncomingMessage, res: ServerResponse, deps: KvRouteDeps): Promise<void> {
  const { path, query } = splitRequestTarget(req.url);
  const limits = deps.limits();
  const key = parseKey(rawKeyOf(path), limits);
  const params = parseQuery(query, ['ifVersion'], 'PUT');
  const options: PutOptions = {};
  const ifVersion = params.get('ifVersion');
  if (ifVersion !== undefined) options.ifVersion = parseIfVersion(ifVersion);
  const kv = requireKv(deps);
  const value = await readBoundedBody(
    req,
    limits.maxValueBytes,
    () => new HttpError(413, 'value_too_large', `the value is over the limit of ${limits.maxValueBytes} bytes`),
    deps.bodyBudget,
  );
  try {
    const { version } = await kv.put(key, new Uint8Array(value.buffer, value.byteOffset, value.byteLength), options);
    sendJsonBody(res, 200, { key, version });
  } finally {
    // The body is held until the store has it.
    if (deps.bodyBudget !== undefined) deps.bodyBudget.usedBytes -= value.byteLength;
  }
}

export async function handleKvDelete(req: IncomingMessage, res: ServerResponse, deps: KvRouteDeps): Promise<void> {
  const { path, query } = splitRequestTarget(req.url);
  const key = parseKey(rawKeyOf(path), deps.limits());
  parseQuery(query, [], 'DELETE');
  const { version } = await requireKv(deps).delete(key);
  sendJsonBody(res, 200, { key, version });
}

export function handleShards(_req: IncomingMessage, res: ServerResponse, deps: KvRouteDeps): void {
  const kv = requireKv(deps);
  sendJsonBody(res, 200, { shards: kv.shards(), catchUps: kv.catchUps?.() ?? null });
}
