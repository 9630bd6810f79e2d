/**
 * Frames of the store's request/response protocol `/shoal/store/1.0.0` (carried by node/rpc.ts):
 * `[u8 kind][u32 header length][header: UTF-8 JSON][payload bytes]`. The header is small; values
 * and snapshot data travel raw in the payload, so a 1 MiB value is not base64-inflated.
 *
 * Decoding treats every byte as untrusted and throws InvalidMessageError naming the bad field
 * (the RPC layer then answers the peer with an error; nothing crashes).
 */
import { InvalidMessageError } from '../protocols/errors.js';

/** Small client operations forwarded to a primary. */
export const STORE_PROTOCOL_ID = '/shoal/store/1.0.0';
/**
 * Bulk traffic on a stream of its own, so that it never queues ahead of small requests or
 * leases: forwarded writes of large values (at least BULK_VALUE_BYTES) and snapshot transfers.
 */
export const STORE_BULK_PROTOCOL_ID = '/shoal/store-bulk/1.0.0';
/** Lease renewals and releases, on a stream of their own (a lease must not wait behind megabytes). */
export const LEASE_PROTOCOL_ID = '/shoal/lease/1.0.0';
/** A forwarded write with a value of at least this many bytes goes over the bulk protocol. */
export const BULK_VALUE_BYTES = 64 * 1024;

export const FrameKind = Object.freeze({
  /** Peer → coordinator: lease renewal with progress and in-sync change requests. */
  lease: 1,
  /** Any peer → primary (or in-sync replica for `any` reads): a client operation. */
  kv: 2,
  /** Primary → replica: a shard snapshot starts. */
  snapBegin: 3,
  /** Primary → replica: a batch of snapshot entries. */
  snapChunk: 4,
  /** Primary → replica: the snapshot is complete; install it. */
  snapEnd: 5,
  /** An answer to any of the above. */
  reply: 6,
});

const MAX_HEADER_BYTES = 1024 * 1024;
const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

export interface Frame {
  kind: number;
  header: Record<string, unknown>;
  payload: Uint8Array;
}

export function encodeFrame(kind: number, header: object, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  const h = encoder.encode(JSON.stringify(header));
  const out = new Uint8Array(5 + h.length + payload.length);
  out[0] = kind;
  new DataView(out.buffer, out.byteOffset, out.byteLength).setUint32(1, h.length);
  out.set(h, 5);
  out.set(payload, 5 + h.length);
  return out;
}

export function decodeFrame(bytes: Uint8Array): Frame {
  if (bytes.length < 5) throw new InvalidMessageError('frame: shorter than its 5-byte prefix');
  const kind = bytes[0]!;
  if (!(Object.values(FrameKind) as number[]).includes(kind)) throw new InvalidMessageError(`frame.kind: unknown kind ${kind}`);
  const len = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(1);
  if (len > MAX_HEADER_BYTES || 5 + len > bytes.length) throw new InvalidMessageError('frame.header: length out of bounds');
  let header: unknown;
  try {
    header = JSON.parse(decoder.decode(bytes.subarray(5, 5 + len)));
  } catch {
    throw new InvalidMessageError('frame.header: not UTF-8 JSON');
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw new InvalidMessageError('frame.header: must be an object');
  return { kind, header: header as Record<string, unknown>, payload: bytes.subarray(5 + len) };
}

// --- field readers for untrusted headers -----------------------------------------------------

export function int(h: Record<string, unknown>, field: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  const v = h[field];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) throw new InvalidMessageError(`${field}: must be an integer in [${min}, ${max}]`);
  return v;
}

export function str(h: Record<string, unknown>, field: string, maxLength = 4096): string {
  const v = h[field];
  if (typeof v !== 'string' || v.length > maxLength) throw new InvalidMessageError(`${field}: must be a string of at most ${maxLength} characters`);
  return v;
}

export function optInt(h: Record<string, unknown>, field: string, min = 0, max = Number.MAX_SAFE_INTEGER): number | undefined {
  return h[field] === undefined ? undefined : int(h, field, min, max);
}

export function arr(h: Record<string, unknown>, field: string, maxLength: number): unknown[] {
  const v = h[field];
  if (!Array.isArray(v) || v.length > maxLength) throw new InvalidMessageError(`${field}: must be an array of at most ${maxLength} items`);
  return v;
}

export function obj(v: unknown, field: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new InvalidMessageError(`${field}: must be an object`);
  return v as Record<string, unknown>;
}
