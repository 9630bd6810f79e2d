/**
 * Encoding of cluster-map commands inside Raft entries (UTF-8 JSON) and their structural
 * validation. Decoding treats the bytes as untrusted and throws InvalidMessageError naming the
 * bad field; the rules that depend on the current map live in cluster-map.ts.
 */
import { InvalidMessageError } from '../errors.js';
import type {
  AddMemberCommand,
  ClusterCommand,
  ClusterCommandType,
  ClusterSettings,
  MemberStatus,
  ShardAssignment,
  ShardAssignmentUpdate,
  UpdateMemberCommand,
} from './types.js';

export const DEFAULT_CLUSTER_SETTINGS: Readonly<ClusterSettings> = Object.freeze({
  shardCount: 64,
  replicationFactor: 3,
  minInSync: 2,
});

/** Bounds on everything a command can carry. */
export const CLUSTER_MAP_LIMITS = Object.freeze({
  /** Longest peer id, characters (libp2p peer ids are ~52). */
  maxPeerIdLength: 128,
  /** Most multiaddrs per member. */
  maxAddrs: 16,
  /** Longest multiaddr, characters. */
  maxAddrLength: 256,
  /** Largest capacity. */
  maxCapacity: 1_000_000,
  /** Largest replication factor. */
  maxReplicationFactor: 16,
  /** Most members in the map. */
  maxMembers: 4096,
  /** Fewest and most shards. */
  minShardCount: 8,
  maxShardCount: 1024,
  /** Largest encoded command, bytes (a full assignment of 1024 shards fits). */
  maxCommandBytes: 1024 * 1024,
});

export const MEMBER_STATUSES: readonly MemberStatus[] = ['active', 'draining', 'left', 'dead'];
const COMMAND_TYPES: readonly ClusterCommandType[] = ['bootstrap', 'add-member', 'update-member', 'remove-member', 'set-shard-assignment'];

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder('utf-8', { fatal: true });

export function encodeClusterCommand(cmd: ClusterCommand): Uint8Array {
  return textEncoder.encode(JSON.stringify(cmd));
}

function fail(path: string, problem: string): never {
  throw new InvalidMessageError(`${path}: ${problem}`);
}

function asObject(value: unknown, path: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(path, 'must be an object');
  return value as Record<string, unknown>;
}

function onlyKeys(o: Record<string, unknown>, allowed: readonly string[], path: string): void {
  for (const key of Object.keys(o)) if (!allowed.includes(key)) fail(`${path}.${key}`, 'unknown field');
}

export function readPeerId(value: unknown, path: string): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > CLUSTER_MAP_LIMITS.maxPeerIdLength) {
    fail(path, `must be a non-empty string of at most ${CLUSTER_MAP_LIMITS.maxPeerIdLength} characters`);
  }
  return value;
}

function readPeerIdList(value: unknown, path: string, maxLength: number): string[] {
  if (!Array.isArray(value) || value.length > maxLength) fail(path, `must be an array of at most ${maxLength} peer ids`);
  return value.map((v, k) => readPeerId(v, `${path}[${k}]`));
}

function readAddrs(value: unknown, path: string): string[] {
  if (!Array.isArray(value) || value.length > CLUSTER_MAP_LIMITS.maxAddrs) fail(path, `must be an array of at most ${CLUSTER_MAP_LIMITS.maxAddrs} strings`);
  return value.map((v, k) => {
    if (typeof v !== 'string' || v.length === 0 || v.length > CLUSTER_MAP_LIMITS.maxAddrLength) fail(`${path}[${k}]`, 'must be a non-empty string');
    return v;
  });
}

function readCapacity(value: unknown, path: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0 || value > CLUSTER_MAP_LIMITS.maxCapacity) {
    fail(path, `must be a positive number ≤ ${CLUSTER_MAP_LIMITS.maxCapacity}`);
  }
  return value;
}

function readStatus(value: unknown, path: string): MemberStatus {
  if (!MEMBER_STATUSES.includes(value as MemberStatus)) fail(path, `must be one of ${MEMBER_STATUSES.join(', ')}`);
  return value as MemberStatus;
}

function readInteger(value: unknown, path: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) fail(path, `must be an integer in [${min}, ${max}]`);
  return value;
}

function readAssignment(value: unknown, path: string): ShardAssignment {
  const o = asObject(value, path);
  onlyKeys(o, ['replicas', 'primary', 'inSync', 'epoch'], path);
  const maxReplicas = CLUSTER_MAP_LIMITS.maxReplicationFactor + 1;
  const replicas = readPeerIdList(o.replicas, `${path}.replicas`, maxReplicas);
  const inSync = readPeerIdList(o.inSync, `${path}.inSync`, maxReplicas);
  const primary = o.primary === null ? null : readPeerId(o.primary, `${path}.primary`);
  const epoch = readInteger(o.epoch, `${path}.epoch`, 0, Number.MAX_SAFE_INTEGER);
  return { replicas, primary, inSync, epoch };
}

