/**
 * The key-value store with real `shoal` processes: a shard's primary is SIGKILLed or SIGSTOPped
 * while clients write, read and cas over HTTP; every client operation is recorded and the
 * whole history is checked for linearizability and for lost acknowledged writes. Then a full
 * crash (SIGKILL of every peer) and restart, which must keep every acknowledged write.
 *
 * Outcomes (see node/store-api.ts): a 200 (or a 412 for a cas) is ok; a 503 `indeterminate`,
 * a timeout or a connection error on a write is unknown; any other 503 or 4xx did not apply.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { ShardInfo, ShardSummary } from '../../node/store-api.js';
import { shardOf } from '../../protocols/placement/index.js';
import type { KvOp } from '../checker/history.js';
import type { FinalRead } from '../checker/lost-writes.js';
import { ProcessPeer, waitFor } from './harness.js';
import { Cluster, short } from './process-cluster.js';
import { checkHistory, finalReads, now, pause, saveHistory, sendOp, Workload } from './workload.js';

// ---------------------------------------------------------------------------------------------
// The fault scenario shared by the first three tests

interface FaultScenario {
  fault: 'SIGKILL' | 'SIGSTOP';
  clients: number;
  /** Load before the fault. */
  warmupMs: number;
  /** How long the primary stays frozen at least (SIGSTOP). */
  freezeMs?: number;
  seed: number;
  /**
   * Whose shard is made hot: a primary that is not the coordinator (default: the store's failover
   * alone), or the coordinator itself (a Raft election and the shard failover together).
   */
  victim?: 'not-coordinator' | 'coordinator';
}

/** What a suite's tests share: its cluster, and what the running test noted for the failure dump. */
interface SuiteContext {
  cluster?: Cluster;
  workload?: Workload;
  /** Set by the test as it goes, for the failure dump. */
  notes: string[];
  hotKeys?: Set<string>;
  faultAt?: number;
}

