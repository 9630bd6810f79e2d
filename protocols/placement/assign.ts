/**
 * Replica assignment for every shard: the ring with bounded loads (see assignReplicas).
 */
import {
  validateMembers,
  validatePlacementOptions,
  type PlacementMember,
  type PlacementOptions,
} from './config.js';
import { IndexMinHeap } from './min-heap.js';
import { Ring, shardPoint } from './ring.js';

/** Slack for float rounding in floor/ceil of shares, far below any meaningful share. */
const EPSILON = 1e-9;

/**
 * Each member's fair share of `total` replicas, proportional to capacity but never more than
 * `perMemberMax` (a peer holds a shard at most once): water-filling, the largest capacities are
 * clamped first and the rest is shared among the others. Members must be in a fixed order (sorted
 * by id) so that the float sums are the same on every peer.
 */
export function fairShares(members: readonly PlacementMember[], total: number, perMemberMax: number): number[] {
  const shares = new Array<number>(members.length).fill(0);
  const byCapacityDesc = members.map((_, i) => i).sort((a, b) => members[b]!.capacity - members[a]!.capacity || a - b);
  let remaining = total;
  let capacityLeft = members.reduce((sum, m) => sum + m.capacity, 0);
  let next = 0;
  // Clamp while the largest remaining member's proportional share would exceed the maximum.
  while (next < byCapacityDesc.length) {
    const i = byCapacityDesc[next]!;
    if ((remaining * members[i]!.capacity) / capacityLeft <= perMemberMax) break;
    shares[i] = perMemberMax;
    remaining -= perMemberMax;
    capacityLeft -= members[i]!.capacity;
    next++;
  }
  for (; next < byCapacityDesc.length; next++) {
    const i = byCapacityDesc[next]!;
    shares[i] = (remaining * members[i]!.capacity) / capacityLeft;
  }
  return shares;
}

/**
 * Most replicas a member may hold: `floor(loadFactor * share)`, but never below `ceil(share)` (so
 * the caps always add up to at least the total and every replica finds a place) and never above
 * `perMemberMax`. With Infinity as the factor, there is no bound below `perMemberMax`.
 */
export function loadCaps(shares: readonly number[], loadFactor: number, perMemberMax: number): number[] {
  return shares.map((share) => {
    const fair = Math.ceil(share - EPSILON);
    const bounded = Math.floor(loadFactor * share + EPSILON);
    return Math.min(perMemberMax, Math.max(fair, bounded));
  });
}

