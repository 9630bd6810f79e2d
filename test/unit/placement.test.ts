import assert from 'node:assert/strict';
import { describe, it } from 'mocha';
import {
  assignReplicas,
  buildRing,
  DEFAULT_PLACEMENT_OPTIONS,
  diffAssignments,
  fairShares,
  hashKey,
  loadCaps,
  murmur3x86_32,
  shardOf,
  type PlacementMember,
} from '../../protocols/placement/index.js';
import { SeededRandom } from '../../protocols/random.js';

const BASE58 = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz';

/** `count` libp2p-like peer ids ('12D3KooW' + 44 base58 characters), the same for the same seed. */
function peerIds(seed: number, count: number): string[] {
  const random = new SeededRandom(seed);
  return Array.from({ length: count }, () => {
    let id = '12D3KooW';
    for (let i = 0; i < 44; i++) id += BASE58[random.int(0, BASE58.length - 1)];
    return id;
  });
}

function equalMembers(ids: readonly string[]): PlacementMember[] {
  return ids.map((peerId) => ({ peerId, capacity: 1 }));
}

function shuffled<T>(items: readonly T[], random: SeededRandom): T[] {
  const copy = [...items];
  for (let i = copy.length - 1; i > 0; i--) {
    const j = random.int(0, i);
    [copy[i], copy[j]] = [copy[j]!, copy[i]!];
  }
  return copy;
}

/** Replicas per peer id (peers holding none are absent). */
function loadsOf(assignment: readonly string[][]): Map<string, number> {
  const loads = new Map<string, number>();
  for (const replicas of assignment) for (const peer of replicas) loads.set(peer, (loads.get(peer) ?? 0) + 1);
  return loads;
}

function primariesOf(assignment: readonly string[][]): Map<string, number> {
  return loadsOf(assignment.map((replicas) => replicas.slice(0, 1)));
}

/** Replica slots that changed hands: every added peer is one replica to copy. */
function changedReplicas(before: string[][], after: string[][]): number {
  return diffAssignments(before, after).reduce((sum, change) => sum + change.added.length, 0);
}

function assertConfigError(fn: () => unknown, field?: string): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof Error);
    assert.equal(error.name, 'ConfigError');
    if (field !== undefined) assert.equal((error as Error & { field: string }).field, field);
    return true;
  });
}

const SHARDS = 64;
const R = 3;
const ID_SETS = 20;
const MIN_PEERS = 3;
const MAX_PEERS = 20;

/**
 * For each of ID_SETS seeds, 20 peer ids and the default assignment of the first n of them for
 * every n in 3..20: a cluster growing one peer at a time. Computed once, shared by the balance and
 * movement tests.
 */
let growthCache: Array<{ ids: string[]; byCount: Map<number, string[][]> }> | undefined;
function growth(): NonNullable<typeof growthCache> {
  growthCache ??= Array.from({ length: ID_SETS }, (_, s) => {
    const ids = peerIds(1000 + s, MAX_PEERS);
    const byCount = new Map<number, string[][]>();
    for (let n = MIN_PEERS; n <= MAX_PEERS; n++) byCount.set(n, assignReplicas(equalMembers(ids.slice(0, n))));
    return { ids, byCount };
  });
  return growthCache;
}

