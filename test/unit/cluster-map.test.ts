import assert from 'node:assert/strict';
import { SeededRandom } from '../../protocols/random.js';
import {
  ClusterMap,
  DEFAULT_CLUSTER_SETTINGS,
  effectiveMinInSync,
  decodeClusterCommand,
  encodeClusterCommand,
  type ApplyResult,
  type ClusterCommand,
  type ShardAssignment,
} from '../../protocols/cluster-map/index.js';

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);

function assertRejected(result: ApplyResult, reason: string): void {
  assert.equal(result.ok, false);
  if (!result.ok) assert.equal(result.reason, reason);
}

function bootstrapped(shardCount = 8): ClusterMap {
  const map = new ClusterMap();
  assert.deepEqual(map.apply({ type: 'bootstrap', settings: { shardCount } }), { ok: true });
  for (const id of ['a', 'b', 'c', 'd']) assert.ok(map.apply({ type: 'add-member', peerId: id, addrs: [`/ip4/127.0.0.1/tcp/${id.charCodeAt(0)}`] }).ok);
  return map;
}

function assignment(replicas: string[], epoch = 1, primary: string | null = replicas[0] ?? null, inSync = replicas): ShardAssignment {
  return { replicas, primary, inSync, epoch };
}

function fullAssignment(shardCount: number, epoch = 1): ClusterCommand {
  const ids = ['a', 'b', 'c', 'd'];
  return {
    type: 'set-shard-assignment',
    full: true,
    updates: Array.from({ length: shardCount }, (_, shard) => ({
      shard,
      assignment: assignment([ids[shard % 4]!, ids[(shard + 1) % 4]!, ids[(shard + 2) % 4]!], epoch),
    })),
  };
}

/** Every command below must be rejected with `reason` and leave the map byte-identical. */
function assertRejectedUnchanged(map: ClusterMap, cmd: ClusterCommand, reason: string): void {
  const before = map.snapshot();
  assertRejected(map.apply(cmd), reason);
  assert.deepEqual(map.snapshot(), before, `${cmd.type} changed the map`);
}

