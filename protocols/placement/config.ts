/**
 * Placement settings: the defaults with the reason for each, the limits, and the validators that
 * throw a ConfigError naming the bad field. Every function of this folder validates through here.
 */
import { ConfigError } from '../errors.js';

export interface PlacementOptions {
  /**
   * Number of shards: a power of two in [8, 1024], fixed when the cluster is created.
   * Default 64: Riak's ring size, fine balance for tens of peers; a power of two so that
   * `hash mod shardCount` keeps whole low bits of the hash.
   */
  shardCount: number;
  /**
   * Replicas per shard, in [1, 16]. Default 3: one failure never loses an acknowledged write.
   * A cluster with fewer peers places one replica on each.
   */
  replicationFactor: number;
  /**
   * Virtual nodes per unit of capacity; a peer gets `max(1, round(capacity * vnodesPerUnitCapacity))`.
   * Default 128: with this many points a peer's share of the ring is within a few per cent of its
   * weight for tens of peers, while a ring of 20 peers is only 2,560 points.
   */
  vnodesPerUnitCapacity: number;
  /**
   * Bounded-load factor `c` (Mirrokni, Thorup, Zadimoghaddam, "Consistent Hashing with Bounded
   * Loads", 2018): no peer holds more than `c` times its capacity-proportional share of the
   * replicas (see assignReplicas). Default 1.25: largest/mean ≤ 1.25 with 64 shards, where a pure
   * ring of 64 random points gives 1.6 and worse; a lower factor moves more replicas when peers
   * come and go. Must be ≥ 1; `Infinity` turns the bound off and gives the plain ring.
   */
  loadFactor: number;
}

export const DEFAULT_PLACEMENT_OPTIONS: Readonly<PlacementOptions> = Object.freeze({
  shardCount: 64,
  replicationFactor: 3,
  vnodesPerUnitCapacity: 128,
  loadFactor: 1.25,
});

/** Bounds on everything placement accepts. */
export const PLACEMENT_LIMITS = Object.freeze({
  /** Fewest and most shards (as the cluster map). */
  minShardCount: 8,
  maxShardCount: 1024,
  /** Largest replication factor (as the cluster map). */
  maxReplicationFactor: 16,
  /** Most members on one ring (as the cluster map). */
  maxMembers: 4096,
  /** Longest peer id, characters (libp2p peer ids are ~52; as the cluster map). */
  maxPeerIdLength: 128,
  /** Most virtual nodes per unit capacity: 4096 is already 32x finer than the default. */
  maxVnodesPerUnitCapacity: 4096,
  /**
   * Most virtual nodes on one ring, all peers together. 2^20 points take ~8 MiB and sort in well
   * under a second; capacities are relative, so keep them small numbers (1, 2, 0.5...).
   */
  maxTotalVnodes: 1 << 20,
});

/** One peer on the ring. `capacity` is relative (positive); default 1 in the cluster map. */
export interface PlacementMember {
  peerId: string;
  capacity: number;
}

export function validateShardCount(shardCount: number, field = 'shardCount'): void {
  const { minShardCount, maxShardCount } = PLACEMENT_LIMITS;
  if (
    !Number.isSafeInteger(shardCount) ||
    shardCount < minShardCount ||
    shardCount > maxShardCount ||
    (shardCount & (shardCount - 1)) !== 0
  ) {
    throw new ConfigError(field, `must be a power of two in [${minShardCount}, ${maxShardCount}], got ${String(shardCount)}`);
  }
}

export function validateReplicationFactor(replicationFactor: number, field = 'replicationFactor'): void {
  const max = PLACEMENT_LIMITS.maxReplicationFactor;
  if (!Number.isSafeInteger(replicationFactor) || replicationFactor < 1 || replicationFactor > max) {
    throw new ConfigError(field, `must be an integer in [1, ${max}], got ${String(replicationFactor)}`);
  }
}

export function validateShard(shard: number, shardCount: number): void {
  if (!Number.isSafeInteger(shard) || shard < 0 || shard >= shardCount) {
    throw new ConfigError('shard', `must be an integer in [0, ${shardCount - 1}], got ${String(shard)}`);
  }
}