async function runFaultScenario(cluster: Cluster, ctx: SuiteContext, opts: FaultScenario): Promise<void> {
  const tag = `${opts.fault}-${cluster.peers.length}peers${opts.victim === 'coordinator' ? '-coordinator' : ''}`;
  const label = (id: string): string => cluster.label(id);
  const first = cluster.peers[0] as ProcessPeer;
  const st = await cluster.status(first);
  const shardCount = (st.shards as ShardSummary).shardCount;
  const table = await cluster.shards(first);
  assert.equal(table.length, shardCount, '/v1/shards lists every shard');

  // The hot shard: served by a primary that is not the coordinator (the store's failover, not Raft's), or by the coordinator.
  const wantCoordinator = opts.victim === 'coordinator';
  const hot = table.find((s) => s.primary !== null && (s.primary === st.coordinator) === wantCoordinator) ?? table.find((s) => s.primary !== null);
  assert.ok(hot !== undefined, 'a shard with a primary');
  const hotKeys: string[] = [];
  const coldKeys: string[] = [];
  for (let i = 0; hotKeys.length < 4 || coldKeys.length < 4; i++) {
    assert.ok(i < 100_000, 'keys for the hot shard');
    const key = `${tag}/key-${i}`;
    if (shardOf(key, shardCount) === hot.shard) {
      if (hotKeys.length < 4) hotKeys.push(key);
    } else if (coldKeys.length < 4) coldKeys.push(key);
  }
  const keys = [...hotKeys, ...coldKeys];
  ctx.hotKeys = new Set(hotKeys);
  ctx.notes.push(`hot shard ${hot.shard} (primary ${label(hot.primary as string)}, coordinator ${label(st.coordinator as string)}), hot keys ${hotKeys.join(',')}, cold keys ${coldKeys.join(',')}`);
  console.log(`    [${tag}] hot shard ${hot.shard}: primary ${label(hot.primary as string)}, coordinator ${label(st.coordinator as string)}`);

  const workload = new Workload(cluster.peers, keys, ctx.hotKeys);
  ctx.workload = workload;
  const loadStart = now();
  workload.start(opts.clients, opts.seed);
  await waitFor(
    `the warm-up: ${opts.warmupMs} ms of load with writes to the hot shard applied`,
    () => now() - loadStart >= opts.warmupMs && workload.countHotWrites() >= 5,
    { timeoutMs: 20_000 },
  );

  // Whoever is the hot shard's primary now is the victim.
  const current = (await cluster.shards(first)).find((s) => s.shard === hot.shard) as ShardInfo;
  const slot = cluster.peers.findIndex((p) => p.peerId === current.primary);
  assert.ok(slot >= 0, `the hot shard has a primary among the peers: ${JSON.stringify(current)}`);
  const victim = cluster.peers[slot] as ProcessPeer;
  const survivors = cluster.peers.filter((p) => p !== victim);
  const hotBefore = workload.countHotWrites();

  const faultAt = now();
  ctx.faultAt = faultAt;
  victim.signal(opts.fault);
  workload.targets = survivors;
  ctx.notes.push(`${opts.fault} of p${slot} (${short(victim.peerId)}) at ${faultAt.toFixed(1)} after ${(faultAt - loadStart).toFixed(0)} ms of load, ${hotBefore} hot writes applied before`);
  if (opts.fault === 'SIGKILL') await victim.waitExit();

  let thawAt: number | null = null;
  try {
    const failedOver = await waitFor('a write to the hot shard applied after the fault', () => workload.firstHotWriteAfter(faultAt), { timeoutMs: 15_000 });
    const failoverMs = failedOver - faultAt;
    console.log(`    [${tag}] failover of shard ${hot.shard}: ${opts.fault} → first acknowledged write ${failoverMs.toFixed(0)} ms`);
    ctx.notes.push(`failover ${failoverMs.toFixed(0)} ms`);

    // The survivors agree that the shard has a new primary.
    await waitFor(
      'the survivors to show a new primary for the hot shard',
      async () => {
        const views = await Promise.all(survivors.map((p) => cluster.shards(p)));
        return views.every((v) => {
          const s = v.find((x) => x.shard === hot.shard);
          return s !== undefined && s.primary !== null && s.primary !== victim.peerId;
        });
      },
      { timeoutMs: 10_000 },
    );

    if (opts.fault === 'SIGSTOP') {
      const freezeMs = opts.freezeMs ?? 3000;
      await waitFor(`the freeze to last ${freezeMs} ms`, () => now() - faultAt >= freezeMs, { timeoutMs: freezeMs + 1000 });
      victim.signal('SIGCONT');
      thawAt = now();
      ctx.notes.push(`SIGCONT at ${thawAt.toFixed(1)} after ${(thawAt - faultAt).toFixed(0)} ms frozen`);
      // Straight back in the rotation, and half of all requests go to it: stale strong reads would show.
      workload.targets = cluster.peers.slice();
      workload.focus = victim;
      const thawed = thawAt;
      await waitFor(
        'the thawed peer to answer 40 operations ok (strong reads among them)',
        () => workload.okServedBy(victim.peerId, thawed) >= 40 && workload.okServedBy(victim.peerId, thawed, 'read') >= 10,
        { timeoutMs: 20_000 },
      );
      workload.focus = null;
    }

    // Some load after the failover, then quiesce.
    const after = workload.countHotWrites(faultAt);
    await waitFor('more writes to the hot shard after the failover', () => workload.countHotWrites(faultAt) >= after + 6, { timeoutMs: 10_000 });
  } finally {
    if (opts.fault === 'SIGSTOP' && thawAt === null) victim.signal('SIGCONT');
    await workload.stop();
  }
  ctx.notes.push(`load stopped at ${now().toFixed(1)}`);
  console.log(`    [${tag}] ${workload.summary(label)}`);

  // The killed peer comes back on its data dir; the frozen one is already back.
  let back = victim;
  if (opts.fault === 'SIGKILL') {
    back = await cluster.restart(slot, survivors);
    ctx.notes.push(`p${slot} restarted at ${now().toFixed(1)}`);
  }
  const rejoinStart = now();
  await cluster.waitWritable(`after the ${opts.fault}`);
  console.log(`    [${tag}] all shards writable on every peer again ${(now() - rejoinStart).toFixed(0)} ms after the ${opts.fault === 'SIGKILL' ? 'restart' : 'load stopped'}`);

  // Final strong reads through every peer: they agree with each other and with the history.
  const finalsByPeer: Map<string, FinalRead>[] = [];
  for (const [i, p] of cluster.peers.entries()) finalsByPeer.push(await finalReads(workload, p, `p${i}`, keys));
  const finals = finalsByPeer[0] as Map<string, FinalRead>;
  for (const [i, f] of finalsByPeer.entries()) {
    assert.deepEqual(Object.fromEntries(f), Object.fromEntries(finals), `final reads through p${i} agree with those through p0`);
  }
  assert.ok(workload.countHotWrites() > hotBefore, 'writes to the hot shard were acknowledged after the fault');
  await checkHistory(workload, finals, tag);

  // The peer that was down is a full replica again: every shard fully in sync, and it holds some of them.
  await waitFor(
    `p${slot} back in the in-sync sets, every shard with ${(st.shards as ShardSummary).replicationFactor} in-sync replicas`,
    async () => {
      const views = await Promise.all(cluster.peers.map((p) => cluster.shards(p)));
      return views.every(
        (v) =>
          v.length === shardCount &&
          v.every((s) => s.primary !== null && s.inSync.length === s.replicas.length && s.replicas.length === (st.shards as ShardSummary).replicationFactor) &&
          v.some((s) => s.inSync.includes(back.peerId)),
      );
    },
    { timeoutMs: 30_000, intervalMs: 250 },
  );
}

