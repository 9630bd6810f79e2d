/**
 * A primary whose newest LevelDB log was torn (its machine lost writes the OS had not put on
 * disk) and that comes back within its lease asks the coordinator for a fresh epoch at a log
 * shorter than what its backups hold. Granted, it would reconcile them down to it and lose
 * acknowledged writes (or stall: backups refuse to drop committed groups). The coordinator must
 * vacate the shard instead and promote the backup with the most log. A 5 s lease makes sure the
 * peer is back before any failover; 8 shards and 120 keys keep it short. It runs with the local
 * group (no -process in its name), not in the process group, which sets the suite's length.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { join } from 'node:path';
import { ProcessPeer } from './harness.js';
import { Cluster, kvPath, request, tearNewestLevelDbLog } from './process-cluster.js';

describe('a torn primary back within its lease', function () {
  this.timeout(300_000);
  const cleanup: Array<() => Promise<void>> = [];
  after(async () => {
    for (const f of cleanup.reverse()) await f().catch(() => {});
  });

  it('does not take its shards back with less: every acknowledged key survives', async () => {
    // With --lease-ms 5000 the torn peer is back long before its lease runs out, so the
    // coordinator has promoted nobody: it asks for a fresh epoch at its shorter log. Granting it
    // would cut the backups down to that log.
    const c = await Cluster.create(['--lease-ms', '5000', '--shards', '8']);
    cleanup.push(() => c.destroy());
    await c.startPeers(3);
    await c.waitSettled('start', 60_000);
    const agent = new http.Agent({ keepAlive: true });
    cleanup.push(async () => agent.destroy());
    const coordinator = (await c.status(c.peers[0]!)).coordinator;
    const i = c.peers.findIndex((p) => p.peerId !== coordinator);
    const victim = c.peers[i]!;
    const other = c.peers.find((p) => p !== victim && p.peerId === coordinator)!;
    const keys = Array.from({ length: 120 }, (_, k) => `torn-primary-${k}`);
    for (const key of keys) assert.equal((await request(agent, other.httpAddress, 'PUT', kvPath(key), Buffer.from(`v:${key}`), 5000)).status, 200);
    const led = (await c.shards(other)).filter((s) => s.primary === victim.peerId).length;
    assert.ok(led > 0, 'the victim leads some shards');
    victim.signal('SIGKILL');
    await victim.waitExit();
    tearNewestLevelDbLog(victim.dataDir);
    const again = await ProcessPeer.start(victim.dataDir, { join: [other.joinToken], extraArgs: ['--lease-ms', '5000'] });
    c.peers[i] = again;
    // Once the cluster has settled (with a 5 s lease, handing primaries back to the restarted
    // peer takes a while), every acknowledged key reads back, through a peer that was never
    // torn and through the torn one.
    await c.waitSettled('after the torn primary restarted', 150_000);
    for (const via of [other, again]) {
      for (const key of keys) {
        const r = await request(agent, via.httpAddress, 'GET', kvPath(key), undefined, 10_000);
        assert.equal(r.status, 200, `${key} through ${via === other ? 'the coordinator' : 'the restarted peer'}: ${r.status} ${r.body.toString().slice(0, 200)}`);
        assert.equal(r.body.toString(), `v:${key}`);
      }
    }
  });

});
