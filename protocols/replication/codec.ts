/**
 * Wire encoding of replication messages. Values travel as raw bytes, everything else as a small
 * UTF-8 JSON header:
 *
 *     [u32 big-endian: header length][header: JSON envelope, v 2][payload: the put values, in op order]
 *
 * A put op in the header carries `len` (its value's length) instead of the value. Version 1 put
 * base64 values inside the JSON: encoding, validating and decoding megabytes of base64 per
 * message was most of a peer's CPU under large values and held its event loop for hundreds of
 * milliseconds (issue 14). Decoding treats the bytes as untrusted: every field is checked (type,
 * range, size, internal consistency; the payload must be exactly what the ops claim) so that the
 * core never sees a message it could crash on; a bad message throws `InvalidMessageError` whose
 * message starts with the path of the bad field.
 *
 * Protocol id (for the shell): `/shoal/replication/2.0.0`.
 */
import { asObject, decodeEnvelope, encodeEnvelope, fail, readCount, readId, type WireObject } from '../json-wire.js';
import { MAX_KEY_BYTES, MAX_OPS_PER_GROUP, MAX_VALUE_BYTES } from './config.js';
import type { LogGroup, LoggedOp, ReplicationMessage, ReplicationMessageType } from './types.js';
import { hasLoneSurrogate } from './versions.js';

export const REPLICATION_PROTOCOL_ID = '/shoal/replication/2.0.0';

/** The envelope version of this encoding. */
export const REPLICATION_WIRE_VERSION = 2;
/** Bytes of the header-length prefix. */
export const HEADER_LENGTH_BYTES = 4;

/** Largest encoded message accepted, bytes. Default 16 MiB: far above an append of one maximal group (1 MiB of values by default, 64 MiB at most) plus its header. */
export const DEFAULT_MAX_REPLICATION_MESSAGE_BYTES = 16 * 1024 * 1024;
/** Most groups in one append (the upper bound of `maxGroupsPerAppend`). */
export const MAX_GROUPS_PER_MESSAGE = 1024;
/** Most shards a cluster can have (the cluster map's upper bound). */
export const MAX_SHARD = 1023;
/** Longest replica (peer) id, characters; libp2p peer ids are ~52. */
export const MAX_REPLICA_ID_LENGTH = 128;

const MESSAGE_TYPES: readonly ReplicationMessageType[] = ['append', 'append-ack', 'catch-up', 'snapshot'];

/** Header and payload joined: [u32 header length][header][payload parts]. */
function frameMessage(header: Uint8Array, payload: readonly Uint8Array[]): Uint8Array {
  let total = HEADER_LENGTH_BYTES + header.byteLength;
  for (const p of payload) total += p.byteLength;
  const out = new Uint8Array(total);
  new DataView(out.buffer).setUint32(0, header.byteLength);
  out.set(header, HEADER_LENGTH_BYTES);
  let offset = HEADER_LENGTH_BYTES + header.byteLength;
  for (const p of payload) {
    out.set(p, offset);
    offset += p.byteLength;
  }
  return out;
}

export function encodeReplicationMessage(m: ReplicationMessage): Uint8Array {
  if (m.type !== 'append') return frameMessage(encodeEnvelope({ ...m }, REPLICATION_WIRE_VERSION), []);
  const values: Uint8Array[] = [];
  const groups = m.groups.map((g) => ({
    seq: g.seq,
    epoch: g.epoch,
    ops: g.ops.map((op) => {
      if (op.kind === 'delete') return { kind: 'delete', key: op.key, version: op.version };
      values.push(op.value);
      return { kind: 'put', key: op.key, len: op.value.byteLength, version: op.version };
    }),
  }));
  return frameMessage(encodeEnvelope({ ...m, groups }, REPLICATION_WIRE_VERSION), values);
}

/** Reads the put values out of the payload, in op order. */
class PayloadReader {
  private offset = 0;
  constructor(private readonly payload: Uint8Array) {}

  /** `len` bytes, copied (a log that keeps them must not pin the whole frame). */
  take(o: WireObject, path: string): Uint8Array {
    const len = o.len;
    if (typeof len !== 'number' || !Number.isSafeInteger(len) || len < 0 || len > MAX_VALUE_BYTES) {
      fail(`${path}.len`, `must be an integer in [0, ${MAX_VALUE_BYTES}]`);
    }
    if (len > this.payload.byteLength - this.offset) fail(`${path}.len`, 'runs past the payload');
    const value = this.payload.slice(this.offset, this.offset + len);
    this.offset += len;
    return value;
  }

  get unread(): number {
    return this.payload.byteLength - this.offset;
  }
}

function readKey(o: WireObject, path: string): string {
  const v = o.key;
  if (typeof v !== 'string' || v.length > MAX_KEY_BYTES || Buffer.byteLength(v, 'utf8') > MAX_KEY_BYTES) {
    fail(`${path}.key`, `must be a string of at most ${MAX_KEY_BYTES} UTF-8 bytes`);
  }
  if (hasLoneSurrogate(v)) fail(`${path}.key`, 'is not well-formed UTF-16 (lone surrogate)');
  return v;
}

