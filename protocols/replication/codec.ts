/**
 * Wire encoding of replication messages: UTF-8 JSON, values as base64. Decoding treats the bytes
 * as untrusted: every field is checked (type, range, size, internal consistency) so that the core
 * never sees a message it could crash on; a bad message throws `InvalidMessageError` whose
 * message starts with the path of the bad field.
 *
 * Protocol id (for the shell): `/shoal/replication/1.0.0`.
 */
import { asObject, decodeEnvelope, encodeEnvelope, fail, readBytes, readCount, readId, toBase64, type WireObject } from '../json-wire.js';
import { MAX_KEY_BYTES, MAX_OPS_PER_GROUP, MAX_VALUE_BYTES } from './config.js';
import type { LogGroup, LoggedOp, ReplicationMessage, ReplicationMessageType } from './types.js';
import { hasLoneSurrogate } from './versions.js';

export const REPLICATION_PROTOCOL_ID = '/shoal/replication/1.0.0';

/** Largest encoded message accepted, bytes. Default 16 MiB: a 4 MiB append in base64 plus JSON framing of up to 64 Ki ops. */
export const DEFAULT_MAX_REPLICATION_MESSAGE_BYTES = 16 * 1024 * 1024;
/** Most groups in one append (the upper bound of `maxGroupsPerAppend`). */
export const MAX_GROUPS_PER_MESSAGE = 1024;
/** Most shards a cluster can have (the cluster map's upper bound). */
export const MAX_SHARD = 1023;
/** Longest replica (peer) id, characters; libp2p peer ids are ~52. */
export const MAX_REPLICA_ID_LENGTH = 128;

const MESSAGE_TYPES: readonly ReplicationMessageType[] = ['append', 'append-ack', 'catch-up', 'snapshot'];

function encodeOp(op: LoggedOp): unknown {
  return op.kind === 'put'
    ? { kind: 'put', key: op.key, value: toBase64(op.value), version: op.version }
    : { kind: 'delete', key: op.key, version: op.version };
}

export function encodeReplicationMessage(m: ReplicationMessage): Uint8Array {
  const body: WireObject =
    m.type === 'append' ? { ...m, groups: m.groups.map((g) => ({ seq: g.seq, epoch: g.epoch, ops: g.ops.map(encodeOp) })) } : { ...m };
  return encodeEnvelope(body);
}

function readKey(o: WireObject, path: string): string {
  const v = o.key;
  if (typeof v !== 'string' || v.length > MAX_KEY_BYTES || Buffer.byteLength(v, 'utf8') > MAX_KEY_BYTES) {
    fail(`${path}.key`, `must be a string of at most ${MAX_KEY_BYTES} UTF-8 bytes`);
  }
  if (hasLoneSurrogate(v)) fail(`${path}.key`, 'is not well-formed UTF-16 (lone surrogate)');
  return v;
}

function readValue(o: WireObject, path: string): Uint8Array {
  return readBytes(o, 'value', path, MAX_VALUE_BYTES);
}

function readOp(value: unknown, path: string): LoggedOp {
  const o = asObject(value, path);
  const key = readKey(o, path);
  const version = readCount(o, 'version', path, 1);
  if (o.kind === 'put') return { kind: 'put', key, value: readValue(o, path), version };
  if (o.kind === 'delete') return { kind: 'delete', key, version };
  fail(`${path}.kind`, "must be 'put' or 'delete'");
}

function readGroup(value: unknown, path: string): LogGroup {
  const o = asObject(value, path);
  const seq = readCount(o, 'seq', path, 1);
  const epoch = readCount(o, 'epoch', path, 1);
  if (!Array.isArray(o.ops) || o.ops.length > MAX_OPS_PER_GROUP) fail(`${path}.ops`, `must be an array of at most ${MAX_OPS_PER_GROUP} ops`);
  const ops = o.ops.map((op, k) => readOp(op, `${path}.ops[${k}]`));
  return { seq, epoch, ops };
}

export interface DecodeReplicationMessageOptions {
  /** Default DEFAULT_MAX_REPLICATION_MESSAGE_BYTES. */
  maxMessageBytes?: number;
}

/** Decodes and fully validates one message from untrusted bytes. Throws InvalidMessageError. */
export function decodeReplicationMessage(bytes: Uint8Array, options: DecodeReplicationMessageOptions = {}): ReplicationMessage {
  const { o, type, path } = decodeEnvelope(bytes, options.maxMessageBytes ?? DEFAULT_MAX_REPLICATION_MESSAGE_BYTES, MESSAGE_TYPES);
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
      const groups = o.groups.map((g, k) => readGroup(g, `${path}.groups[${k}]`));
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
      return { type, ...base, matchSeq: readCount(o, 'matchSeq', path) };
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