describe('placement', () => {
  describe('murmur3x86_32', () => {
    it('matches the published MurmurHash3 x86_32 test vectors (SMHasher-derived)', () => {
      const vectors: Array<[number[], number, number]> = [
        [[], 0, 0x00000000],
        [[], 1, 0x514e28b7],
        [[], 0xffffffff, 0x81f16f39],
        [[0xff, 0xff, 0xff, 0xff], 0, 0x76293b50],
        [[0x21, 0x43, 0x65, 0x87], 0, 0xf55b516b],
        [[0x21, 0x43, 0x65, 0x87], 0x5082edee, 0x2362f9de],
        [[0x21, 0x43, 0x65], 0, 0x7e4a8634],
        [[0x21, 0x43], 0, 0xa0f7b07a],
        [[0x21], 0, 0x72661cf4],
        [[0, 0, 0, 0], 0, 0x2362f9de],
        [[0, 0, 0], 0, 0x85f0b427],
        [[0, 0], 0, 0x30f4c306],
        [[0], 0, 0x514e28b7],
      ];
      for (const [bytes, seed, expected] of vectors) {
        assert.equal(murmur3x86_32(Uint8Array.from(bytes), seed), expected, `bytes [${bytes.join(',')}] seed ${seed}`);
      }
    });

    it('hashes strings as their UTF-8 bytes', () => {
      const vectors: Array<[string, number, number]> = [
        ['Hello, world!', 0x9747b28c, 0x24884cba],
        ['ππππππππ', 0x9747b28c, 0xd58063c1],
        ['abc', 0, 0xb3dd93fa],
        ['aaaa', 0x9747b28c, 0x5a97808a],
        ['abcd', 0x9747b28c, 0xf0478627],
        ['a', 0x9747b28c, 0x7fa09ea6],
        ['The quick brown fox jumps over the lazy dog', 0x9747b28c, 0x2fa826cd],
        ['hello, world', 0, 345750399],
        ['Hello, world!', 0, 3224780355],
      ];
      for (const [text, seed, expected] of vectors) {
        assert.equal(hashKey(text, seed), expected, JSON.stringify(text));
        assert.equal(hashKey(new TextEncoder().encode(text), seed), expected);
      }
    });
  });

  describe('shardOf', () => {
    it('is pinned: hash(key) mod shardCount, for strings and bytes alike', () => {
      assert.equal(shardOf('hello, world', 64), 345750399 % 64);
      assert.equal(shardOf('abc', 64), 0xb3dd93fa % 64);
      assert.equal(shardOf('abc', 1024), 0xb3dd93fa % 1024);
      assert.equal(shardOf(new TextEncoder().encode('abc'), 8), 0xb3dd93fa % 8);
    });

    it('returns an integer in [0, shardCount) for every allowed shard count', () => {
      const random = new SeededRandom(7);
      for (let shardCount = 8; shardCount <= 1024; shardCount *= 2) {
        for (let i = 0; i < 200; i++) {
          const key = Uint8Array.from({ length: random.int(0, 40) }, () => random.int(0, 255));
          const shard = shardOf(key, shardCount);
          assert.ok(Number.isInteger(shard) && shard >= 0 && shard < shardCount);
        }
      }
    });

    it('spreads 100k keys evenly (chi-square below the 0.1% critical value)', () => {
      /** Pearson's chi-square statistic of the counts against a uniform spread. */
      const chiSquare = (counts: number[], total: number): number => {
        const expected = total / counts.length;
        return counts.reduce((sum, c) => sum + (c - expected) ** 2 / expected, 0);
      };
      const KEYS = 100_000;
      // Sequential text keys, the case that exposes weak low bits.
      const counts64 = new Array<number>(64).fill(0);
      for (let i = 0; i < KEYS; i++) counts64[shardOf(`user:${i}`, 64)]!++;
      assert.ok(chiSquare(counts64, KEYS) < 103.4, `chi-square ${chiSquare(counts64, KEYS)} (63 dof)`);
      // Random binary keys over the largest shard count.
      const random = new SeededRandom(42);
      const counts1024 = new Array<number>(1024).fill(0);
      const key = new Uint8Array(16);
      for (let i = 0; i < KEYS; i++) {
        for (let b = 0; b < key.length; b++) key[b] = random.int(0, 255);
        counts1024[shardOf(key, 1024)]!++;
      }
      assert.ok(chiSquare(counts1024, KEYS) < 1168, `chi-square ${chiSquare(counts1024, KEYS)} (1023 dof)`);
    });

    it('refuses a shard count that is not a power of two in [8, 1024]', () => {
      for (const bad of [0, 4, 7, 12, 2048, 64.5, Number.NaN, -64]) assertConfigError(() => shardOf('k', bad), 'shardCount');
    });
  });

  describe('buildRing', () => {
    it('gives each peer max(1, round(capacity * 128)) virtual nodes', () => {
      const ring = buildRing([
        { peerId: 'a', capacity: 1 },
        { peerId: 'b', capacity: 2.5 },
        { peerId: 'c', capacity: 0.001 },
      ]);
      const perPeer = new Map<string, number>();
      for (const owner of ring.owners) perPeer.set(ring.members[owner]!.peerId, (perPeer.get(ring.members[owner]!.peerId) ?? 0) + 1);
      assert.deepEqual(Object.fromEntries(perPeer), { a: 128, b: 320, c: 1 });
      assert.equal(buildRing([{ peerId: 'a', capacity: 1 }], { vnodesPerUnitCapacity: 16 }).points.length, 16);
      for (let i = 1; i < ring.points.length; i++) assert.ok(ring.points[i - 1]! <= ring.points[i]!);
    });

    it('replicasFor: the first R distinct peers clockwise, all peers when R exceeds them', () => {
      const ids = peerIds(5, 6);
      const ring = buildRing(equalMembers(ids));
      for (let shard = 0; shard < SHARDS; shard++) {
        const replicas = ring.replicasFor(shard, SHARDS, R);
        assert.equal(replicas.length, R);
        assert.equal(new Set(replicas).size, R);
        // R is a prefix of a longer walk: the walk is the same, just longer.
        assert.deepEqual(ring.replicasFor(shard, SHARDS, 5).slice(0, R), replicas);
        assert.deepEqual([...ring.replicasFor(shard, SHARDS, 16)].sort(), [...ids].sort());
      }
    });

    it('is the same ring whatever the order of the members', () => {
      const members = equalMembers(peerIds(9, 12));
      const a = buildRing(members);
      const b = buildRing(shuffled(members, new SeededRandom(3)));
      assert.deepEqual(a.points, b.points);
      assert.deepEqual(a.owners, b.owners);
    });

    it('validates its input with ConfigError', () => {
      const ring = buildRing(equalMembers(['a', 'b']));
      assertConfigError(() => ring.replicasFor(64, 64, 3), 'shard');
      assertConfigError(() => ring.replicasFor(0, 48, 3), 'shardCount');
      assertConfigError(() => ring.replicasFor(0, 64, 0), 'replicationFactor');
      assertConfigError(() => buildRing([]), 'members');
      assertConfigError(() => buildRing(equalMembers(['a', 'a'])), 'members[1].peerId');
      assertConfigError(() => buildRing([{ peerId: 'a', capacity: 0 }]), 'members[0].capacity');
      assertConfigError(() => buildRing([{ peerId: 'a', capacity: 1 }], { vnodesPerUnitCapacity: 0 }), 'vnodesPerUnitCapacity');
      assertConfigError(() => buildRing([{ peerId: 'a', capacity: 100_000 }]), 'capacity');
    });
  });

  describe('assignReplicas', () => {
    it('defaults to 64 shards of 3 distinct replicas; fewer peers than R means all of them', () => {
      assert.equal(DEFAULT_PLACEMENT_OPTIONS.shardCount, 64);
      assert.equal(DEFAULT_PLACEMENT_OPTIONS.replicationFactor, 3);
      const five = assignReplicas(equalMembers(peerIds(1, 5)));
      assert.equal(five.length, 64);
      for (const replicas of five) assert.equal(new Set(replicas).size, 3);
      for (const n of [1, 2]) {
        const ids = peerIds(2, n);
        for (const replicas of assignReplicas(equalMembers(ids))) assert.deepEqual([...replicas].sort(), [...ids].sort());
      }
    });

    it('balance: largest/mean replicas per peer <= 1.25 for 3..20 equal peers, 20 id sets each', () => {
      let worst = 0;
      for (const { byCount } of growth()) {
        for (const [n, assignment] of byCount) {
          const loads = loadsOf(assignment);
          const mean = (SHARDS * R) / n;
          const ratio = Math.max(...loads.values()) / mean;
          assert.ok(ratio <= 1.25, `n=${n}: largest/mean ${ratio.toFixed(3)}`);
          // Primaries (write load) are balanced too.
          const primaryRatio = Math.max(...primariesOf(assignment).values()) / (SHARDS / n);
          assert.ok(primaryRatio <= 1.25, `n=${n}: primaries largest/mean ${primaryRatio.toFixed(3)}`);
          worst = Math.max(worst, ratio);
        }
      }
      assert.ok(worst > 1, 'loads are not trivially equal');
    });

    it('movement: adding the n-th peer changes about 1/n of the replicas (n = 4..20, 20 id sets)', () => {
      // Every id set: at most 2x the new peer's fair share. Per n, the mean over the id sets: at
      // most 1.5x, and at least 90% of the sets within 1.5x. (A single set can exceed 1.5x, as on
      // a plain ring, when the newcomer is ring-closest to many shards: see assignReplicas.)
      let within = 0;
      let total = 0;
      for (let n = MIN_PEERS + 1; n <= MAX_PEERS; n++) {
        const share = (SHARDS * R) / n;
        let sum = 0;
        for (const { ids, byCount } of growth()) {
          const after = byCount.get(n)!;
          const changed = changedReplicas(byCount.get(n - 1)!, after);
          assert.ok(changed <= 2 * share, `n=${n}: ${changed} changed, fair share ${share.toFixed(1)}`);
          assert.ok((loadsOf(after).get(ids[n - 1]!) ?? 0) > 0, 'the newcomer holds replicas');
          sum += changed;
          if (changed <= 1.5 * share) within++;
          total++;
        }
        const mean = sum / ID_SETS;
        assert.ok(mean <= 1.5 * share, `n=${n}: mean ${mean.toFixed(1)} changed, fair share ${share.toFixed(1)}`);
      }
      assert.ok(within >= 0.9 * total, `${within}/${total} id sets within 1.5x`);
    });

    it('movement: removing a peer moves its replicas plus at most one fair share more', () => {
      for (const [s, { ids, byCount }] of growth().entries()) {
        for (let n = MIN_PEERS + 1; n <= MAX_PEERS; n++) {
          const before = byCount.get(n)!;
          const leaving = ids[(s * 7) % n]!;
          const after = assignReplicas(equalMembers(ids.slice(0, n).filter((id) => id !== leaving)));
          const changes = diffAssignments(before, after);
          const own = loadsOf(before).get(leaving) ?? 0;
          assert.equal(changes.reduce((sum, c) => sum + c.removed.filter((p) => p === leaving).length, 0), own);
          assert.ok(after.every((replicas) => !replicas.includes(leaving)));
          const extra = changedReplicas(before, after) - own;
          const share = (SHARDS * R) / n;
          assert.ok(extra <= share, `n=${n}: ${extra} moved beyond the leaver's ${own}, fair share ${share.toFixed(1)}`);
        }
      }
    });

    it('weights: a capacity-2 peer holds about twice what a capacity-1 peer does', () => {
      // The cap is proportional to capacity; the ring's sampling noise over 64 shards is large
      // for one id set, so 64 shards are checked on the mean of 20 sets and 1024 shards per set.
      const ratioOf = (n: number, seed: number, shardCount: number): number => {
        const ids = peerIds(seed, n);
        const members = ids.map((peerId, i) => ({ peerId, capacity: i === 0 ? 2 : 1 }));
        const loads = loadsOf(assignReplicas(members, { shardCount }));
        const others = ids.slice(1).map((id) => loads.get(id) ?? 0);
        return (loads.get(ids[0]!) ?? 0) / (others.reduce((a, b) => a + b, 0) / others.length);
      };
      for (const n of [10, 15, 20]) {
        const ratios = Array.from({ length: ID_SETS }, (_, s) => ratioOf(n, 5000 + s, 64));
        const mean = ratios.reduce((a, b) => a + b, 0) / ratios.length;
        assert.ok(mean >= 1.5 && mean <= 2.5, `n=${n}, 64 shards: mean ratio ${mean.toFixed(2)}`);
        for (let s = 0; s < 3; s++) {
          const ratio = ratioOf(n, 6000 + s, 1024);
          assert.ok(ratio >= 1.5 && ratio <= 2.5, `n=${n}, 1024 shards: ratio ${ratio.toFixed(2)}`);
        }
      }
    });

    it('never exceeds a cap, and replicas stay distinct, across random sizes and capacities', () => {
      const random = new SeededRandom(11);
      for (let round = 0; round < 120; round++) {
        const n = random.int(1, 24);
        const replicationFactor = random.int(1, 6);
        const shardCount = random.pick([8, 16, 32, 64]);
        const members = peerIds(round, n).map((peerId) => ({ peerId, capacity: random.pick([0.5, 1, 1, 2, 3.7]) }));
        const assignment = assignReplicas(members, { shardCount, replicationFactor });
        const perShard = Math.min(replicationFactor, n);
        for (const replicas of assignment) {
          assert.equal(replicas.length, perShard);
          assert.equal(new Set(replicas).size, perShard);
        }
        const sorted = [...members].sort((a, b) => (a.peerId < b.peerId ? -1 : 1));
        const caps = loadCaps(fairShares(sorted, shardCount * perShard, shardCount), 1.25, shardCount);
        const loads = loadsOf(assignment);
        sorted.forEach((m, i) => assert.ok((loads.get(m.peerId) ?? 0) <= caps[i]!, `round ${round}: ${m.peerId} over its cap`));
      }
    });

    it('is deterministic: shuffled member order gives identical assignments', () => {
      const random = new SeededRandom(99);
      for (const n of [3, 7, 20]) {
        const members = peerIds(300 + n, n).map((peerId, i) => ({ peerId, capacity: 1 + (i % 3) / 2 }));
        const expected = assignReplicas(members);
        for (let i = 0; i < 3; i++) assert.deepEqual(assignReplicas(shuffled(members, random)), expected);
      }
    });

    it('equals the plain ring (replicasFor) with the bound turned off', () => {
      const members = equalMembers(peerIds(77, 9));
      const ring = buildRing(members);
      const unbounded = assignReplicas(members, { loadFactor: Infinity });
      unbounded.forEach((replicas, shard) => assert.deepEqual(replicas, ring.replicasFor(shard, SHARDS, R)));
    });

    it('validates members and options with ConfigError', () => {
      const ok = equalMembers(['a', 'b', 'c']);
      assertConfigError(() => assignReplicas(equalMembers(['x', 'y', 'x'])), 'members[2].peerId');
      for (const capacity of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
        assertConfigError(() => assignReplicas([{ peerId: 'a', capacity }]), 'members[0].capacity');
      }
      assertConfigError(() => assignReplicas([{ peerId: '', capacity: 1 }]), 'members[0].peerId');
      assertConfigError(() => assignReplicas([]), 'members');
      for (const shardCount of [4, 100, 2048]) assertConfigError(() => assignReplicas(ok, { shardCount }), 'shardCount');
      for (const replicationFactor of [0, 1.5, 17]) {
        assertConfigError(() => assignReplicas(ok, { replicationFactor }), 'replicationFactor');
      }
      assertConfigError(() => assignReplicas(ok, { loadFactor: 0.9 }), 'loadFactor');
      assertConfigError(() => assignReplicas(ok, { shards: 64 } as never), 'shards');
    });
  });

  describe('diffAssignments', () => {
    it('lists, per changed shard, the peers added and removed', () => {
      const before = [['a', 'b', 'c'], ['b', 'c', 'd'], ['c', 'd', 'a']];
      const after = [['a', 'b', 'c'], ['e', 'c', 'b'], ['d', 'c', 'e']];
      assert.deepEqual(diffAssignments(before, after), [
        { shard: 1, added: ['e'], removed: ['d'] },
        { shard: 2, added: ['e'], removed: ['a'] },
      ]);
    });

    it('ignores a new order of the same peers, and treats an empty side as no replicas', () => {
      assert.deepEqual(diffAssignments([['a', 'b']], [['b', 'a']]), []);
      assert.deepEqual(diffAssignments([], [['a'], ['b']]), [
        { shard: 0, added: ['a'], removed: [] },
        { shard: 1, added: ['b'], removed: [] },
      ]);
      assert.deepEqual(diffAssignments([['a']], []), [{ shard: 0, added: [], removed: ['a'] }]);
    });

    it('refuses assignments of different shard counts', () => {
      assertConfigError(() => diffAssignments([['a']], [['a'], ['b']]), 'shardCount');
    });
  });
});
