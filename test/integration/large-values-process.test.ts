/**
 * Large values through real `shoal` processes (issue 14): 3 peers take 80 MB of 1 MiB values
 * from concurrent clients with no put refused or timed out (a failover under the saturating load
 * may make a put in flight `indeterminate` or `unavailable`: bounded, retried, counted), at most 2 shards paused
 * at once, no replication stream reset and every value read back; then the cluster grows to 5 and settles with every shard fully in sync
 * and the replicas balanced (max/mean ≤ 1.25). `npm run bench:large` prints the same figures.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { ShardInfo } from '../../node/store-api.js';
import { loadLargeValues, quantile, readBack, replicationTrouble, SmallWriter, WritableWatch } from './bulk-load.js';
import { ProcessPeer } from './harness.js';
import { Cluster } from './process-cluster.js';

const MB = 1024 * 1024;
/**
 * SHOAL_LARGE_MB overrides the load size. The suite uses 80 (it used 200 until the suite's
 * 10-minute budget needed the time for the move and task tests; `npm run bench:large` loads 200 and more).
 */
const LOAD_MB = Number(process.env.SHOAL_LARGE_MB ?? 80);

describe('store: large values through 3 processes, then growth to 5', function () {
  this.timeout(420_000);
  let cluster: Cluster | null = null;
  const small = { writer: null as SmallWriter | null };

  after(async () => {
    small.writer?.close();
    await cluster?.destroy();
  });

  it(`takes ${LOAD_MB} MB of 1 MiB values, no put refused, no stream reset, at most 2 shards paused at once, reads them all back, and settles balanced after growing to 5`, async () => {
    const c = (cluster = await Cluster.create());
    await c.startPeers(3);
    await c.waitSettled('start', 60_000);
    const addrs = (): string[] => c.peers.map((p) => p.httpAddress);

    const watch = new WritableWatch(addrs, 200);
    watch.start();
    const writer = (small.writer = new SmallWriter(addrs()));
    writer.start();
    const load = await loadLargeValues({
      targets: addrs(),
      totalBytes: LOAD_MB * MB,
      valueBytes: MB,
      clients: 4,
      keyPrefix: 'big-',
      requestTimeoutMs: 30_000,
      maxAttemptsPerKey: 5,
      deadlineMs: 240_000,
    });
    const during = await writer.stop();
    await watch.stop();
    const counts = await replicationTrouble(c.peers.map((p) => p.httpAddress));
    const rate = load.bytesAcked / MB / (load.elapsedMs / 1000);
    console.log(
      `    load: ${load.acked.size} × 1 MiB in ${(load.elapsedMs / 1000).toFixed(1)} s = ${rate.toFixed(1)} MB/s; ` +
        `put p50 ${quantile(load.latenciesMs, 0.5).toFixed(0)} ms p99 ${quantile(load.latenciesMs, 0.99).toFixed(0)} ms; ` +
        `small puts beside it p99 ${quantile(during, 0.99).toFixed(1)} ms (n=${during.length}); ` +
        `writable min ${watch.minWritable}/${watch.shardCount} over ${watch.polls} polls; resets ${counts.resets}, dropped ${counts.dropped}`,
    );
    // On a slow, saturated 2-core machine a primary's lease (500 ms) sometimes lapses during the
    // load (event-loop stalls of 1-4 s: see the p99s above), and a failover follows. What a
    // client may then see is bounded, and checked: a put in flight at that moment may answer
    // `indeterminate`, or `unavailable` (retryable, Retry-After) when no primary served it
    // within the request timeout; both are retried here and every key ends acknowledged. Never
    // `not_enough_replicas`, a timeout or anything else; at most 4 such answers of all the puts; and
    // the hand-back of a moved primary pauses at most 2 shards at once (MAX_BALANCING_VACANCIES).
    // Issue 12 owns the stalls.
    const FAILOVER = new Set(['503 indeterminate', '503 unavailable']);
    const failed = Object.fromEntries(load.failures);
    const notFailover = Object.keys(failed).filter((k) => !FAILOVER.has(k));
    assert.deepEqual(notFailover, [], `a large put was refused or timed out: ${JSON.stringify(failed)}`);
    const failoverAnswers = Object.entries(failed).reduce((n, [, v]) => n + (v as number), 0);
    assert.ok(failoverAnswers <= 4, `at most 4 of ${LOAD_MB} large puts answered indeterminate or unavailable at a failover: ${JSON.stringify(failed)}`);
    const smallFailed = Object.keys(Object.fromEntries(writer.failures)).filter((k) => !FAILOVER.has(k));
    assert.deepEqual(smallFailed, [], `a small put was refused or timed out: ${JSON.stringify(Object.fromEntries(writer.failures))}`);
    assert.equal(load.acked.size, Math.ceil((LOAD_MB * MB) / MB));
    assert.ok(watch.polls >= 5, `the shards were watched (${watch.polls} polls)`);
    assert.ok(watch.minWritable >= watch.shardCount - 2, `at most 2 shards paused at once (${watch.minWritable}/${watch.shardCount} writable at the worst poll)`);
    if (Object.keys(failed).length > 0 || watch.minWritable < watch.shardCount) {
      console.log(`    a failover happened during the load: puts ${JSON.stringify(failed)}; writable min ${watch.minWritable}/${watch.shardCount}`);
    }
    assert.equal(counts.resets, 0, 'no stream was reset');
    assert.equal(counts.refused, 0, 'no frame or message was over the limit');

    const bad = await readBack(addrs(), load.acked, 30_000);
    assert.deepEqual(bad, [], 'every acknowledged value reads back unchanged');

    // Grow to 5: every shard ends with 3 in-sync replicas, balanced.
    const seed = c.peers[0] as ProcessPeer;
    for (let i = 3; i < 5; i++) c.peers.push(await ProcessPeer.start(join(c.dir, `p${i}`), { join: [seed.joinToken] }));
    const grownAt = performance.now();
    await c.waitSettled('grown to 5', 240_000);
    const table: ShardInfo[] = await c.shards(seed);
    const held = new Map<string, number>(c.peers.map((p) => [p.peerId, 0]));
    for (const s of table) {
      assert.equal(s.inSync.length, 3, `shard ${s.shard} has 3 in-sync replicas`);
      for (const r of s.replicas) held.set(r, (held.get(r) ?? 0) + 1);
    }
    const counts5 = [...held.values()];
    const mean = counts5.reduce((a, b) => a + b, 0) / counts5.length;
    const max = Math.max(...counts5);
    const after = await replicationTrouble(c.peers.map((p) => p.httpAddress));
    console.log(
      `    grow 3 → 5 settled in ${((performance.now() - grownAt) / 1000).toFixed(1)} s; replicas per peer ${counts5.join('/')} (max/mean ${(max / mean).toFixed(2)}); resets ${after.resets}`,
    );
    assert.ok(max / mean <= 1.25, `max/mean ${max}/${mean.toFixed(1)} = ${(max / mean).toFixed(2)} ≤ 1.25`);
    assert.equal(after.resets, 0, 'no stream was reset while growing');
    // The coordinator's catch-up report: nothing under way once settled, nothing abandoned.
    const coordinatorId = (await c.status(seed)).coordinator;
    const coordinator = c.peers.find((p) => p.peerId === coordinatorId);
    assert.ok(coordinator !== undefined, 'a coordinator among the peers');
    const report = (await (await fetch(`http://${coordinator.httpAddress}/v1/shards`)).json()) as { catchUps: { active: unknown[]; abandonedTotal: number } | null };
    assert.ok(report.catchUps !== null, '/v1/shards on the coordinator carries the catch-up report');
    assert.deepEqual(report.catchUps.active, []);
    assert.equal(report.catchUps.abandonedTotal, 0);
    const other = c.peers.find((p) => p.peerId !== coordinatorId)!;
    assert.equal(((await (await fetch(`http://${other.httpAddress}/v1/shards`)).json()) as { catchUps: unknown }).catchUps, null);
    const again = await readBack(addrs(), new Map([...load.acked].slice(0, 20)), 30_000);
    assert.deepEqual(again, [], 'values still read back after the moves');
  });
});
