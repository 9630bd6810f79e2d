/**
 * Wire encoding of Raft messages: UTF-8 JSON, entry and snapshot data as base64. Decoding treats
 * the bytes as untrusted: every field is checked (type, range, size, internal consistency) so
 * that the core never sees a message it could crash on; a bad message throws
 * `InvalidMessageError` whose message starts with the path of the bad field.
 *
 * Protocol id (for the shell): `/shoal/raft/1.0.0`.
 */
import { asObject, decodeEnvelope, encodeEnvelope, fail, readBoolean, readBytes, readCount, toBase64, type WireObject } from '../json-wire.js';
import { decodeConfChange, isValidNodeId, MAX_NODE_ID_LENGTH } from './conf-change.js';
import type { ConfState, Entry, RaftMessage, RaftMessageType, Snapshot } from './types.js';

export const RAFT_PROTOCOL_ID = '/shoal/raft/1.0.0';

/** Largest encoded message accepted, bytes. Default 16 MiB: one 4 MiB entry in base64 plus a full append. */
export const DEFAULT_MAX_RAFT_MESSAGE_BYTES = 16 * 1024 * 1024;
/** Most entries in one append message (matches the upper bound of `maxEntriesPerAppend`). */
export const MAX_ENTRIES_PER_MESSAGE = 4096;
/** Most members in a configuration (voters plus learners). */
export const MAX_CONFIG_MEMBERS = 1024;

const MESSAGE_TYPES: readonly RaftMessageType[] = [
  'append',
  'append-response',
  'vote',
  'vote-response',
  'heartbeat',
  'heartbeat-response',
  'snapshot',
  'timeout-now',
];

function encodeEntry(e: Entry): unknown {
  return { index: e.index, term: e.term, type: e.type, data: toBase64(e.data) };
}

function encodeSnapshot(s: Snapshot): unknown {
  return { index: s.index, term: s.term, config: { voters: s.config.voters, learners: s.config.learners }, data: toBase64(s.data) };
}

export function encodeRaftMessage(m: RaftMessage): Uint8Array {
  let body: WireObject;
  switch (m.type) {
    case 'append':
      body = { ...m, entries: m.entries.map(encodeEntry) };
      break;
    case 'snapshot':
      body = { ...m, snapshot: encodeSnapshot(m.snapshot) };
      break;
    default:
      body = { ...m };
  }
  return encodeEnvelope(body);
}

/** The non-negative integers of Raft (index, term, commit). */
function readIndex(o: WireObject, key: string, path: string): number {
  return readCount(o, key, path, 0);
}

function readNodeId(o: WireObject, key: string, path: string): string {
  const v = o[key];
  if (!isValidNodeId(v)) fail(`${path}.${key}`, `must be a non-empty string of at most ${MAX_NODE_ID_LENGTH} characters`);
  return v;
}

function readData(o: WireObject, key: string, path: string): Uint8Array {
  return readBytes(o, key, path);
}

function readNodeIdList(o: WireObject, key: string, path: string): string[] {
  const v = o[key];
  if (!Array.isArray(v) || v.length > MAX_CONFIG_MEMBERS) fail(`${path}.${key}`, `must be an array of at most ${MAX_CONFIG_MEMBERS} ids`);
  const ids = v.map((id, k) => {
    if (!isValidNodeId(id)) fail(`${path}.${key}[${k}]`, 'invalid node id');
    return id;
  });
  if (new Set(ids).size !== ids.length) fail(`${path}.${key}`, 'duplicate node id');
  return ids;
}

function readConfState(value: unknown, path: string): ConfState {
  const o = asObject(value, path);
  const voters = readNodeIdList(o, 'voters', path);
  const learners = readNodeIdList(o, 'learners', path);
  if (voters.length + learners.length > MAX_CONFIG_MEMBERS) fail(path, 'too many members');
  if (learners.some((id) => voters.includes(id))) fail(`${path}.learners`, 'overlaps voters');
  return { voters, learners };
}

