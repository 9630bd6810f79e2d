/**
 * Drain and graceful leave move data first (issue 10): in a cluster of 4 `shoal` processes
 * (replication factor 3) under a concurrent writer, `shoal drain` moves every replica off one
 * peer (the peer stays, holding nothing), `shoal drain --cancel` brings it back to its share,
 * `shoal capacity 4` gives it a larger share, and `shoal leave` drains another before it
 * leaves. Every shard keeps 3 in-sync replicas, no
 * write is refused, and every acknowledged write reads back. (A write in flight when a primary
 * hands its shard over may answer `indeterminate`; those are counted and printed.)
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { join } from 'node:path';
import { ProcessPeer, runCli, waitFor } from './harness.js';
import { Cluster, kvPath, request } from './process-cluster.js';

describe('store: drain and leave move data first', function () {
  this.timeout(240_000);
  let cluster: Cluster | null = null;
  const agent = new http.Agent({ keepAlive: true });
  after(async () => {
    agent.destroy();
    await cluster?.destroy();
  });

  it('drain empties a peer (moves listed), cancel refills it, capacity grows its share, leave drains first; no write refused, none lost', async () => {
    const c = (cluster = await Cluster.create());
    await c.startPeers(3);
    c.peers.push(await ProcessPeer.start(join(c.dir, 'p3'), { join: [c.peers[0]!.joinRef] }));
    await c.waitSettled('4 peers', 90_000);
    const acked = new Map<string, string>();
    for (let k = 0; k < 200; k++) {
      const r = await request(agent, c.peers[0]!.httpAddress, 'PUT', kvPath(`d-${k}`), Buffer.from(`v${k}`), 5000);
      assert.equal(r.status, 200);
      acked.set(`d-${k}`, `v${k}`);
    }
    let writing = true;
    let phase = 'drain';
    const failures: string[] = [];
    const indeterminate: string[] = [];
    const writer = (async () => {
      for (let k = 0; writing && k < 100_000; k++) {
        const key = `w-${k % 400}`;
        const r = await request(agent, c.peers[0]!.httpAddress, 'PUT', kvPath(key), Buffer.from(`x${k}`), 8000).catch((err: Error) => ({ status: 0, body: Buffer.from(err.message) }));
        if (r.status === 200) acked.set(key, `x${k}`);
        else if (r.status === 503 && r.body.toString().includes('"indeterminate"')) {
          // A primary handed its shard over with this write in flight: it may or may not have
          // been applied (never lost if acknowledged, never answered twice). The key's value is
          // then unknown until a later write is acknowledged.
          indeterminate.push(phase);
          acked.delete(key);
        } else failures.push(`${phase}: ${r.status} ${r.body.toString().slice(0, 160)}`);
      }
    })();
    try {
      const target = c.peers[3]!;
      const draining = runCli(['drain', '--http', target.httpAddress, '--wait-ms', '120000'], { timeoutMs: 150_000 });
      // Moves in flight are listed while it drains (by the coordinator with their progress).
      const seen = await waitFor(
        'GET /v1/moves to list a move',
        async () => {
          for (const p of c.peers) {
            const { moves } = (await (await fetch(`http://${p.httpAddress}/v1/moves`)).json()) as { moves: Array<{ shard: number; to: string; from: string | null }> };
            if (moves.length > 0) return moves[0]!;
          }
          return null;
        },
        { timeoutMs: 30_000, intervalMs: 100 },
      );
      assert.notEqual(seen.to, target.peerId, 'replicas move to the other peers');
      const drain = await draining;
      assert.equal(drain.code, 0, drain.stderr);
      assert.match(drain.stderr, /draining \[/);
      const st = (await (await fetch(`http://${target.httpAddress}/v1/drain`)).json()) as { status: string; replicas: number; done: boolean };
      assert.deepEqual([st.status, st.replicas, st.done], ['draining', 0, true]);
      for (const s of await c.shards(c.peers[0]!)) {
        assert.ok(!s.replicas.includes(target.peerId), `shard ${s.shard} still on the drained peer`);
        assert.equal(s.inSync.length, 3, `shard ${s.shard} in sync`);
      }
      // Cancel: it becomes active and takes replicas again.
      phase = 'cancel';
      assert.equal((await runCli(['drain', '--cancel', '--http', target.httpAddress])).code, 0);
      await waitFor(
        'the peer to hold replicas again',
        async () => ((await (await fetch(`http://${target.httpAddress}/v1/drain`)).json()) as { replicas: number; status: string }).replicas > 0,
        { timeoutMs: 60_000, intervalMs: 500 },
      );
      await c.waitSettled('after the cancel', 90_000);
      phase = 'capacity';
      // Capacity at run time: 4 on one peer of 4 gives it more than an equal share (64 x 3 / 4 = 48).
      assert.equal((await runCli(['capacity', '4', '--http', target.httpAddress])).code, 0);
      await waitFor(
        'the peer with capacity 4 to hold more than an equal share',
        async () => {
          const map = (await (await fetch(`http://${c.peers[0]!.httpAddress}/v1/cluster`)).json()) as { members: Record<string, { capacity: number }>; shards: Array<{ replicas: string[] }> };
          const held = map.shards.filter((a) => a.replicas.includes(target.peerId)).length;
          return map.members[target.peerId]?.capacity === 4 && held > 52;
        },
        { timeoutMs: 90_000, intervalMs: 500 },
      );
      await c.waitSettled('after the capacity change', 90_000);
      phase = 'leave';
      // Leave drains first, then the peer exits.
      const leaving = c.peers[2]!;
      const leave = await runCli(['leave', '--http', leaving.httpAddress, '--drain-wait-ms', '120000'], { timeoutMs: 150_000 });
      assert.equal(leave.code, 0, leave.stderr);
      assert.match(leave.stderr, /draining \[/);
      assert.equal((await leaving.waitExit()).code, 0);
      c.peers.splice(2, 1);
      c.retired.push(leaving);
      await c.waitSettled('after the leave', 90_000);
    } finally {
      writing = false;
      await writer;
    }
    assert.deepEqual(failures, [], 'no write refused or failed');
    console.log(`      ${acked.size} keys acknowledged; ${indeterminate.length} writes with an unknown outcome at a primary hand-off (${indeterminate.join(', ') || 'none'})`);
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
