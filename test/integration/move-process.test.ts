/**
 * Bulk moves under faults (issue 10), with real `shoal` processes. Peers keep 2 op-log groups
 * (`--log-retain-groups 2`), so a new replica is filled by a snapshot stream, and each sends at
 * most 1 MB/s (`--rebalance-rate 1`), so a move lasts long enough to be hit:
 *
 * 1. A joining peer (the destination) is SIGKILLed in the middle of a move and restarted: the
 *    move goes on from the last chunk it had staged (the senders count the bytes not sent
 *    again), and `/v1/moves` showed the move's bytes, rate and ETA meanwhile.
 * 2. The primary sending a move (the source) is SIGKILLed: the next primary sends the shard;
 *    the source is restarted and every shard ends with 3 in-sync replicas.
 *
 * A writer runs throughout; every acknowledged write reads back at the end through every peer.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { join } from 'node:path';
import type { MoveInfo } from '../../node/store-service.js';
import { loadLargeValues, metricSum, readBack } from './bulk-load.js';
import { ProcessPeer, waitFor } from './harness.js';
import { Cluster, kvPath, request } from './process-cluster.js';

async function movesSeen(c: Cluster): Promise<MoveInfo[]> {
  const out: MoveInfo[] = [];
  for (const p of c.peers) {
    if (!p.running) continue;
    try {
      const res = await fetch(`http://${p.httpAddress}/v1/moves`, { signal: AbortSignal.timeout(2000) });
      out.push(...((await res.json()) as { moves: MoveInfo[] }).moves);
    } catch {
      // A peer that is restarting answers on the next poll.
    }
  }
  return out;
}

describe('store: bulk moves resume after a restart and survive a dead source', function () {
  this.timeout(240_000);
  let cluster: Cluster | null = null;
  const agent = new http.Agent({ keepAlive: true });
  after(async () => {
    agent.destroy();
    await cluster?.destroy();
  });

  it('a destination restarted mid-move resumes from its last chunk; a source killed mid-move is replaced; nothing acknowledged is lost', async () => {
    const c = (cluster = await Cluster.create(['--shards', '16', '--log-retain-groups', '2', '--rebalance-rate', '1']));
    await c.startPeers(3);
    await c.waitSettled('3 peers', 90_000);
    // 24 MiB of 256 KiB values: about 1.5 MiB per shard.
    const load = await loadLargeValues({
      targets: c.peers.map((p) => p.httpAddress),
      totalBytes: 24 * 1024 * 1024,
      valueBytes: 256 * 1024,
      clients: 4,
      keyPrefix: 'big-',
      requestTimeoutMs: 10_000,
      maxAttemptsPerKey: 5,
      deadlineMs: 60_000,
    });
    assert.deepEqual(load.abandoned, [], `every value stored: ${JSON.stringify([...load.failures])}`);
    const small = new Map<string, string>();
    let writing = true;
    const refused: string[] = [];
    const writer = (async () => {
      for (let k = 0; writing && k < 100_000; k++) {
        const key = `w-${k % 200}`;
        const target = c.peers.filter((p) => p.running)[k % 2]!.httpAddress;
        const r = await request(agent, target, 'PUT', kvPath(key), Buffer.from(`x${k}`), 8000).catch((err: Error) => ({ status: 0, body: Buffer.from(err.message) }));
        if (r.status === 200) small.set(key, `x${k}`);
        else {
          // A write whose peer died, or in flight when its primary died, may or may not have
          // been applied; its key is unknown until a later write of it is acknowledged.
          small.delete(key);
          refused.push(`${r.status} ${r.body.toString().slice(0, 120)}`);
          await new Promise((r2) => setTimeout(r2, 50));
        }
      }
    })();
    try {
      // 1. The destination restarts mid-move.
      c.peers.push(await ProcessPeer.start(join(c.dir, 'p3'), { join: [c.peers[0]!.joinRef], extraArgs: c.extraArgs }));
      const dest = c.peers[3]!;
      const first = await waitFor(
        'a snapshot move to the new peer with bytes under way',
        async () => (await movesSeen(c)).find((m) => m.to === dest.peerId && (m.bytesDone ?? 0) > 0 && m.bytesTotal !== null) ?? null,
        { timeoutMs: 60_000, intervalMs: 100 },
      );
      assert.ok((first.rateBps ?? 0) > 0, `a rate is shown: ${JSON.stringify(first)}`);
      assert.ok(first.bytesTotal! >= first.bytesDone!, `total ≥ done: ${JSON.stringify(first)}`);
      dest.signal('SIGKILL');
      await dest.waitExit();
      await c.restart(3, [c.peers[0]!]);
      await waitFor(
        'a sender to resume a stream from the chunks the restarted peer kept',
        async () => {
          let n = 0;
          for (const p of c.peers.slice(0, 3)) n += await metricSum(p.httpAddress, 'shoal_store_snapshot_bytes_resumed_total');
          return n > 0;
        },
        { timeoutMs: 60_000, intervalMs: 250 },
      );
      // Each completed snapshot send is one observation of the move histogram.
      await waitFor(
        'a completed move in shoal_move_duration_seconds',
        async () => {
          let n = 0;
          for (const p of c.peers.slice(0, 3)) {
            const count = await metricSum(p.httpAddress, 'shoal_move_duration_seconds_count');
            assert.equal(count, await metricSum(p.httpAddress, 'shoal_store_snapshots_sent_total'), 'one observation per snapshot sent');
            n += count;
          }
          return n > 0;
        },
        { timeoutMs: 60_000, intervalMs: 250 },
      );

      // 2. The source of a move dies mid-move.
      const hit = await waitFor(
        'another move under way, sent by a peer other than the coordinator',
        async () => {
          const st = await c.status(c.peers[3]!);
          return (await movesSeen(c)).find((m) => m.from !== null && m.from !== st.coordinator && (m.bytesDone ?? 0) > 0) ?? null;
        },
        { timeoutMs: 60_000, intervalMs: 100 },
      );
      const srcIndex = c.peers.findIndex((p) => p.peerId === hit.from);
      assert.ok(srcIndex >= 0);
      c.peers[srcIndex]!.signal('SIGKILL');
      await c.peers[srcIndex]!.waitExit();
      // The shard is moved by its next primary while the source is down.
      await waitFor(
        `shard ${hit.shard} in sync on the peer it was moving to, without its old source`,
        async () => {
          const live = c.peers.find((p) => p.running)!;
          const s = (await c.shards(live)).find((x) => x.shard === hit.shard)!;
          return s.inSync.includes(hit.to) && s.primary !== hit.from && s.primary !== null;
        },
        { timeoutMs: 90_000, intervalMs: 250 },
      );
      await c.restart(srcIndex, [c.peers[(srcIndex + 1) % 4]!]);
      await c.waitSettled('4 peers after the faults', 150_000);
    } finally {
      writing = false;
      await writer;
    }
    const shards = await c.shards(c.peers[0]!);
    const held = new Map<string, number>();
    for (const s of shards) {
      assert.equal(s.inSync.length, 3, `shard ${s.shard}: ${JSON.stringify(s)}`);
      for (const r of s.replicas) held.set(r, (held.get(r) ?? 0) + 1);
    }
    const counts = c.peers.map((p) => held.get(p.peerId) ?? 0);
    const mean = (shards.length * 3) / 4;
    assert.ok(Math.max(...counts) / mean <= 1.25, `balanced: ${counts.join(', ')} replicas per peer`);
    for (const p of c.peers) {
      const bad = await readBack([p.httpAddress], load.acked, 10_000);
      assert.deepEqual(bad, [], `large values read back through ${c.label(p.peerId)}`);
    }
    for (const [key, want] of small) {
      const r = await request(agent, c.peers[3]!.httpAddress, 'GET', `${kvPath(key)}?consistency=strong`, undefined, 5000);
      assert.equal(r.status, 200, key);
      assert.equal(r.body.toString(), want, key);
    }
    // A writer of 2 peers' HTTP addresses sees its target die once: bounded, never silent.
    assert.ok(refused.length <= 200, `few writes refused around the SIGKILLs: ${refused.length}: ${refused.slice(0, 5).join(' | ')}`);
  });
});
