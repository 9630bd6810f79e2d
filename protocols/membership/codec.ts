/**
 * Membership messages on the wire: JSON in UTF-8. Decoding treats the bytes as
 * hostile: every field is checked, every array and string bounded, and the
 * result is a freshly built object (unknown fields are dropped).
 */
import { InvalidMessageError } from '../errors.js';
import type {
  DeadMessage,
  DigestMessage,
  HeartbeatMessage,
  LeftMessage,
  LoadSample,
  MemberRecord,
  MemberState,
  MembershipMessage,
  SuspectMessage,
} from './types.js';

/** Largest encoded message accepted, bytes (256 KiB). Digests of big tables are split to fit. */
export const MAX_MESSAGE_BYTES = 256 * 1024;
/** Longest peer id, characters. */
export const MAX_PEER_ID_CHARS = 256;
/** Longest address, characters. */
export const MAX_ADDR_CHARS = 512;
/** Most addresses in one heartbeat or member record. */
export const MAX_ADDRS = 16;
/** Most member records in one digest message. */
export const MAX_DIGEST_MEMBERS = 1024;

const STATES: ReadonlySet<string> = new Set<MemberState>(['alive', 'suspect', 'dead', 'left']);

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: true });

/** Encode a message as UTF-8 JSON. Only the known fields are written. */
export function encodeMembershipMessage(m: MembershipMessage): Uint8Array {
  return utf8Encoder.encode(JSON.stringify(canonical(m)));
}

/**
 * Decode and validate untrusted bytes.
 * @throws InvalidMessageError naming the field at fault.
 */
export function decodeMembershipMessage(bytes: Uint8Array): MembershipMessage {
  if (!(bytes instanceof Uint8Array)) throw new InvalidMessageError('message: not bytes');
  if (bytes.byteLength > MAX_MESSAGE_BYTES) {
    throw new InvalidMessageError(`message: ${bytes.byteLength} bytes exceeds ${MAX_MESSAGE_BYTES}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(utf8Decoder.decode(bytes));
  } catch {
    throw new InvalidMessageError('message: not UTF-8 JSON');
  }
  const obj = asObject(parsed, 'message');
  switch (obj.kind) {
    case 'heartbeat':
      return readHeartbeat(obj);
    case 'suspect':
      return { kind: 'suspect', ...readClaim(obj) };
    case 'dead':
      return { kind: 'dead', ...readClaim(obj) };
    case 'left':
      return readLeft(obj);
    case 'digest':
      return readDigest(obj);
    default:
      throw new InvalidMessageError('kind: unknown message kind');
  }
}

/** Size of a value once JSON-encoded as UTF-8, bytes. */
export function encodedSizeBytes(value: unknown): number {
  return utf8Encoder.encode(JSON.stringify(value)).byteLength;
}

function canonical(m: MembershipMessage): MembershipMessage {
  switch (m.kind) {
    case 'heartbeat': {
      const { eventLoopDelayMs, rssBytes, cpuPercent } = m.load;
      const load: LoadSample = { eventLoopDelayMs, rssBytes, cpuPercent };
      return { kind: m.kind, peerId: m.peerId, incarnation: m.incarnation, addrs: [...m.addrs], load };
    }
    case 'suspect':
    case 'dead':
      return { kind: m.kind, from: m.from, peerId: m.peerId, incarnation: m.incarnation };
    case 'left':
      return { kind: m.kind, peerId: m.peerId, incarnation: m.incarnation };
    case 'digest':
      return { kind: m.kind, from: m.from, members: m.members.map(canonicalRecord) };
  }
}

function canonicalRecord(r: MemberRecord): MemberRecord {
  return { peerId: r.peerId, state: r.state, incarnation: r.incarnation, addrs: [...r.addrs] };
}

function readHeartbeat(obj: Record<string, unknown>): HeartbeatMessage {
  return {
    kind: 'heartbeat',
    peerId: readString(obj.peerId, 'peerId', MAX_PEER_ID_CHARS),
    incarnation: readIncarnation(obj.incarnation, 'incarnation'),
    addrs: readAddrs(obj.addrs, 'addrs'),
    load: readLoad(obj.load),
  };
}

function readClaim(obj: Record<string, unknown>): Omit<SuspectMessage | DeadMessage, 'kind'> {
  return {
    from: readString(obj.from, 'from', MAX_PEER_ID_CHARS),
    peerId: readString(obj.peerId, 'peerId', MAX_PEER_ID_CHARS),
    incarnation: readIncarnation(obj.incarnation, 'incarnation'),
  };
}

function readLeft(obj: Record<string, unknown>): LeftMessage {
  return {
    kind: 'left',
    peerId: readString(obj.peerId, 'peerId', MAX_PEER_ID_CHARS),
    incarnation: readIncarnation(obj.incarnation, 'incarnation'),
  };
}

function readDigest(obj: Record<string, unknown>): DigestMessage {
  const from = readString(obj.from, 'from', MAX_PEER_ID_CHARS);
  const members = readArray(obj.members, 'members', MAX_DIGEST_MEMBERS);
  return { kind: 'digest', from, members: members.map((m, i) => readRecord(m, `members[${i}]`)) };
}

function readRecord(value: unknown, field: string): MemberRecord {
  const obj = asObject(value, field);
  const state = obj.state;
  if (typeof state !== 'string' || !STATES.has(state)) {
    throw new InvalidMessageError(`${field}.state: not a member state`);
  }
  return {
    peerId: readString(obj.peerId, `${field}.peerId`, MAX_PEER_ID_CHARS),
    state: state as MemberState,
    incarnation: readIncarnation(obj.incarnation, `${field}.incarnation`),
    addrs: readAddrs(obj.addrs, `${field}.addrs`),
  };
}

function readLoad(value: unknown): LoadSample {
  const obj = asObject(value, 'load');
  return {
    eventLoopDelayMs: readNonNegative(obj.eventLoopDelayMs, 'load.eventLoopDelayMs'),
    rssBytes: readNonNegative(obj.rssBytes, 'load.rssBytes'),
    cpuPercent: readNonNegative(obj.cpuPercent, 'load.cpuPercent'),
  };
}

function readAddrs(value: unknown, field: string): string[] {
  return readArray(value, field, MAX_ADDRS).map((a, i) => readString(a, `${field}[${i}]`, MAX_ADDR_CHARS));
}

function asObject(value: unknown, field: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new InvalidMessageError(`${field}: not an object`);
  }
  return value as Record<string, unknown>;
}

function readArray(value: unknown, field: string, maxLength: number): unknown[] {
  if (!Array.isArray(value)) throw new InvalidMessageError(`${field}: not an array`);
  if (value.length > maxLength) throw new InvalidMessageError(`${field}: more than ${maxLength} entries`);
  return value;
}

function readString(value: unknown, field: string, maxChars: number): string {
  if (typeof value !== 'string') throw new InvalidMessageError(`${field}: not a string`);
  if (value.length === 0) throw new InvalidMessageError(`${field}: empty`);
  if (value.length > maxChars) throw new InvalidMessageError(`${field}: longer than ${maxChars} characters`);
  return value;
}

function readIncarnation(value: unknown, field: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new InvalidMessageError(`${field}: not a non-negative safe integer`);
  }
  return value;
}

function readNonNegative(value: unknown, field: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    throw new InvalidMessageError(`${field}: not a finite number >= 0`);
  }
  return value;
}
