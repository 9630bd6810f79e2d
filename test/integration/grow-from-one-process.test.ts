/**
 * Grow from one (issue 10): a cluster of one `shoal` process with default settings
 * (replication factor 3, min-in-sync 2) takes writes at once; two more peers join with its
 * token while a writer keeps writing; every shard ends with 3 in-sync replicas, writes need 2 in
 * sync again, and every acknowledged write reads back through every peer.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { join } from 'node:path';
import type { ShardSummary } from '../../node/store-api.js';
import { ProcessPeer } from './harness.js';
import { Cluster, kvPath, request } from './process-cluster.js';

describe('store: growing from one peer', function () {
  this.timeout(180_000);
  let cluster: Cluster | null = null;
  const agent = new http.Agent({ keepAlive: true });
  after(async () => {
    agent.destroy();
    await cluster?.destroy();
  });

  it('one peer takes writes at once; it grows to 3 and every shard ends with 3 in-sync replicas holding every write', async () => {
    const c = (cluster = await Cluster.create());
    await c.startPeers(1);
    const seed = c.peers[0]!;
    await c.waitWritable('one peer', c.peers, 30_000);
    const alone = (await c.status(seed)).shards as ShardSummary;
    assert.equal(alone.minInSync, 2, 'the configured value is kept');
    assert.equal(alone.effectiveMinInSync, 1, 'one peer: writes need its one replica');
    const acked = new Map<string, string>();
    for (let k = 0; k < 100; k++) {
      const r = await request(agent, seed.httpAddress, 'PUT', kvPath(`solo-${k}`), Buffer.from(`v${k}`), 5000);
      assert.equal(r.status, 200, `put on a lone peer: ${r.status} ${r.body.toString()}`);
      acked.set(`solo-${k}`, `v${k}`);
    }
    // A writer goes on while two peers join: refusals (503 while a new replica catches up) are
    // retried; what was acknowledged must stay.
    let writing = true;
    let refused = 0;
    const writer = (async () => {
      for (let k = 0; writing && k < 100_000; k++) {
        const key = `grow-${k % 300}`;
        const value = `w${k}`;
        const r = await request(agent, seed.httpAddress, 'PUT', kvPath(key), Buffer.from(value), 5000).catch(() => null);
        if (r !== null && r.status === 200) acked.set(key, value);
        else {
          refused++;
          await new Promise((res) => setTimeout(res, 20));
        }
      }
    })();
    for (let i = 1; i < 3; i++) c.peers.push(await ProcessPeer.start(join(c.dir, `p${i}`), { join: [seed.joinRef] }));
    await c.waitSettled('grown to 3', 120_000);
    writing = false;
    await writer;
    const grown = (await c.status(seed)).shards as ShardSummary;
    assert.equal(grown.effectiveMinInSync, 2, 'with 3 peers the configured min-in-sync holds again');
    for (const p of c.peers) {
      for (const s of await c.shards(p)) assert.equal(s.inSync.length, 3, `shard ${s.shard} on ${c.label(p.peerId)}`);
    }
    console.log(`      ${acked.size} keys acknowledged; ${refused} writes refused or failed during the growth (retried)`);
    for (const p of c.peers) {
      let ok = 0;
      for (const [key, value] of acked) {
        const r = await request(agent, p.httpAddress, 'GET', kvPath(key), undefined, 5000);
        if (r.status === 200 && r.body.toString() === value) ok++;
      }
      assert.equal(ok, acked.size, `every acknowledged write reads back through ${c.label(p.peerId)}`);
    }
  });
});