function readOp(value: unknown, path: string, payload: PayloadReader): LoggedOp {
  const o = asObject(value, path);
  const key = readKey(o, path);
  const version = readCount(o, 'version', path, 1);
  if (o.kind === 'put') return { kind: 'put', key, value: payload.take(o, path), version };
  if (o.kind === 'delete') return { kind: 'delete', key, version };
  fail(`${path}.kind`, "must be 'put' or 'delete'");
}

function readGroup(value: unknown, path: string, payload: PayloadReader): LogGroup {
  const o = asObject(value, path);
  const seq = readCount(o, 'seq', path, 1);
  const epoch = readCount(o, 'epoch', path, 1);
  if (!Array.isArray(o.ops) || o.ops.length > MAX_OPS_PER_GROUP) fail(`${path}.ops`, `must be an array of at most ${MAX_OPS_PER_GROUP} ops`);
  const ops = o.ops.map((op, k) => readOp(op, `${path}.ops[${k}]`, payload));
  return { seq, epoch, ops };
}

export interface DecodeReplicationMessageOptions {
  /** Default DEFAULT_MAX_REPLICATION_MESSAGE_BYTES. */
  maxMessageBytes?: number;
}

/** Decodes and fully validates one message from untrusted bytes. Throws InvalidMessageError. */
export function decodeReplicationMessage(bytes: Uint8Array, options: DecodeReplicationMessageOptions = {}): ReplicationMessage {
  const maxBytes = options.maxMessageBytes ?? DEFAULT_MAX_REPLICATION_MESSAGE_BYTES;
  if (!(bytes instanceof Uint8Array)) fail('message', 'must be bytes');
  if (bytes.byteLength > maxBytes) fail('message', `larger than ${maxBytes} bytes`);
  if (bytes.byteLength < HEADER_LENGTH_BYTES) fail('message', 'shorter than its header length');
  const headerLength = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(0);
  if (headerLength > bytes.byteLength - HEADER_LENGTH_BYTES) fail('message', 'header runs past the message');
  const headerEnd = HEADER_LENGTH_BYTES + headerLength;
  const { o, type, path } = decodeEnvelope(bytes.subarray(HEADER_LENGTH_BYTES, headerEnd), maxBytes, MESSAGE_TYPES, REPLICATION_WIRE_VERSION);
  const payload = new PayloadReader(bytes.subarray(headerEnd));
  const m = decodeBody(o, type, path, payload);
  if (payload.unread !== 0) fail(path, `${payload.unread} payload bytes that no op claims`);
  return m;
}

function decodeBody(o: WireObject, type: ReplicationMessageType, path: string, payload: PayloadReader): ReplicationMessage {
  const shard = readCount(o, 'shard', path);
  if (shard > MAX_SHARD) fail(`${path}.shard`, `must be at most ${MAX_SHARD}`);
  const epoch = readCount(o, 'epoch', path, 1);
  const from = readId(o, 'from', path, MAX_REPLICA_ID_LENGTH);
  const to = readId(o, 'to', path, MAX_REPLICA_ID_LENGTH);
  if (from === to) fail(`${path}.to`, 'equals from');
  const base = { shard, epoch, from, to };
  switch (type) {
    case 'append': {
      const epochStartSeq = readCount(o, 'epochStartSeq', path);
      const prevSeq = readCount(o, 'prevSeq', path);
      const prevEpoch = readCount(o, 'prevEpoch', path);
      const commitSeq = readCount(o, 'commitSeq', path);
      if (prevEpoch > epoch) fail(`${path}.prevEpoch`, 'newer than the message epoch');
      if ((prevSeq === 0) !== (prevEpoch === 0)) fail(`${path}.prevEpoch`, 'must be 0 exactly when prevSeq is 0');
      if (!Array.isArray(o.groups) || o.groups.length > MAX_GROUPS_PER_MESSAGE) {
        fail(`${path}.groups`, `must be an array of at most ${MAX_GROUPS_PER_MESSAGE} groups`);
      }
      const groups = o.groups.map((g, k) => readGroup(g, `${path}.groups[${k}]`, payload));
      let lastEpoch = prevEpoch;
      groups.forEach((g, k) => {
        if (g.seq !== prevSeq + 1 + k) fail(`${path}.groups[${k}].seq`, 'not contiguous after prevSeq');
        if (g.epoch < lastEpoch || g.epoch > epoch) fail(`${path}.groups[${k}].epoch`, 'out of order or newer than the message epoch');
        lastEpoch = g.epoch;
      });
      groups.forEach((g, k) => {
        // The primary's log holds older epochs exactly up to epochStartSeq.
        if ((g.epoch === epoch) === (g.seq <= epochStartSeq)) fail(`${path}.groups[${k}].epoch`, 'inconsistent with epochStartSeq');
      });
      return { type, ...base, epochStartSeq, prevSeq, prevEpoch, groups, commitSeq };
    }
    case 'append-ack':
      return { type, ...base, matchSeq: readCount(o, 'matchSeq', path), commitSeq: readCount(o, 'commitSeq', path) };
    case 'catch-up':
      return { type, ...base, afterSeq: readCount(o, 'afterSeq', path) };
    case 'snapshot': {
      const seq = readCount(o, 'seq', path, 1);
      const seqEpoch = readCount(o, 'seqEpoch', path, 1);
      if (seqEpoch > epoch) fail(`${path}.seqEpoch`, 'newer than the message epoch');
      return { type, ...base, seq, seqEpoch };
    }
  }
}
