/**
 * The client operations one peer forwards to another (a shard's primary, or an in-sync replica
 * for `any` reads) and their answers, as frames of the store protocol (node/store-wire.ts): one
 * concern of the store service, kept apart so that it can be read and fuzzed on its own.
 *
 * Request: a `kv` frame, header `{ op, key, ifVersion?, consistency? }`, the value of a put as
 * the payload. Answer: a `reply` frame, `{ ok: true, version, present }` with the value as the
 * payload, or `{ ok: false, code, message, current? }`. Decoding treats the bytes as untrusted:
 * a bad field throws InvalidMessageError naming it (an answer's error code must be one the store
 * knows, so a peer cannot hand our clients a code they were never told about).
 */
import { InvalidMessageError } from '../protocols/errors.js';
import { MAX_KEY_BYTES, MAX_VALUE_BYTES } from '../protocols/replication/config.js';
import { STORE_ERROR_HTTP_STATUS, type ReadConsistency, type StoreErrorCode } from './store-api.js';
import { decodeFrame, encodeFrame, FrameKind, int, obj, optInt, str, type Frame } from './store-wire.js';

export interface KvRequest {
  op: 'put' | 'delete' | 'get';
  key: string;
  ifVersion?: number;
  consistency?: ReadConsistency;
  value?: Uint8Array;
}

/** What a primary (or replica) answers a forwarded or local operation with. */
export type OpReply =
  | { ok: true; version: number; present: boolean; value: Uint8Array | null }
  | { ok: false; code: StoreErrorCode | 'not_primary'; message: string; current?: { version: number; present: boolean } };

const EMPTY = new Uint8Array(0);

export function encodeKvRequest(req: KvRequest): Uint8Array {
  const header: Record<string, unknown> = { op: req.op, key: req.key };
  if (req.ifVersion !== undefined) header.ifVersion = req.ifVersion;
  if (req.consistency !== undefined) header.consistency = req.consistency;
  return encodeFrame(FrameKind.kv, header, req.value);
}

/** A `kv` frame's request (the frame already decoded: the RPC handler dispatches on its kind). */
export function decodeKvRequest(f: Frame): KvRequest {
  if (f.kind !== FrameKind.kv) throw new InvalidMessageError(`frame.kind: ${f.kind} is not a kv request`);
  const h = f.header;
  const op = h.op;
  if (op !== 'put' && op !== 'delete' && op !== 'get') throw new InvalidMessageError('op: must be put, delete or get');
  const key = str(h, 'key', MAX_KEY_BYTES);
  const req: KvRequest = { op, key };
  const ifVersion = optInt(h, 'ifVersion');
  if (ifVersion !== undefined) req.ifVersion = ifVersion;
  if (h.consistency !== undefined) {
    if (h.consistency !== 'strong' && h.consistency !== 'any') throw new InvalidMessageError('consistency: must be strong or any');
    req.consistency = h.consistency;
  }
  if (op === 'put') {
    if (f.payload.length > MAX_VALUE_BYTES) throw new InvalidMessageError('value: too large');
    req.value = f.payload;
  }
  return req;
}

export function encodeOpReply(r: OpReply): Uint8Array {
  if (r.ok) return encodeFrame(FrameKind.reply, { ok: true, version: r.version, present: r.present }, r.value ?? EMPTY);
  return encodeFrame(FrameKind.reply, { ok: false, code: r.code, message: r.message, current: r.current });
}

function isReplyCode(code: string): code is StoreErrorCode | 'not_primary' {
  return code === 'not_primary' || Object.hasOwn(STORE_ERROR_HTTP_STATUS, code);
}

export function decodeOpReply(bytes: Uint8Array): OpReply {
  const f = decodeFrame(bytes);
  if (f.kind !== FrameKind.reply) throw new InvalidMessageError(`frame.kind: ${f.kind} is not a reply`);
  const h = f.header;
  if (h.ok === true) {
    const present = h.present === true;
    return { ok: true, version: int(h, 'version'), present, value: present ? f.payload : null };
  }
  const code = str(h, 'code', 64);
  if (!isReplyCode(code)) throw new InvalidMessageError(`code: unknown error code ${JSON.stringify(code)}`);
  const reply: OpReply = { ok: false, code, message: str(h, 'message', 4096) };
  if (h.current !== undefined) {
    const c = obj(h.current, 'current');
    reply.current = { version: int(c, 'version'), present: c.present === true };
  }
  return reply;
}