describe('cluster map', () => {
  it('bootstraps with defaults, once', () => {
    const map = new ClusterMap();
    assert.equal(map.settings, null);
    assert.deepEqual(map.apply({ type: 'bootstrap', settings: {} }), { ok: true });
    assert.deepEqual(map.settings, DEFAULT_CLUSTER_SETTINGS);
    assert.deepEqual(map.settings, { shardCount: 64, replicationFactor: 3, minInSync: 2 });
    assert.equal(map.version, 1);
    assertRejectedUnchanged(map, { type: 'bootstrap', settings: { shardCount: 8 } }, 'already-bootstrapped');
    assert.equal(map.version, 1);
  });

  it('rejects invalid settings and commands before bootstrap', () => {
    for (const settings of [{ shardCount: 48 }, { shardCount: 4 }, { shardCount: 2048 }, { replicationFactor: 0 }, { minInSync: 4 }, { minInSync: 0 }]) {
      assertRejectedUnchanged(new ClusterMap(), { type: 'bootstrap', settings }, 'invalid-settings');
    }
    assertRejectedUnchanged(new ClusterMap(), { type: 'add-member', peerId: 'a', addrs: [] }, 'not-bootstrapped');
  });

  it('adds, updates and removes members', () => {
    const map = bootstrapped();
    assert.equal(map.version, 5);
    assert.deepEqual(map.member('a'), { addrs: ['/ip4/127.0.0.1/tcp/97'], capacity: 1, status: 'active' });
    assert.ok(map.apply({ type: 'add-member', peerId: 'e', addrs: [], capacity: 2.5 }).ok);
    assert.equal(map.member('e')?.capacity, 2.5);
    assert.ok(map.apply({ type: 'update-member', peerId: 'e', status: 'draining', capacity: 4 }).ok);
    assert.deepEqual(map.member('e'), { addrs: [], capacity: 4, status: 'draining' });
    assert.ok(map.apply({ type: 'remove-member', peerId: 'e' }).ok);
    assert.equal(map.member('e'), undefined);
    assert.equal(map.version, 8);
    assert.deepEqual(map.memberIds(), ['a', 'b', 'c', 'd']);
  });

  it('rejects bad member commands, says why, and changes nothing', () => {
    const map = bootstrapped();
    assertRejectedUnchanged(map, { type: 'add-member', peerId: 'a', addrs: [] }, 'member-exists');
    assertRejectedUnchanged(map, { type: 'update-member', peerId: 'zz', status: 'dead' }, 'unknown-member');
    assertRejectedUnchanged(map, { type: 'remove-member', peerId: 'zz' }, 'unknown-member');
    assertRejectedUnchanged(map, { type: 'add-member', peerId: 'e', addrs: [], capacity: 0 }, 'malformed');
    assertRejectedUnchanged(map, { type: 'add-member', peerId: 'e', addrs: [], capacity: -1 }, 'malformed');
    assertRejectedUnchanged(map, { type: 'add-member', peerId: 'e', addrs: [], capacity: Number.NaN }, 'malformed');
    assertRejectedUnchanged(map, { type: 'add-member', peerId: '', addrs: [] }, 'malformed');
    assertRejectedUnchanged(map, { type: 'update-member', peerId: 'a' }, 'malformed');
    assertRejectedUnchanged(map, { type: 'update-member', peerId: 'a', status: 'zombie' as 'dead' }, 'malformed');
    assert.equal(map.version, 5);
  });

  it('rejects malformed entry data', () => {
    const map = bootstrapped();
    for (const raw of ['', 'nope', '[]', '{"type":"explode"}', '{"type":"add-member","peerId":"x","addrs":[],"extra":1}', '{"type":"remove-member"}']) {
      const before = map.snapshot();
      assertRejected(map.applyEntryData(bytes(raw)), 'malformed');
      assert.deepEqual(map.snapshot(), before);
    }
  });

  it('sets full and per-shard assignments', () => {
    const map = bootstrapped();
    assertRejectedUnchanged(map, { type: 'set-shard-assignment', full: false, updates: [{ shard: 0, assignment: assignment(['a']) }] }, 'no-assignment');
    assert.ok(map.apply(fullAssignment(8)).ok);
    assert.equal(map.shards.length, 8);
    assert.deepEqual(map.shards[0], assignment(['a', 'b', 'c']));
    assert.ok(map.apply({ type: 'set-shard-assignment', full: false, updates: [{ shard: 3, assignment: assignment(['b', 'c'], 2, 'c', ['c']) }] }).ok);
    assert.deepEqual(map.shards[3], { replicas: ['b', 'c'], primary: 'c', inSync: ['c'], epoch: 2 });
    // A move in flight: replicationFactor + 1 replicas.
    assert.ok(map.apply({ type: 'set-shard-assignment', full: false, updates: [{ shard: 3, assignment: assignment(['b', 'c', 'd', 'a'], 3, 'c', ['c', 'b']) }] }).ok);
    // No primary while none is in sync.
    assert.ok(map.apply({ type: 'set-shard-assignment', full: false, updates: [{ shard: 4, assignment: assignment(['a'], 2, null, []) }] }).ok);
  });

  it('rejects invalid assignments, says why, and changes nothing', () => {
    const map = bootstrapped();
    assert.ok(map.apply(fullAssignment(8, 5)).ok);
    const one = (a: ShardAssignment, shard = 1): ClusterCommand => ({ type: 'set-shard-assignment', full: false, updates: [{ shard, assignment: a }] });
    assertRejectedUnchanged(map, one(assignment(['a', 'a'], 5)), 'invalid-assignment'); // not distinct
    assertRejectedUnchanged(map, one(assignment(['a', 'zz'], 5)), 'invalid-assignment'); // not a member
    assertRejectedUnchanged(map, one(assignment([], 5, null, [])), 'invalid-assignment'); // empty
    assertRejectedUnchanged(map, one(assignment(['a', 'b', 'c', 'd', 'a'], 5)), 'invalid-assignment'); // too many
    assertRejectedUnchanged(map, one(assignment(['a', 'b'], 5, 'c', ['a', 'b'])), 'invalid-assignment'); // primary not in sync
    assertRejectedUnchanged(map, one(assignment(['a', 'b'], 5, 'b', ['a'])), 'invalid-assignment'); // primary not in sync
    assertRejectedUnchanged(map, one(assignment(['a', 'b'], 5, 'a', ['a', 'c'])), 'invalid-assignment'); // inSync ⊄ replicas
    assertRejectedUnchanged(map, one(assignment(['a', 'b'], 4)), 'epoch-regression');
    assertRejectedUnchanged(map, one(assignment(['a', 'b'], 5), 8), 'invalid-assignment'); // shard ≥ shardCount
    assertRejectedUnchanged(
      map,
      { type: 'set-shard-assignment', full: false, updates: [{ shard: 1, assignment: assignment(['a'], 6) }, { shard: 1, assignment: assignment(['b'], 6) }] },
      'invalid-assignment',
    );
    // One bad shard rejects the whole command, even when the others are fine.
    assertRejectedUnchanged(
      map,
      { type: 'set-shard-assignment', full: false, updates: [{ shard: 1, assignment: assignment(['a'], 6) }, { shard: 2, assignment: assignment(['a'], 1) }] },
      'epoch-regression',
    );
    const short = fullAssignment(8, 6) as Extract<ClusterCommand, { type: 'set-shard-assignment' }>;
    assertRejectedUnchanged(map, { ...short, updates: short.updates.slice(0, 7) }, 'invalid-assignment');
    assertRejectedUnchanged(map, { ...short, updates: [...short.updates].reverse() }, 'invalid-assignment');
    // A member holding replicas cannot be removed; a dead one cannot become primary.
    assertRejectedUnchanged(map, { type: 'remove-member', peerId: 'a' }, 'member-in-use');
    assert.ok(map.apply({ type: 'update-member', peerId: 'd', status: 'dead' }).ok);
    assertRejectedUnchanged(map, one(assignment(['d', 'a'], 7, 'd', ['d', 'a'])), 'invalid-assignment');
    assert.ok(map.apply({ type: 'update-member', peerId: 'c', status: 'left' }).ok);
    assertRejectedUnchanged(map, one(assignment(['c', 'a'], 7, 'a', ['a'])), 'invalid-assignment');
  });

  it('snapshots are canonical: peers that applied the same commands produce equal bytes', () => {
    const commands: ClusterCommand[] = [
      { type: 'bootstrap', settings: { shardCount: 8, replicationFactor: 2, minInSync: 1 } },
      { type: 'add-member', peerId: 'z', addrs: ['/ip4/1.2.3.4/tcp/1'], capacity: 0.3 },
      { type: 'add-member', peerId: 'a', addrs: [] },
      { type: 'add-member', peerId: 'm', addrs: [], capacity: 7 },
      { type: 'remove-member', peerId: 'nobody' }, // rejected on both
      { type: 'update-member', peerId: 'a', status: 'draining' },
      { type: 'set-shard-assignment', full: true, updates: Array.from({ length: 8 }, (_, shard) => ({ shard, assignment: assignment(shard % 2 ? ['z', 'a'] : ['m', 'z'], 1) })) },
    ];
    const one = new ClusterMap();
    const two = new ClusterMap();
    for (const cmd of commands) {
      const r1 = one.apply(cmd);
      const r2 = two.applyEntryData(encodeClusterCommand(cmd));
      assert.deepEqual(r1, r2);
    }
    assert.equal(one.version, 6);
    assert.deepEqual(one.snapshot(), two.snapshot());

    // Insertion order does not matter: members are sorted in the encoding.
    const three = new ClusterMap();
    three.apply(commands[0]!);
    three.apply(commands[3]!);
    three.apply(commands[2]!);
    three.apply(commands[1]!);
    for (const cmd of commands.slice(4)) three.apply(cmd);
    assert.deepEqual(three.snapshot(), one.snapshot());
  });

  it('restores a snapshot to an equal map, and keeps applying the same way', () => {
    const map = bootstrapped();
    map.apply(fullAssignment(8, 3));
    map.apply({ type: 'update-member', peerId: 'b', status: 'dead' }); // a dead primary stays restorable
    const restored = new ClusterMap();
    restored.restore(map.snapshot());
    assert.deepEqual(restored.snapshot(), map.snapshot());
    assert.deepEqual(restored.view(), map.view());
    const next: ClusterCommand = { type: 'set-shard-assignment', full: false, updates: [{ shard: 0, assignment: assignment(['a', 'c'], 4) }] };
    assert.deepEqual(restored.apply(next), map.apply(next));
    assert.deepEqual(restored.snapshot(), map.snapshot());
    // Restoring an empty map's snapshot works too.
    const empty = new ClusterMap();
    empty.restore(new ClusterMap().snapshot());
    assert.equal(empty.version, 0);
  });

  it('restore rejects bad snapshots with InvalidMessageError and keeps its state', () => {
    const map = bootstrapped();
    map.apply(fullAssignment(8));
    const good = JSON.parse(new TextDecoder().decode(map.snapshot())) as Record<string, unknown>;
    const bad = [
      'nope',
      JSON.stringify({ ...good, format: 2 }),
      JSON.stringify({ ...good, version: -1 }),
      JSON.stringify({ ...good, settings: { shardCount: 7, replicationFactor: 3, minInSync: 2 } }),
      JSON.stringify({ ...good, members: [['a', { addrs: [], capacity: 0, status: 'active' }]] }),
      JSON.stringify({ ...good, members: [...(good.members as unknown[]), ['a', { addrs: [], capacity: 1, status: 'active' }]] }),
      JSON.stringify({ ...good, shards: (good.shards as unknown[]).slice(1) }),
      JSON.stringify({ ...good, members: [] }), // replicas that are not members
    ];
    const target = bootstrapped(16);
    const before = target.snapshot();
    for (const [k, raw] of bad.entries()) {
      assert.throws(() => target.restore(bytes(raw)), { name: 'InvalidMessageError' }, `case ${k}`);
      assert.deepEqual(target.snapshot(), before);
    }
  });

  it('same random command stream on two maps gives equal snapshots at every step', () => {
    const random = new SeededRandom(9);
    const ids = ['a', 'b', 'c', 'd', 'e', 'f'];
    const one = new ClusterMap();
    const two = new ClusterMap();
    one.apply({ type: 'bootstrap', settings: { shardCount: 8 } });
    two.apply({ type: 'bootstrap', settings: { shardCount: 8 } });
    let accepted = 0;
    for (let k = 0; k < 1000; k++) {
      const id = random.pick(ids);
      const pick = random.int(0, 4);
      let cmd: ClusterCommand;
      if (pick === 0) cmd = { type: 'add-member', peerId: id, addrs: [], capacity: random.int(1, 4) };
      else if (pick === 1) cmd = { type: 'update-member', peerId: id, status: random.pick(['active', 'draining', 'left', 'dead'] as const) };
      else if (pick === 2) cmd = { type: 'remove-member', peerId: id };
      else {
        const replicas = [...new Set([random.pick(ids), random.pick(ids), random.pick(ids)])];
        cmd = {
          type: 'set-shard-assignment',
          full: pick === 3,
          updates: pick === 3
            ? Array.from({ length: 8 }, (_, shard) => ({ shard, assignment: assignment(replicas, random.int(0, 20)) }))
            : [{ shard: random.int(0, 7), assignment: assignment(replicas, random.int(0, 20)) }],
        };
      }
      const r1 = one.apply(cmd);
      const r2 = two.applyEntryData(encodeClusterCommand(cmd));
      assert.deepEqual(r1, r2);
      if (r1.ok) accepted++;
      assert.deepEqual(one.snapshot(), two.snapshot());
      // Snapshots round-trip at every step.
      const copy = ClusterMap.fromSnapshot(one.snapshot());
      assert.deepEqual(copy.snapshot(), one.snapshot());
    }
    assert.ok(accepted > 50);
    assert.equal(one.version, 1 + accepted);
  });

  it('decodes its own encoding and rejects unknown fields', () => {
    const cmd: ClusterCommand = { type: 'update-member', peerId: 'a', addrs: ['/x'], capacity: 2, status: 'dead' };
    assert.deepEqual(decodeClusterCommand(encodeClusterCommand(cmd)), cmd);
    assert.throws(() => decodeClusterCommand(bytes('{"type":"bootstrap","settings":{"shards":3}}')), { name: 'InvalidMessageError' });
  });
});