/**
 * A describe block around one cluster of `peers` processes shared by its tests: started and
 * settled before them, destroyed after them, and dumped (statuses, shard tables, stderr, the
 * workload) after a failed test.
 */
function clusterSuite(title: string, peers: number, body: (ctx: SuiteContext) => void, extraArgs: string[] = []): void {
  describe(title, function () {
    this.timeout(120_000);
    const ctx: SuiteContext = { notes: [] };

    before(async function () {
      this.timeout(90_000);
      const started = now();
      ctx.cluster = await Cluster.create(extraArgs);
      await ctx.cluster.startPeers(peers);
      await ctx.cluster.waitSettled(`${peers} fresh peers`, 60_000);
      console.log(`    cluster of ${peers} settled (every shard writable, all replicas in sync) after ${(now() - started).toFixed(0)} ms`);
    });

    beforeEach(() => {
      ctx.workload?.close();
      ctx.workload = undefined;
      ctx.notes = [];
      ctx.hotKeys = undefined;
      ctx.faultAt = undefined;
    });

    afterEach(async function () {
      if (this.currentTest?.state !== 'failed' || ctx.cluster === undefined) return;
      const label = (id: string): string => (ctx.cluster as Cluster).label(id);
      const out = [`==== failure dump: ${this.currentTest.title} ====`, ...ctx.notes];
      if (ctx.workload !== undefined) {
        out.push(`workload: ${ctx.workload.summary(label)}`);
        if (ctx.hotKeys !== undefined && ctx.faultAt !== undefined) {
          out.push(`hot-key operations from 150 ms before the fault (first 80):`, ctx.workload.excerpt(ctx.hotKeys, ctx.faultAt - 150, Infinity, label, 80));
        }
        out.push(`history saved to ${await saveHistory(ctx.workload, 'dump')}`);
      }
      out.push(await ctx.cluster.dump());
      console.log(out.join('\n'));
      // Give the next test a whole cluster: thaw every peer, restart the dead ones.
      const cluster = ctx.cluster;
      for (const p of cluster.peers) if (p.running) p.signal('SIGCONT');
      const live = cluster.peers.filter((p) => p.running);
      for (const [i, p] of cluster.peers.entries()) {
        if (p.running || live.length === 0) continue;
        await cluster.restart(i, live).catch((err: Error) => console.log(`could not restart p${i}: ${err.message}`));
      }
    });

    after(async () => {
      ctx.workload?.close();
      await ctx.cluster?.destroy();
    });

    body(ctx);
  });
}

