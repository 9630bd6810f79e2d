import assert from 'node:assert/strict';
import { dashboardSnapshot, loadDashboardAssets, PHI_HISTORY_SAMPLES, PhiHistory } from '../../node/http/dashboard.js';
import type { HttpHandlers } from '../../node/http/server.js';

describe('dashboard: phi history and snapshot', () => {
  it('keeps at most a minute of phi per member and forgets members that left the table', () => {
    const h = new PhiHistory();
    for (let i = 0; i < PHI_HISTORY_SAMPLES + 25; i++) h.record([{ peerId: 'a', phi: i }, { peerId: 'b', phi: Number.POSITIVE_INFINITY }]);
    assert.equal(h.of('a').length, PHI_HISTORY_SAMPLES);
    assert.equal(h.of('a').at(-1), PHI_HISTORY_SAMPLES + 24, 'the newest sample is last');
    assert.equal(h.of('a')[0], 25, 'the oldest ones were dropped');
    assert.ok(h.of('b').every((v) => v === 0), 'a non-finite phi is recorded as 0, never as null in JSON');
    h.record([{ peerId: 'a', phi: 1 }]);
    assert.deepEqual(h.of('b'), [], 'b left the table');
    assert.deepEqual(h.of('nobody'), []);
  });

  it('the built assets are there (npm run build copies them) and a missing directory is reported, not thrown', () => {
    const assets = loadDashboardAssets();
    assert.ok(typeof assets !== 'string', String(assets));
    assert.deepEqual([...assets.keys()].sort(), ['/', '/dashboard/dashboard.css', '/dashboard/dashboard.js']);
    const missing = loadDashboardAssets(new URL('file:///nonexistent-shoal-dir/'));
    assert.equal(typeof missing, 'string');
    assert.match(missing as string, /npm run build/);
  });

  it('answers null while the peer starts, and joins status, map, moves and scheduler when it runs', () => {
    const base = { leave() {}, updateMember: async () => 0, kv: () => null, limits: () => ({ maxKeyBytes: 1, maxValueBytes: 1 }), counters: () => null } as const;
    const starting: HttpHandlers = { ...base, status: () => null, clusterMap: () => null };
    assert.equal(dashboardSnapshot(starting, new PhiHistory()), null);
    const member = { peerId: 'p1', state: 'alive' as const, phi: 0.5, incarnation: 1, addrs: [], lastHeartbeatAgeMs: 10, load: null, self: false };
    const running: HttpHandlers = {
      ...base,
      status: () => ({
        peerId: 'p0', addrs: [], incarnation: 1, members: [member], coordinator: 'p0', term: 3, role: 'leader', commitIndex: 9, voters: ['p0'], learners: [], clusterMapVersion: 4,
        shards: { shardCount: 1, replicationFactor: 1, minInSync: 1, effectiveMinInSync: 1, writableShards: 1, movesInFlight: 0, draining: [], perPeer: { p1: { primaries: 1, replicas: 1 } } },
      }),
      clusterMap: () => ({ version: 4, settings: null, members: { p1: { addrs: [], capacity: 2, status: 'active' } }, shards: [{ replicas: ['p1'], primary: 'p1', inSync: ['p1'], epoch: 7 }] }),
      moves: () => [],
      tasks: () => ({ submit: async () => '', get: async () => null, list: async () => [], cancel: async () => false, schedulerStatus: () => { throw new Error('not the coordinator'); } }),
    };
    const h = new PhiHistory();
    h.record([member]);
    const s = dashboardSnapshot(running, h);
    assert.ok(s !== null);
    assert.equal(s.raft.term, 3);
    assert.deepEqual(s.members[0]?.phiHistory, [0.5]);
    assert.equal(s.members[0]?.capacity, 2);
    assert.equal(s.members[0]?.primaries, 1);
    assert.deepEqual(s.ring, [{ shard: 0, primary: 'p1', replicas: ['p1'], inSync: ['p1'], epoch: 7 }]);
    assert.equal(s.scheduler, null, 'a failing scheduler status shows as none, not as an error');
    assert.equal(s.autoscaler, null);
  });
});