/**
 * The replicas of every shard: `result[shard]` lists `min(replicationFactor, members)` distinct
 * peer ids, the preferred primary first.
 *
 * Algorithm: consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam 2018), made
 * independent of any processing order by treating it as a stable matching on ring distance.
 *
 * 1. Caps. Each peer's fair share of the `shardCount * R` replicas is proportional to its
 *    capacity (fairShares); it may hold at most `floor(loadFactor * share)` (loadCaps).
 * 2. Replica sets. Every (shard, virtual node) pair has a distance: how far clockwise the virtual
 *    node lies from the shard's point. Pairs are taken in increasing distance (ties by shard
 *    index), and a pair gives its peer a replica of the shard if the shard still needs one, does
 *    not hold that peer yet, and the peer is under its cap. This is the stable matching in which
 *    shards and peers both prefer ring-closer partners: no shard and peer would both rather be
 *    matched to each other. In the rare case that a shard's lap ends short because every peer it
 *    lacks is at its cap, short chains of swaps complete it without exceeding any cap.
 * 3. Primary. Pairs (shard, chosen peer) are taken in the same distance order once more and a
 *    shard's primary is the first whose peer holds fewer than `floor(loadFactor * primaryShare)`
 *    primaries (primaryShare: its capacity-proportional share of the `shardCount` primaries),
 *    completed by chains of hand-overs; only if none exists, the closest. Primaries serve writes
 *    and strong reads, so this balances serving load as well as storage. The other replicas
 *    follow in clockwise order.
 *
 * Why bounded loads: 64 shards give each of n peers a roughly binomial number of replicas on a
 * plain ring, so the fullest of 20 equal peers holds about 1.9x the mean, however many virtual
 * nodes there are; the caps hold it to `loadFactor` (default 1.25). Why a stable matching rather
 * than a walk shard by shard: no shard is favoured for its index, a joining peer mostly takes
 * replicas it is ring-closest to, and the peers it relieves pick up only the few pairs their caps
 * had refused (a walk in shard order measured worse: more joins over 1.5x, and ~30% more extra
 * movement when a peer leaves).
 *
 * Measured with 64 shards, R = 3, 3..20 equal peers and 200 sets of peer ids: adding a peer
 * changes on average 1.09x its fair share of replicas (a plain ring: 1.0x); one join in 40 costs
 * more than 1.5x and the worst 2.0x, when the newcomer is ring-closest to many shards and the
 * caps push the surplus on (a plain ring also exceeds 1.5x for one join in 60). Removing a peer
 * moves its replicas plus at most ~0.8x a fair share more. Limits to know: caps bound the fullest
 * peer, not the emptiest (the least-loaded of 20 equal peers typically holds about half the mean,
 * at worst a fifth); and a peer holds a shard at most once, so weights saturate when R is a large
 * part of the peers: a capacity-2 peer among capacity-1 peers holds on average ~1.8x their
 * replicas at 10 peers and ~1.9x at 20 (1024 shards; 64 shards add sampling noise around that).
 * With no cap binding (loadFactor Infinity), the result equals Ring.replicasFor for every shard.
 *
 * Deterministic: members are sorted by id and every tie has a fixed break, so every peer derives
 * the same assignment from the same members, in any order.
 *
 * @throws ConfigError for bad members (empty, bad or duplicate ids, bad capacities) or options.
 */
export function assignReplicas(members: readonly PlacementMember[], opts: Partial<PlacementOptions> = {}): string[][] {
  const options = validatePlacementOptions(opts);
  const sorted = validateMembers(members, options.vnodesPerUnitCapacity);
  const ring = Ring.fromSortedMembers(sorted, options.vnodesPerUnitCapacity);
  const { shardCount, loadFactor } = options;
  const perShard = Math.min(options.replicationFactor, sorted.length);

  const replicaCaps = loadCaps(fairShares(sorted, shardCount * perShard, shardCount), loadFactor, shardCount);
  const chosen = chooseReplicaSets(ring, shardCount, perShard, replicaCaps);
  const primaryCaps = loadCaps(fairShares(sorted, shardCount, shardCount), loadFactor, shardCount);
  return orderPrimaryFirst(chosen, primaryCaps).map((peers) => peers.map((p) => sorted[p]!.peerId));
}

/** A replica chosen for a shard: the peer (index in ring.members) and its clockwise distance. */
interface Choice {
  peer: number;
  distance: number;
}

/** Clockwise distance from `from` to `to` on the 32-bit circle. */
function clockwise(from: number, to: number): number {
  return (to - from) >>> 0;
}

/**
 * Step 2 of assignReplicas: per shard, `perShard` distinct peers in clockwise order.
 *
 * Every shard walks the ring from its point; a heap always advances the walk whose next virtual
 * node is the closest of all, which visits the (shard, virtual node) pairs in global distance
 * order while looking at only the few pairs each shard needs. A shard whose lap ends short (every
 * peer it lacks is at its cap: small shard counts, R close to the number of peers, uneven
 * capacities) then gets its replicas through augmenting paths (augmentReplica). The caps always
 * admit a complete assignment (each is at least the ceiling of a share that is at most
 * shardCount, and they add up to at least the total), so no cap is ever exceeded.
 */