/** Decodes and structurally validates a command; throws InvalidMessageError. */
export function decodeClusterCommand(bytes: Uint8Array): ClusterCommand {
  if (bytes.byteLength > CLUSTER_MAP_LIMITS.maxCommandBytes) fail('command', `larger than ${CLUSTER_MAP_LIMITS.maxCommandBytes} bytes`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(textDecoder.decode(bytes));
  } catch {
    fail('command', 'not UTF-8 JSON');
  }
  const o = asObject(parsed, 'command');
  const type = o.type as ClusterCommandType;
  if (!COMMAND_TYPES.includes(type)) fail('command.type', 'unknown command');
  const path = `command(${type})`;
  switch (type) {
    case 'bootstrap': {
      onlyKeys(o, ['type', 'settings'], path);
      const s = asObject(o.settings, `${path}.settings`);
      onlyKeys(s, ['shardCount', 'replicationFactor', 'minInSync'], `${path}.settings`);
      const settings: Partial<ClusterSettings> = {};
      if (s.shardCount !== undefined) settings.shardCount = readInteger(s.shardCount, `${path}.settings.shardCount`, 0, Number.MAX_SAFE_INTEGER);
      if (s.replicationFactor !== undefined) settings.replicationFactor = readInteger(s.replicationFactor, `${path}.settings.replicationFactor`, 0, Number.MAX_SAFE_INTEGER);
      if (s.minInSync !== undefined) settings.minInSync = readInteger(s.minInSync, `${path}.settings.minInSync`, 0, Number.MAX_SAFE_INTEGER);
      return { type, settings };
    }
    case 'add-member': {
      onlyKeys(o, ['type', 'peerId', 'addrs', 'capacity'], path);
      const cmd: AddMemberCommand = { type, peerId: readPeerId(o.peerId, `${path}.peerId`), addrs: readAddrs(o.addrs, `${path}.addrs`) };
      if (o.capacity !== undefined) cmd.capacity = readCapacity(o.capacity, `${path}.capacity`);
      return cmd;
    }
    case 'update-member': {
      onlyKeys(o, ['type', 'peerId', 'addrs', 'capacity', 'status'], path);
      const cmd: UpdateMemberCommand = { type, peerId: readPeerId(o.peerId, `${path}.peerId`) };
      if (o.addrs !== undefined) cmd.addrs = readAddrs(o.addrs, `${path}.addrs`);
      if (o.capacity !== undefined) cmd.capacity = readCapacity(o.capacity, `${path}.capacity`);
      if (o.status !== undefined) cmd.status = readStatus(o.status, `${path}.status`);
      if (cmd.addrs === undefined && cmd.capacity === undefined && cmd.status === undefined) fail(path, 'changes nothing');
      return cmd;
    }
    case 'remove-member':
      onlyKeys(o, ['type', 'peerId'], path);
      return { type, peerId: readPeerId(o.peerId, `${path}.peerId`) };
    case 'set-shard-assignment': {
      onlyKeys(o, ['type', 'full', 'updates'], path);
      if (typeof o.full !== 'boolean') fail(`${path}.full`, 'must be a boolean');
      if (!Array.isArray(o.updates) || o.updates.length === 0 || o.updates.length > CLUSTER_MAP_LIMITS.maxShardCount) {
        fail(`${path}.updates`, `must be an array of 1..${CLUSTER_MAP_LIMITS.maxShardCount} updates`);
      }
      const updates: ShardAssignmentUpdate[] = o.updates.map((u, k) => {
        const up = asObject(u, `${path}.updates[${k}]`);
        onlyKeys(up, ['shard', 'assignment', 'expectEpoch'], `${path}.updates[${k}]`);
        const update: ShardAssignmentUpdate = {
          shard: readInteger(up.shard, `${path}.updates[${k}].shard`, 0, CLUSTER_MAP_LIMITS.maxShardCount - 1),
          assignment: readAssignment(up.assignment, `${path}.updates[${k}].assignment`),
        };
        if (up.expectEpoch !== undefined) update.expectEpoch = readInteger(up.expectEpoch, `${path}.updates[${k}].expectEpoch`, 0, Number.MAX_SAFE_INTEGER);
        return update;
      });
      return { type, full: o.full, updates };
    }
  }
}

/** Why `settings` (defaults filled in) are invalid, or null. */
export function checkClusterSettings(settings: ClusterSettings): string | null {
  const { shardCount, replicationFactor, minInSync } = settings;
  const L = CLUSTER_MAP_LIMITS;
  if (!Number.isSafeInteger(shardCount) || shardCount < L.minShardCount || shardCount > L.maxShardCount || (shardCount & (shardCount - 1)) !== 0) {
    return `shardCount must be a power of two in [${L.minShardCount}, ${L.maxShardCount}]`;
  }
  if (!Number.isSafeInteger(replicationFactor) || replicationFactor < 1 || replicationFactor > L.maxReplicationFactor) {
    return `replicationFactor must be an integer in [1, ${L.maxReplicationFactor}]`;
  }
  if (!Number.isSafeInteger(minInSync) || minInSync < 1 || minInSync > replicationFactor) {
    return 'minInSync must be an integer in [1, replicationFactor]';
  }
  return null;
}