/** One fault test: from a settled cluster, the scenario. */
function faultTest(ctx: SuiteContext, scenario: FaultScenario): void {
  const whose = scenario.victim === 'coordinator' ? 'the coordinator, primary of the busiest shard,' : 'the primary of the busiest shard';
  const how = scenario.fault === 'SIGKILL' ? 'SIGKILLed mid-write' : `SIGSTOPped for ${scenario.freezeMs ?? 3000} ms or more, then SIGCONT`;
  it(`${whose} ${how}: failover, linearizable history, nothing lost, the peer rejoins`, async () => {
    const cluster = ctx.cluster as Cluster;
    await cluster.waitSettled('precondition: a settled cluster');
    await runFaultScenario(cluster, ctx, scenario);
  });
}

// ---------------------------------------------------------------------------------------------
// Full crash and restart

/** Every peer SIGKILLed at once and restarted on its data dir: every acknowledged write is there. */
function fullRestartTest(ctx: SuiteContext): void {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  after(() => agent.destroy());

  /** The current value and version of `key` (a strong read; for an absent key, a cas that cannot match). */
  async function currentState(c: Cluster, turn: number, key: string): Promise<FinalRead> {
    return waitFor(
      `the current state of ${key}`,
      async () => {
        const peer = c.peers[turn % c.peers.length] as ProcessPeer;
        const r = await sendOp(agent, peer.httpAddress, { type: 'read', key }, 5000);
        if (r.outcome.status !== 'ok') return null;
        if (r.outcome.value != null) return r.outcome.version === undefined ? null : { value: r.outcome.value, version: r.outcome.version };
        const probe = await sendOp(agent, peer.httpAddress, { type: 'cas', key, expectVersion: 1_000_000_000, value: 'never' }, 5000);
        return probe.outcome.status === 'ok' && probe.outcome.casFailed === true && probe.outcome.version !== undefined
          ? { value: null, version: probe.outcome.version }
          : null;
      },
      { timeoutMs: 15_000, intervalMs: 100 },
    );
  }

  /** Writes of unknown outcome met by mustWrite (each resolved by reading the key back). */
  const unknownWrites: string[] = [];

  /**
   * Applies `op` (the only writer of its key; the key is at `before`) through the peers in turn
   * until it is acknowledged: refusals are retried, and an unknown outcome is resolved by reading
   * the key back (values are unique), then retried if it did not apply. Returns the new version.
   */
  async function mustWrite(c: Cluster, turn: number, op: KvOp, before: FinalRead): Promise<number> {
    assert.ok(op.type !== 'read');
    const deadline = now() + 20_000;
    let last = '';
    for (let attempt = 0; now() < deadline; attempt++) {
      const peer = c.peers[(turn + attempt) % c.peers.length] as ProcessPeer;
      const { outcome, detail } = await sendOp(agent, peer.httpAddress, op, 5000);
      if (outcome.status === 'ok') {
        assert.ok(outcome.version !== undefined && outcome.casFailed !== true, `${JSON.stringify(op)} → ${JSON.stringify(outcome)}`);
        return outcome.version;
      }
      last = detail;
      if (outcome.status === 'unknown') {
        const state = await currentState(c, turn + attempt, op.key);
        const applied = state.value === op.value && state.version === before.version + 1;
        unknownWrites.push(`${JSON.stringify(op)} via ${c.label(peer.peerId)}: ${detail}; read back ${JSON.stringify(state)} → ${applied ? 'applied' : 'not applied'}`);
        if (applied) return state.version;
        assert.deepEqual(state, before, `${JSON.stringify(op)} had an unknown outcome (${detail}) and the key is in neither state`);
      }
      await pause(Math.min(50 * (attempt + 1), 500));
    }
    assert.fail(`${JSON.stringify(op)} refused for 20 s (last: ${last})`);
  }

  /** Runs `fn` over `items` with `width` at a time. */
  async function inParallel<T>(items: readonly T[], width: number, fn: (item: T, i: number) => Promise<void>): Promise<void> {
    let next = 0;
    await Promise.all(
      Array.from({ length: width }, async () => {
        while (next < items.length) {
          const i = next++;
          await fn(items[i] as T, i);
        }
      }),
    );
  }

  it('every acknowledged put, overwrite, delete and cas survives a crash of every process (default, no --sync)', async () => {
    const c = ctx.cluster as Cluster;
    await c.waitSettled('precondition: a settled cluster');
    const notes = ctx.notes;
    const keys = Array.from({ length: 200 }, (_, i) => `restart/${i}`);
    const expected = new Map<string, { value: string | null; version: number }>();
    const started = now();

    await inParallel(keys, 8, async (key, i) => {
      const version = await mustWrite(c, i, { type: 'write', key, value: `first-${i}` }, { value: null, version: 0 });
      assert.equal(version, 1, `first put of ${key}`);
      expected.set(key, { value: `first-${i}`, version });
    });
    // Overwrites, deletes and cas on subsets (some keys get several of them).
    await inParallel(keys, 8, async (key, i) => {
      const e = expected.get(key) as { value: string | null; version: number };
      if (i % 3 === 0) {
        e.version = await mustWrite(c, i, { type: 'write', key, value: `second-${i}` }, { ...e });
        e.value = `second-${i}`;
        assert.equal(e.version, 2, `overwrite of ${key}`);
      }
      if (i % 7 === 0) {
        const value = `cas-${i}`;
        const version = await mustWrite(c, i, { type: 'cas', key, expectVersion: e.version, value }, { ...e });
        assert.equal(version, e.version + 1, `cas of ${key}`);
        Object.assign(e, { value, version });
      }
      if (i % 5 === 0) {
        const version = await mustWrite(c, i, { type: 'write', key, value: null }, { ...e });
        assert.equal(version, e.version + 1, `delete of ${key}`);
        Object.assign(e, { value: null, version });
      }
    });
    const written = now();
    notes.push(`wrote ${keys.length} keys in ${(written - started).toFixed(0)} ms`);
    if (unknownWrites.length > 0) console.log(`    [full restart] writes of unknown outcome on a settled cluster, resolved by reading back:\n      ${unknownWrites.join('\n      ')}`);

    // Crash everything at once: acknowledged writes sit in the OS buffers of at least minInSync peers.
    for (const p of c.peers) p.signal('SIGKILL');
    await Promise.all(c.peers.map((p) => p.waitExit()));
    const restartAt = now();
    const seed = await c.restart(0, []);
    await Promise.all([1, 2].map((i) => c.restart(i, [seed])));
    await c.waitWritable('after restarting every peer', c.peers, 60_000);
    const writableMs = now() - restartAt;
    notes.push(`writable again ${writableMs.toFixed(0)} ms after the restart began`);
    await c.waitSettled('after restarting every peer', 60_000);

    const wrong: string[] = [];
    await inParallel(keys, 8, async (key, i) => {
      const e = expected.get(key) as { value: string | null; version: number };
      const peer = c.peers[i % c.peers.length] as ProcessPeer;
      const read = await waitFor(
        `a strong read of ${key}`,
        async () => {
          const r = await sendOp(agent, peer.httpAddress, { type: 'read', key }, 5000);
          return r.outcome.status === 'ok' ? r.outcome : null;
        },
        { timeoutMs: 15_000, intervalMs: 100 },
      );
      if (read.value !== e.value || (read.version !== undefined && read.version !== e.version) || (read.value !== null && read.version === undefined)) {
        wrong.push(`${key}: expected ${JSON.stringify(e.value)}@v${e.version}, read ${JSON.stringify(read.value)}@v${read.version ?? '?'}`);
      }
    });
    assert.equal(wrong.length, 0, `keys read back wrong after the restart:\n${wrong.join('\n')}`);

    // Tombstones kept their versions: a cas that cannot match reports them, and a new put continues from them.
    const deleted = keys.filter((_, i) => i % 5 === 0);
    await inParallel(deleted, 8, async (key, i) => {
      const e = expected.get(key) as { value: string | null; version: number };
      const r = await sendOp(agent, (c.peers[i % 3] as ProcessPeer).httpAddress, { type: 'cas', key, expectVersion: 1_000_000_000, value: 'never' }, 5000);
      if (r.outcome.status !== 'ok' || r.outcome.casFailed !== true || r.outcome.version !== e.version) {
        wrong.push(`tombstone ${key}: expected a mismatch at v${e.version}, got ${JSON.stringify(r.outcome)} (${r.detail})`);
      }
    });
    assert.equal(wrong.length, 0, `tombstones after the restart:\n${wrong.join('\n')}`);
    const again = await mustWrite(c, 0, { type: 'write', key: deleted[0] as string, value: 'reborn' }, { ...(expected.get(deleted[0] as string) as FinalRead) });
    assert.equal(again, (expected.get(deleted[0] as string) as { version: number }).version + 1, 'a put after the restart continues from the tombstone');
    console.log(
      `    [full restart] ${keys.length} keys written in ${(written - started).toFixed(0)} ms; writable ${writableMs.toFixed(0)} ms after the restart; all read back`,
    );
  });
}