function readEntry(value: unknown, path: string): Entry {
  const o = asObject(value, path);
  const index = readIndex(o, 'index', path);
  const term = readIndex(o, 'term', path);
  if (index < 1) fail(`${path}.index`, 'must be ≥ 1');
  if (term < 1) fail(`${path}.term`, 'must be ≥ 1');
  const type = o.type;
  if (type !== 'normal' && type !== 'conf-change') fail(`${path}.type`, "must be 'normal' or 'conf-change'");
  const data = readData(o, 'data', path);
  if (type === 'conf-change') {
    try {
      decodeConfChange(data);
    } catch {
      fail(`${path}.data`, 'not a valid conf change');
    }
  }
  return { index, term, type, data };
}

export interface DecodeRaftMessageOptions {
  /** Default DEFAULT_MAX_RAFT_MESSAGE_BYTES. */
  maxMessageBytes?: number;
}

/** Decodes and fully validates one message from untrusted bytes. Throws InvalidMessageError. */
export function decodeRaftMessage(bytes: Uint8Array, options: DecodeRaftMessageOptions = {}): RaftMessage {
  const { o, type, path } = decodeEnvelope(bytes, options.maxMessageBytes ?? DEFAULT_MAX_RAFT_MESSAGE_BYTES, MESSAGE_TYPES);
  const from = readNodeId(o, 'from', path);
  const to = readNodeId(o, 'to', path);
  const term = readIndex(o, 'term', path);
  const base = { from, to, term };
  switch (type) {
    case 'append': {
      const prevIndex = readIndex(o, 'prevIndex', path);
      const prevTerm = readIndex(o, 'prevTerm', path);
      const commit = readIndex(o, 'commit', path);
      if (!Array.isArray(o.entries) || o.entries.length > MAX_ENTRIES_PER_MESSAGE) {
        fail(`${path}.entries`, `must be an array of at most ${MAX_ENTRIES_PER_MESSAGE} entries`);
      }
      if (prevTerm > term) fail(`${path}.prevTerm`, 'newer than the message term');
      const entries = o.entries.map((e, k) => readEntry(e, `${path}.entries[${k}]`));
      let lastTerm = prevTerm;
      entries.forEach((e, k) => {
        if (e.index !== prevIndex + 1 + k) fail(`${path}.entries[${k}].index`, 'not contiguous after prevIndex');
        if (e.term < lastTerm || e.term > term) fail(`${path}.entries[${k}].term`, 'out of order or newer than the message term');
        lastTerm = e.term;
      });
      return { type, ...base, prevIndex, prevTerm, entries, commit };
    }
    case 'append-response': {
      const index = readIndex(o, 'index', path);
      const reject = readBoolean(o, 'reject', path);
      const hintIndex = readIndex(o, 'hintIndex', path);
      const hintTerm = readIndex(o, 'hintTerm', path);
      return { type, ...base, index, reject, hintIndex, hintTerm };
    }
    case 'vote': {
      const pre = readBoolean(o, 'pre', path);
      const lastIndex = readIndex(o, 'lastIndex', path);
      const lastTerm = readIndex(o, 'lastTerm', path);
      const transfer = readBoolean(o, 'transfer', path);
      if (lastTerm > term) fail(`${path}.lastTerm`, 'newer than the message term');
      return { type, ...base, pre, lastIndex, lastTerm, transfer };
    }
    case 'vote-response':
      return { type, ...base, pre: readBoolean(o, 'pre', path), granted: readBoolean(o, 'granted', path) };
    case 'heartbeat':
      return { type, ...base, commit: readIndex(o, 'commit', path) };
    case 'heartbeat-response':
      return { type, ...base };
    case 'snapshot': {
      const s = asObject(o.snapshot, `${path}.snapshot`);
      const index = readIndex(s, 'index', `${path}.snapshot`);
      const snapTerm = readIndex(s, 'term', `${path}.snapshot`);
      if (index < 1 || snapTerm < 1 || snapTerm > term) fail(`${path}.snapshot`, 'index and term must be ≥ 1, term ≤ message term');
      const config = readConfState(s.config, `${path}.snapshot.config`);
      const data = readData(s, 'data', `${path}.snapshot`);
      return { type, ...base, snapshot: { index, term: snapTerm, config, data } };
    }
    case 'timeout-now':
      return { type, ...base };
  }
}
