/**
 * Shared pieces of the JSON wire codecs (raft, replication): an envelope with a version and a
 * message type, base64 for bytes, and readers that validate one untrusted field each and throw
 * InvalidMessageError naming it. Bytes go through Node's global Buffer (no import, no I/O).
 */
import { InvalidMessageError } from './errors.js';

export type WireObject = Record<string, unknown>;

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder('utf-8', { fatal: true });
const BASE64_PATTERN = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

export function fail(path: string, problem: string): never {
  throw new InvalidMessageError(`${path}: ${problem}`);
}

export function toBase64(data: Uint8Array): string {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('base64');
}

/** `{ v: version, ...body }` as UTF-8 JSON (version 1 unless a codec says otherwise). */
export function encodeEnvelope(body: WireObject, version = 1): Uint8Array {
  return textEncoder.encode(JSON.stringify({ v: version, ...body }));
}

/**
 * Parse an envelope from untrusted bytes: at most `maxBytes`, UTF-8 JSON, an object with
 * `v: version` (1 unless given) and a `type` among `types`. Returns the object, its type and the
 * path for errors.
 */
export function decodeEnvelope<T extends string>(
  bytes: Uint8Array,
  maxBytes: number,
  types: readonly T[],
  version = 1,
): { o: WireObject; type: T; path: string } {
  if (!(bytes instanceof Uint8Array)) fail('message', 'must be bytes');
  if (bytes.byteLength > maxBytes) fail('message', `larger than ${maxBytes} bytes`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(textDecoder.decode(bytes));
  } catch {
    fail('message', 'not UTF-8 JSON');
  }
  const o = asObject(parsed, 'message');
  if (o.v !== version) fail('message.v', 'unsupported version');
  const type = o.type as T;
  if (!types.includes(type)) fail('message.type', 'unknown message type');
  return { o, type, path: `message(${type})` };
}

export function asObject(value: unknown, path: string): WireObject {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(path, 'must be an object');
  return value as WireObject;
}

/** A safe integer ≥ `min`. */
export function readCount(o: WireObject, key: string, path: string, min = 0): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) fail(`${path}.${key}`, `must be a safe integer ≥ ${min}`);
  return v;
}

export function readBoolean(o: WireObject, key: string, path: string): boolean {
  const v = o[key];
  if (typeof v !== 'boolean') fail(`${path}.${key}`, 'must be a boolean');
  return v;
}

/** A non-empty string of at most `maxLength` characters. */
export function readId(o: WireObject, key: string, path: string, maxLength: number): string {
  const v = o[key];
  if (typeof v !== 'string' || v.length === 0 || v.length > maxLength) {
    fail(`${path}.${key}`, `must be a non-empty string of at most ${maxLength} characters`);
  }
  return v;
}

/** Base64 bytes, at most `maxBytes` once decoded. */
export function readBytes(o: WireObject, key: string, path: string, maxBytes = Number.MAX_SAFE_INTEGER): Uint8Array {
  const v = o[key];
  // base64 of n bytes is 4 * ceil(n / 3) characters.
  if (typeof v !== 'string' || v.length > 4 * Math.ceil(maxBytes / 3) || !BASE64_PATTERN.test(v)) {
    fail(`${path}.${key}`, `must be base64 of at most ${maxBytes} bytes`);
  }
  const buffer = Buffer.from(v, 'base64');
  if (buffer.byteLength > maxBytes) fail(`${path}.${key}`, `larger than ${maxBytes} bytes`);
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}