/**
 * Merge `partial` over the defaults and check every field.
 * `undefined` values take the default; unknown keys are refused (they are typos).
 * @throws ConfigError naming the first bad field.
 */
export function validatePlacementOptions(partial: Partial<PlacementOptions> = {}): PlacementOptions {
  if (partial === null || typeof partial !== 'object') {
    throw new ConfigError('options', 'must be an object');
  }
  for (const key of Object.keys(partial)) {
    if (!(key in DEFAULT_PLACEMENT_OPTIONS)) throw new ConfigError(key, 'is not a placement option');
  }
  const options: PlacementOptions = { ...DEFAULT_PLACEMENT_OPTIONS };
  for (const key of Object.keys(DEFAULT_PLACEMENT_OPTIONS) as Array<keyof PlacementOptions>) {
    const value = partial[key];
    if (value !== undefined) options[key] = value;
  }
  validateShardCount(options.shardCount);
  validateReplicationFactor(options.replicationFactor);
  const v = options.vnodesPerUnitCapacity;
  if (!Number.isFinite(v) || v <= 0 || v > PLACEMENT_LIMITS.maxVnodesPerUnitCapacity) {
    throw new ConfigError('vnodesPerUnitCapacity', `must be a positive number at most ${PLACEMENT_LIMITS.maxVnodesPerUnitCapacity}`);
  }
  const c = options.loadFactor;
  if (typeof c !== 'number' || Number.isNaN(c) || c < 1) {
    throw new ConfigError('loadFactor', 'must be a number >= 1 (Infinity turns the bound off)');
  }
  return options;
}

/** Virtual nodes a peer of `capacity` gets: at least one, so every member is on the ring. */
export function vnodeCountFor(capacity: number, vnodesPerUnitCapacity: number): number {
  return Math.max(1, Math.round(capacity * vnodesPerUnitCapacity));
}

/**
 * Check the members and return a copy sorted by peer id (code-unit order), so that every peer
 * derives the same ring whatever order it learnt the members in.
 * @throws ConfigError for an empty or too long list, a bad or duplicate peer id, a capacity that
 *   is not a positive finite number, or more virtual nodes in total than the limit.
 */
export function validateMembers(members: readonly PlacementMember[], vnodesPerUnitCapacity: number): PlacementMember[] {
  if (!Array.isArray(members) || members.length === 0) {
    throw new ConfigError('members', 'must be a non-empty array');
  }
  if (members.length > PLACEMENT_LIMITS.maxMembers) {
    throw new ConfigError('members', `at most ${PLACEMENT_LIMITS.maxMembers} members, got ${members.length}`);
  }
  const seen = new Set<string>();
  let totalVnodes = 0;
  const copy: PlacementMember[] = [];
  members.forEach((member, i) => {
    const { peerId, capacity } = member ?? ({} as PlacementMember);
    if (typeof peerId !== 'string' || peerId.length === 0 || peerId.length > PLACEMENT_LIMITS.maxPeerIdLength) {
      throw new ConfigError(`members[${i}].peerId`, `must be a string of 1..${PLACEMENT_LIMITS.maxPeerIdLength} characters`);
    }
    if (seen.has(peerId)) throw new ConfigError(`members[${i}].peerId`, `duplicate peer id ${peerId}`);
    seen.add(peerId);
    if (typeof capacity !== 'number' || !Number.isFinite(capacity) || capacity <= 0) {
      throw new ConfigError(`members[${i}].capacity`, `must be a positive finite number, got ${String(capacity)}`);
    }
    totalVnodes += vnodeCountFor(capacity, vnodesPerUnitCapacity);
    copy.push({ peerId, capacity });
  });
  if (totalVnodes > PLACEMENT_LIMITS.maxTotalVnodes) {
    throw new ConfigError(
      'capacity',
      `${totalVnodes} virtual nodes exceed the limit of ${PLACEMENT_LIMITS.maxTotalVnodes}; use smaller relative capacities`,
    );
  }
  return copy.sort((a, b) => compareIds(a.peerId, b.peerId));
}

/** Code-unit order, the same on every platform (unlike localeCompare). */
export function compareIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