function chooseReplicaSets(ring: Ring, shardCount: number, perShard: number, caps: readonly number[]): Choice[][] {
  const size = ring.points.length;
  const load = new Array<number>(ring.members.length).fill(0);
  const chosen: Choice[][] = Array.from({ length: shardCount }, () => []);
  const origin = Array.from({ length: shardCount }, (_, shard) => shardPoint(shard));
  const start = origin.map((point) => ring.firstVnodeAtOrAfter(point));
  const steps = new Array<number>(shardCount).fill(0);
  // distance[shard]: from the shard's point to the virtual node its walk is at.
  const distance = origin.map((point, shard) => clockwise(point, ring.points[start[shard]!]!));

  const queue = new IndexMinHeap((a, b) => distance[a]! < distance[b]! || (distance[a] === distance[b] && a < b));
  for (let shard = 0; shard < shardCount; shard++) queue.push(shard);
  for (let shard = queue.pop(); shard !== undefined; shard = queue.pop()) {
    const index = (start[shard]! + steps[shard]!) % size;
    const peer = ring.owners[index]!;
    if (!holds(chosen[shard]!, peer) && load[peer]! < caps[peer]!) {
      chosen[shard]!.push({ peer, distance: distance[shard]! });
      load[peer]!++;
    }
    steps[shard]!++;
    if (chosen[shard]!.length < perShard && steps[shard]! < size) {
      distance[shard] = clockwise(origin[shard]!, ring.points[(index + 1) % size]!);
      queue.push(shard);
    }
  }

  const candidates = new CandidateLists(ring, origin, start);
  for (let shard = 0; shard < shardCount; shard++) {
    while (chosen[shard]!.length < perShard) {
      if (!augmentReplica(shard, chosen, load, caps, candidates)) {
        throw new Error(`placement invariant: no replica within the caps for shard ${shard}`);
      }
    }
  }
  for (const choices of chosen) choices.sort((a, b) => a.distance - b.distance || a.peer - b.peer);
  return chosen;
}

function holds(choices: readonly Choice[], peer: number): boolean {
  return choices.some((c) => c.peer === peer);
}

/** Every peer in clockwise order from a shard's point, with distances; computed on first use. */
class CandidateLists {
  private readonly lists = new Map<number, Choice[]>();

  constructor(
    private readonly ring: Ring,
    private readonly origin: readonly number[],
    private readonly start: readonly number[],
  ) {}

  of(shard: number): readonly Choice[] {
    let list = this.lists.get(shard);
    if (list === undefined) {
      const { points, owners, members } = this.ring;
      const seen = new Set<number>();
      list = [];
      for (let step = 0; step < points.length && seen.size < members.length; step++) {
        const index = (this.start[shard]! + step) % points.length;
        const peer = owners[index]!;
        if (seen.has(peer)) continue;
        seen.add(peer);
        list.push({ peer, distance: clockwise(this.origin[shard]!, points[index]!) });
      }
      this.lists.set(shard, list);
    }
    return list;
  }
}

/**
 * Give `shard` one more replica within the caps by the shortest chain of swaps: the shard takes a
 * capped peer q1 it lacks, a shard holding q1 swaps it for a peer q2 it lacks, and so on until a
 * peer under its cap. Breadth first over peers, candidates in clockwise order, held shards by
 * index; an augmenting path of bipartite b-matching, so it finds a chain whenever one exists.
 * Updates `chosen` and `load`; false if there is none.
 */
function augmentReplica(
  shard: number,
  chosen: Choice[][],
  load: number[],
  caps: readonly number[],
  candidates: CandidateLists,
): boolean {
  const holdersOf = caps.map((): number[] => []);
  chosen.forEach((choices, other) => choices.forEach((c) => holdersOf[c.peer]!.push(other)));
  // How each reached peer would be taken: by `taker`, which gives up `gives` (none for `shard`).
  const reached = new Map<number, { taker: number; choice: Choice; gives: number | null }>();
  const frontier: number[] = [];
  const reach = (taker: number, gives: number | null): void => {
    for (const choice of candidates.of(taker)) {
      if (reached.has(choice.peer) || holds(chosen[taker]!, choice.peer)) continue;
      reached.set(choice.peer, { taker, choice, gives });
      frontier.push(choice.peer);
    }
  };
  reach(shard, null);
  for (let head = 0; head < frontier.length; head++) {
    const peer = frontier[head]!;
    if (load[peer]! < caps[peer]!) {
      load[peer]!++;
      for (let taken: number | null = peer; taken !== null; ) {
        const { taker, choice, gives }: { taker: number; choice: Choice; gives: number | null } = reached.get(taken)!;
        const choices = chosen[taker]!;
        if (gives !== null) choices.splice(choices.findIndex((c) => c.peer === gives), 1);
        choices.push(choice);
        taken = gives;
      }
      return true;
    }
    for (const other of holdersOf[peer]!) {
      if (other !== shard) reach(other, peer);
    }
  }
  return false;
}