describe('cluster map: conditional shard updates (expectEpoch)', () => {
  const one = (a: ShardAssignment, expectEpoch?: number, shard = 1): ClusterCommand => ({
    type: 'set-shard-assignment',
    full: false,
    updates: [expectEpoch === undefined ? { shard, assignment: a } : { shard, assignment: a, expectEpoch }],
  });

  it('applies an update whose expectEpoch is the current epoch', () => {
    const map = bootstrapped();
    assert.ok(map.apply(fullAssignment(8, 5)).ok);
    assert.deepEqual(map.apply(one(assignment(['b', 'c'], 6), 5)), { ok: true });
    assert.deepEqual(map.shards[1], assignment(['b', 'c'], 6));
    // The condition does not replace the epoch rules: the same epoch is allowed, a lower one not.
    assert.deepEqual(map.apply(one(assignment(['c', 'b'], 6), 6)), { ok: true });
    assertRejectedUnchanged(map, one(assignment(['b'], 5), 6), 'epoch-regression');
    assert.deepEqual(map.apply(one(assignment(['b'], 7), 6)), { ok: true });
    assert.deepEqual(map.shards[1], assignment(['b'], 7));
  });

  it('rejects an update at another epoch with epoch-mismatch and changes nothing', () => {
    const map = bootstrapped();
    assert.ok(map.apply(fullAssignment(8, 5)).ok);
    assertRejectedUnchanged(map, one(assignment(['b', 'c'], 6), 4), 'epoch-mismatch');
    assertRejectedUnchanged(map, one(assignment(['b', 'c'], 6), 6), 'epoch-mismatch');
    assertRejectedUnchanged(map, one(assignment(['b', 'c'], 6), 0), 'epoch-mismatch');
    // Two planners racing: the first wins, the second (planned at the same epoch) fails.
    assert.ok(map.apply(one(assignment(['a', 'b'], 6), 5)).ok);
    assertRejectedUnchanged(map, one(assignment(['a', 'c'], 6), 5), 'epoch-mismatch');
  });

  it('rejects the whole command when one update mismatches', () => {
    const map = bootstrapped();
    assert.ok(map.apply(fullAssignment(8, 5)).ok);
    assertRejectedUnchanged(
      map,
      {
        type: 'set-shard-assignment',
        full: false,
        updates: [
          { shard: 0, assignment: assignment(['a'], 6), expectEpoch: 5 },
          { shard: 2, assignment: assignment(['b'], 6) },
          { shard: 3, assignment: assignment(['c'], 6), expectEpoch: 3 },
        ],
      },
      'epoch-mismatch',
    );
    // A stale condition is reported as such even when the assignment has become invalid too.
    assertRejectedUnchanged(map, one(assignment(['a', 'zz'], 6), 4), 'epoch-mismatch');
    // A valid condition does not excuse an invalid assignment.
    assertRejectedUnchanged(map, one(assignment(['a', 'zz'], 6), 5), 'invalid-assignment');
    assertRejectedUnchanged(map, one(assignment(['a', 'b'], 4), 5), 'epoch-regression');
  });

  it('rejects a condition on a shard that has no assignment yet', () => {
    const map = bootstrapped();
    const full = fullAssignment(8) as Extract<ClusterCommand, { type: 'set-shard-assignment' }>;
    assertRejectedUnchanged(map, { ...full, updates: full.updates.map((u) => ({ ...u, expectEpoch: 0 })) }, 'epoch-mismatch');
    assert.equal(map.shards.length, 0);
    assert.ok(map.apply(full).ok);
    // Once assigned, a full command may be conditional too.
    assert.ok(map.apply({ ...full, updates: full.updates.map((u) => ({ ...u, assignment: { ...u.assignment, epoch: 2 }, expectEpoch: 1 })) }).ok);
    assert.equal(map.shards[7]!.epoch, 2);
  });

  it('decodes expectEpoch and validates it', () => {
    const cmd: ClusterCommand = one(assignment(['a', 'b'], 3), 2);
    assert.deepEqual(decodeClusterCommand(encodeClusterCommand(cmd)), cmd);
    assert.deepEqual(decodeClusterCommand(encodeClusterCommand(one(assignment(['a'], 3)))), one(assignment(['a'], 3)));
    const raw = (expectEpoch: unknown): string =>
      JSON.stringify({ type: 'set-shard-assignment', full: false, updates: [{ shard: 0, assignment: assignment(['a']), expectEpoch }] });
    for (const bad of [-1, 1.5, '2', null, true, Number.MAX_SAFE_INTEGER + 2, {}]) {
      assert.throws(() => decodeClusterCommand(bytes(raw(bad))), { name: 'InvalidMessageError' }, String(bad));
      const map = bootstrapped();
      assert.ok(map.apply(fullAssignment(8)).ok);
      assertRejected(map.applyEntryData(bytes(raw(bad))), 'malformed');
    }
    assert.equal((decodeClusterCommand(bytes(raw(0))) as { updates: Array<{ expectEpoch?: number }> }).updates[0]!.expectEpoch, 0);
    assert.throws(
      () => decodeClusterCommand(bytes(JSON.stringify({ type: 'set-shard-assignment', full: false, updates: [{ shard: 0, assignment: assignment(['a']), expect: 1 }] }))),
      { name: 'InvalidMessageError' },
    );
  });
});

