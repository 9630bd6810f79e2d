import assert from 'node:assert/strict';
import type { ClusterMapView, ShardAssignment } from '../../protocols/cluster-map/types.js';
import { ReadTargets } from '../../node/read-targets.js';

const a: ShardAssignment = { replicas: ['p1', 'p2', 'p3', 'p4'], primary: 'p1', inSync: ['p1', 'p2', 'p3'], epoch: 5 };
function members(status: Record<string, string>, capacity: Record<string, number> = {}): ClusterMapView['members'] {
  const out: Record<string, unknown> = {};
  for (const [id, s] of Object.entries(status)) out[id] = { status: s, capacity: capacity[id] ?? 1 };
  return out as ClusterMapView['members'];
}
const allActive = members({ p1: 'active', p2: 'active', p3: 'active', p4: 'active' });

describe('ReadTargets (--read-policy)', () => {
  it('sends writes and strong reads to the primary whatever the policy', () => {
    for (const policy of ['round-robin', 'random', 'weighted', 'least-latency'] as const) {
      assert.equal(new ReadTargets(policy).pick(a, allActive, false), 'p1', policy);
    }
  });

  it('round-robin cycles over the active in-sync replicas only (never a catching-up or draining one)', () => {
    const t = new ReadTargets('round-robin');
    const m = members({ p1: 'active', p2: 'draining', p3: 'active', p4: 'active' });
    assert.deepEqual([1, 2, 3, 4].map(() => t.pick(a, m, true)), ['p1', 'p3', 'p1', 'p3']);
  });

  it('falls back to the primary when no in-sync replica is active', () => {
    const m = members({ p1: 'dead', p2: 'dead', p3: 'left', p4: 'active' });
    assert.equal(new ReadTargets('round-robin').pick(a, m, true), 'p1');
  });

  it('weighted picks in proportion to capacity', () => {
    let x = 0;
    const draws = [0.05, 0.3, 0.6, 0.95];
    const t = new ReadTargets('weighted', () => draws[x++ % draws.length]!);
    const m = members({ p1: 'active', p2: 'active', p3: 'active' }, { p1: 1, p2: 1, p3: 2 });
    // Total weight 4: [0, 1) p1, [1, 2) p2, [2, 4) p3.
    assert.deepEqual(draws.map(() => t.pick(a, m, true)), ['p1', 'p2', 'p3', 'p3']);
  });

  it('least-latency tries every unmeasured replica first, then keeps to the lowest EWMA', () => {
    const t = new ReadTargets('least-latency');
    assert.equal(t.pick(a, allActive, true), 'p1');
    t.observe('p1', 10);
    assert.equal(t.pick(a, allActive, true), 'p2');
    t.observe('p2', 2);
    assert.equal(t.pick(a, allActive, true), 'p3');
    t.observe('p3', 5);
    assert.equal(t.pick(a, allActive, true), 'p2');
    t.observe('p2', 50); // 2 * 0.8 + 50 * 0.2 = 11.6
    assert.ok(Math.abs(t.latencyOf('p2')! - 11.6) < 1e-9);
    assert.equal(t.pick(a, allActive, true), 'p3');
  });
});
