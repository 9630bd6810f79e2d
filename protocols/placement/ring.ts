/**
 * The consistent-hash ring: every peer owns virtual nodes (points on a 32-bit circle) in
 * proportion to its capacity, every shard has a point of its own, and a shard's replicas are the
 * first distinct peers met walking clockwise from the shard's point.
 *
 * Everything is derived from the member list alone, sorted by peer id first, so every peer that
 * knows the same members builds the same ring.
 */
import { hashKey, murmur3Prefix } from './hash.js';
import {
  validateMembers,
  validatePlacementOptions,
  validateReplicationFactor,
  validateShard,
  validateShardCount,
  vnodeCountFor,
  PLACEMENT_LIMITS,
  type PlacementMember,
  type PlacementOptions,
} from './config.js';

/** Seed of virtual-node points; distinct from shard points and keys, so the three are unrelated. */
const VNODE_SEED = 0x5348_4f41; // "SHOA"
/** Seed of shard points. */
const SHARD_SEED = 0x52_494e_47; // "RING"

/** Options of buildRing: only the density of virtual nodes shapes the ring itself. */
export type RingOptions = Pick<PlacementOptions, 'vnodesPerUnitCapacity'>;

/**
 * Where shard `shard` sits on the circle: MurmurHash3 of `"shard:<n>"`. It does not depend on the
 * shard count, so it is the same point in every cluster.
 */
export function shardPoint(shard: number): number {
  return hashKey(`shard:${shard}`, SHARD_SEED);
}

/** Where virtual node `index` of `peerId` sits: MurmurHash3 of the UTF-8 of `"<peerId>#<index>"`. */
export function vnodePoint(peerId: string, index: number): number {
  return hashKey(`${peerId}#${index}`, VNODE_SEED);
}

const utf8 = new TextEncoder();

/**
 * vnodePoint(peerId, 0..count-1), encoding the peer id once and reusing one buffer: building the
 * ring is a large part of assignReplicas' work.
 */
function vnodePointsOf(peerId: string, count: number): Uint32Array {
  const prefix = utf8.encode(`${peerId}#`);
  const buffer = new Uint8Array(prefix.length + 16);
  buffer.set(prefix);
  const points = new Uint32Array(count);
  for (let index = 0; index < count; index++) {
    const end = writeDecimal(buffer, prefix.length, index);
    points[index] = murmur3Prefix(buffer, end, VNODE_SEED);
  }
  return points;
}

/** Write the ASCII decimal digits of a non-negative integer at `offset`; returns the end. */
function writeDecimal(buffer: Uint8Array, offset: number, value: number): number {
  let digits = 1;
  for (let rest = value; rest >= 10; rest = Math.floor(rest / 10)) digits++;
  for (let i = digits - 1, rest = value; i >= 0; i--, rest = Math.floor(rest / 10)) {
    buffer[offset + i] = 0x30 + (rest % 10);
  }
  return offset + digits;
}

/** Positions in a ring's sort keys: one per virtual node. */
const TIE_RANGE = PLACEMENT_LIMITS.maxTotalVnodes;

/**
 * An immutable ring built by buildRing(). `points`/`owners` are exposed read-only for the
 * assignment walk; do not modify them.
 */
export class Ring {
  /** The members, sorted by peer id; `owners` indexes into this. */
  readonly members: readonly PlacementMember[];
  /** Virtual-node points in clockwise order (ascending, ties broken by peer then vnode index). */
  readonly points: Uint32Array;
  /** `owners[i]` is the index in `members` of the peer owning `points[i]`. */
  readonly owners: Uint32Array;

  private constructor(members: readonly PlacementMember[], points: Uint32Array, owners: Uint32Array) {
    this.members = members;
    this.points = points;
    this.owners = owners;
  }

  /** @internal Use buildRing(); this trusts `members` to be validated and sorted by peer id. */
  static fromSortedMembers(members: readonly PlacementMember[], vnodesPerUnitCapacity: number): Ring {
    const counts = members.map((m) => vnodeCountFor(m.capacity, vnodesPerUnitCapacity));
    const total = counts.reduce((sum, c) => sum + c, 0);
    // Sort keys `point * 2^20 + k`, k being the position in member-then-vnode order (< 2^20 by
    // PLACEMENT_LIMITS.maxTotalVnodes): exact in a double, so a native numeric sort orders the
    // points and breaks a tie of two equal points (rare: ~0.1% of 20-peer rings have one) by peer
    // then vnode index, never by chance.
    const keys = new Float64Array(total);
    const rawOwners = new Uint32Array(total);
    let k = 0;
    members.forEach((m, owner) => {
      for (const point of vnodePointsOf(m.peerId, counts[owner]!)) {
        keys[k] = point * TIE_RANGE + k;
        rawOwners[k] = owner;
        k++;
      }
    });
    keys.sort();
    const points = new Uint32Array(total);
    const owners = new Uint32Array(total);
    keys.forEach((key, i) => {
      const position = key % TIE_RANGE;
      points[i] = (key - position) / TIE_RANGE;
      owners[i] = rawOwners[position]!;
    });
    return new Ring(members, points, owners);
  }

  /** Index of the first virtual node at or clockwise after `point` (wrapping past the top). */
  firstVnodeAtOrAfter(point: number): number {
    let lo = 0;
    let hi = this.points.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.points[mid]! < point) lo = mid + 1;
      else hi = mid;
    }
    return lo === this.points.length ? 0 : lo;
  }

  /**
   * The plain-ring replicas of `shard`: the first `min(replicationFactor, peers)` distinct peers
   * clockwise from the shard's point, the first being the preferred primary. This ignores load;
   * assignReplicas() is the balanced assignment the cluster uses, and equals this answer for every
   * shard when its loadFactor is Infinity.
   * @throws ConfigError for a bad shardCount, shard or replicationFactor.
   */
  replicasFor(shard: number, shardCount: number, replicationFactor: number): string[] {
    validateShardCount(shardCount);
    validateShard(shard, shardCount);
    validateReplicationFactor(replicationFactor);
    const wanted = Math.min(replicationFactor, this.members.length);
    const chosen: number[] = [];
    const start = this.firstVnodeAtOrAfter(shardPoint(shard));
    for (let step = 0; step < this.points.length && chosen.length < wanted; step++) {
      const owner = this.owners[(start + step) % this.points.length]!;
      if (!chosen.includes(owner)) chosen.push(owner);
    }
    return chosen.map((i) => this.members[i]!.peerId);
  }
}

/**
 * Build the ring of `members` (in any order; each a distinct `peerId` and a positive `capacity`).
 * A peer gets `max(1, round(capacity * vnodesPerUnitCapacity))` virtual nodes (default 128 per
 * unit), so its share of the circle follows its capacity.
 * @throws ConfigError for an empty list, a bad or duplicate peer id, a bad capacity or option.
 */
export function buildRing(members: readonly PlacementMember[], opts: Partial<RingOptions> = {}): Ring {
  const { vnodesPerUnitCapacity } = validatePlacementOptions({ vnodesPerUnitCapacity: opts?.vnodesPerUnitCapacity });
  return Ring.fromSortedMembers(validateMembers(members, vnodesPerUnitCapacity), vnodesPerUnitCapacity);
}