describe('effective min-in-sync', () => {
  const member = (status: 'active' | 'draining' | 'left' | 'dead') => ({ addrs: [], capacity: 1, status });
  const view = (minInSync: number, statuses: Array<'active' | 'draining' | 'left' | 'dead'>) => ({
    settings: { shardCount: 8, replicationFactor: 3, minInSync },
    members: Object.fromEntries(statuses.map((st, i) => [`p${i}`, member(st)])),
  });

  it('is the configured value once the cluster has that many peers, and never more than the peers present', () => {
    assert.equal(effectiveMinInSync(view(2, ['active'])), 1, 'a cluster of one takes writes');
    assert.equal(effectiveMinInSync(view(2, ['active', 'active'])), 2);
    assert.equal(effectiveMinInSync(view(2, ['active', 'active', 'active'])), 2);
    assert.equal(effectiveMinInSync(view(3, ['active', 'active'])), 2);
  });

  it('counts dead members (a failure never lowers the guarantee), not those that left or are draining', () => {
    assert.equal(effectiveMinInSync(view(2, ['active', 'dead'])), 2, 'one dead of two: writes still need 2');
    assert.equal(effectiveMinInSync(view(2, ['active', 'left'])), 1);
    assert.equal(effectiveMinInSync(view(2, ['active', 'draining'])), 1);
    assert.equal(effectiveMinInSync(view(2, ['left', 'left'])), 1, 'never below 1');
    assert.equal(effectiveMinInSync({ settings: null, members: {} }), 1);
  });
});