/**
 * Step 3 of assignReplicas: move each shard's primary to the front, the others staying in
 * clockwise order. First greedily in distance order; a shard whose peers are all at their primary
 * cap then looks for an augmenting path (one of its peers hands a primary over to another peer of
 * that other shard, and so on, breadth first), as in bipartite matching: the greedy pass alone
 * leaves the fullest of 20 peers at ~1.9x the mean number of primaries, the paths bring it to the
 * cap. Only when no path exists does a shard take its closest peer over the cap.
 */
function orderPrimaryFirst(chosen: readonly Choice[][], caps: readonly number[]): number[][] {
  const pairs: Array<{ shard: number; choice: Choice }> = [];
  chosen.forEach((choices, shard) => choices.forEach((choice) => pairs.push({ shard, choice })));
  pairs.sort((a, b) => a.choice.distance - b.choice.distance || a.shard - b.shard || a.choice.peer - b.choice.peer);

  const primaryOf = new Array<number>(chosen.length).fill(-1);
  const load = new Array<number>(caps.length).fill(0);
  for (const { shard, choice } of pairs) {
    if (primaryOf[shard] !== -1 || load[choice.peer]! >= caps[choice.peer]!) continue;
    primaryOf[shard] = choice.peer;
    load[choice.peer]!++;
  }
  for (let shard = 0; shard < chosen.length; shard++) {
    if (primaryOf[shard] !== -1) continue;
    if (!augmentPrimary(shard, chosen, caps, primaryOf, load)) {
      primaryOf[shard] = chosen[shard]![0]!.peer;
      load[primaryOf[shard]!]!++;
    }
  }
  return chosen.map((choices, shard) => {
    const primary = primaryOf[shard]!;
    return [primary, ...choices.map((c) => c.peer).filter((p) => p !== primary)];
  });
}

/**
 * Give `shard` a primary under the caps by a shortest chain of hand-overs: breadth first over
 * peers, from the shard's own peers (clockwise), through the shards each full peer is primary of
 * (by index) to their other peers. Updates `primaryOf` and `load`; false if no chain exists.
 */
function augmentPrimary(
  shard: number,
  chosen: readonly Choice[][],
  caps: readonly number[],
  primaryOf: number[],
  load: number[],
): boolean {
  const primaryShardsOf = caps.map((): number[] => []);
  primaryOf.forEach((peer, other) => {
    if (peer !== -1) primaryShardsOf[peer]!.push(other);
  });
  // reachedVia.get(peer) = the shard whose primary would become `peer` on the chain.
  const reachedVia = new Map<number, number>();
  const frontier: number[] = [];
  for (const { peer } of chosen[shard]!) {
    if (!reachedVia.has(peer)) {
      reachedVia.set(peer, shard);
      frontier.push(peer);
    }
  }
  for (let head = 0; head < frontier.length; head++) {
    const peer = frontier[head]!;
    if (load[peer]! < caps[peer]!) {
      // Walk the chain back: each shard on it takes the peer that reached it, freeing its old one.
      load[peer]!++;
      for (let free = peer; ; ) {
        const via = reachedVia.get(free)!;
        const previous = primaryOf[via]!;
        primaryOf[via] = free;
        if (via === shard) return true;
        free = previous;
      }
    }
    for (const other of primaryShardsOf[peer]!) {
      for (const { peer: next } of chosen[other]!) {
        if (!reachedVia.has(next)) {
          reachedVia.set(next, other);
          frontier.push(next);
        }
      }
    }
  }
  return false;
}