// ---------------------------------------------------------------------------------------------
// The suites

clusterSuite('store: 3 shoal processes under load, a shard primary killed, frozen; then all crashed and restarted', 3, (ctx) => {
  faultTest(ctx, { fault: 'SIGKILL', clients: 6, warmupMs: 1500, seed: 1000 });
  faultTest(ctx, { fault: 'SIGSTOP', clients: 6, warmupMs: 1500, freezeMs: 3000, seed: 2000 });
  // Last: it replaces every process.
  fullRestartTest(ctx);
});

// 64 clients: many writes of many shards in each group commit (one storage writer per peer).
clusterSuite('store: 5 shoal processes (R=3 over 5), 64 clients, a shard primary killed', 5, (ctx) => {
  faultTest(ctx, { fault: 'SIGKILL', clients: 64, warmupMs: 1000, seed: 3000 });
});

clusterSuite(
  'store: 3 shoal processes on --sync, 64 clients, a shard primary killed',
  3,
  (ctx) => {
    faultTest(ctx, { fault: 'SIGKILL', clients: 64, warmupMs: 1000, seed: 7000 });
  },
  ['--sync'],
);

// Longer runs, on demand (SHOAL_STORE_IT_EXTRA=1): the primary killed or frozen is also the coordinator.
if (process.env.SHOAL_STORE_IT_EXTRA === '1') {
  clusterSuite('store (extra): 3 shoal processes, the coordinator killed and frozen', 3, (ctx) => {
    faultTest(ctx, { fault: 'SIGKILL', clients: 6, warmupMs: 1500, seed: 4000, victim: 'coordinator' });
    faultTest(ctx, { fault: 'SIGSTOP', clients: 6, warmupMs: 1500, freezeMs: 3000, seed: 5000, victim: 'coordinator' });
  });
  clusterSuite('store (extra): 5 shoal processes, the coordinator killed', 5, (ctx) => {
    faultTest(ctx, { fault: 'SIGKILL', clients: 6, warmupMs: 1000, seed: 6000, victim: 'coordinator' });
  });
}
