/**
 * The pure parts of bulk data movement (protocols/rebalance/): the token bucket behind
 * --rebalance-rate, where a resumed snapshot stream goes on, the progress a move reports, and the
 * planner's order and limits.
 */
import assert from 'node:assert/strict';
import { decideResume, planMoves, TokenBucket, TransferTracker, type MoveCandidate, type MoveLimits } from '../../protocols/rebalance/index.js';

const MiB = 1024 * 1024;

describe('rebalance: token bucket', () => {
  it('is unlimited without a rate', () => {
    const b = new TokenBucket(0, null);
    for (let k = 0; k < 100; k++) assert.equal(b.reserve(0, 64 * MiB), 0);
  });

  it('holds a sender to its rate after the burst, whatever the chunk sizes', () => {
    const rate = 2 * MiB;
    const b = new TokenBucket(0, rate);
    let t = 0;
    let sent = 0;
    for (let k = 0; k < 200; k++) {
      const chunk = (k % 7) * 100_000 + 50_000;
      t += b.reserve(t, chunk);
      sent += chunk;
    }
    // Time taken ≈ (sent - burst) / rate, never less.
    const floor = ((sent - 2 * MiB) / rate) * 1000;
    assert.ok(t >= floor - 1, `${t} ms for ${sent} bytes; at least ${floor}`);
    assert.ok(t <= floor + 1000, `not much slower than the rate: ${t} vs ${floor}`);
  });

  it('refuses a rate that is not a positive number', () => {
    for (const bad of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
      assert.throws(() => new TokenBucket(0, bad), (e: Error) => e.name === 'ConfigError' && /rebalanceRate/.test(e.message));
    }
  });
});

describe('rebalance: resuming a snapshot stream', () => {
  it('goes on after the chunks the receiver holds, or starts over', () => {
    assert.deepEqual(decideResume(5, true, 5), { kind: 'resend-pending' });
    assert.deepEqual(decideResume(5, true, 6), { kind: 'skip-pending' });
    assert.deepEqual(decideResume(5, false, 5), { kind: 'resend-pending' });
    assert.equal(decideResume(5, false, 6).kind, 'restart');
    assert.equal(decideResume(5, true, 0).kind, 'restart', 'the receiver lost its staging');
    assert.equal(decideResume(5, true, 9).kind, 'restart');
    assert.equal(decideResume(0, true, -1).kind, 'restart');
    assert.equal(decideResume(0, true, 0.5).kind, 'restart');
  });
});

describe('rebalance: transfer progress', () => {
  it('reports bytes, a rate and an ETA, and counts resumes', () => {
    const t = new TransferTracker(3, 'a', 'b', 'id', 100, 0, 10 * MiB);
    assert.equal(t.progress(0).etaMs, null, 'no rate before the first chunk');
    let now = 0;
    for (let k = 0; k < 5; k++) {
      now += 1000;
      t.acknowledged(now, k, MiB);
    }
    const p = t.progress(now);
    assert.equal(p.chunks, 5);
    assert.equal(p.bytesDone, 5 * MiB);
    assert.ok(Math.abs(p.rateBps - MiB) < 1024, `rate ${p.rateBps}`);
    assert.ok(Math.abs(p.etaMs! - 5000) < 50, `eta ${p.etaMs}`);
    t.acknowledged(now + 10, 7, MiB); // not the next chunk: ignored
    assert.equal(t.progress(now).chunks, 5);
    t.resumed(now + 100, MiB);
    assert.deepEqual([t.progress(now + 100).resumes, t.progress(now + 100).bytesResumed], [1, 6 * MiB]);
    // A stalled stream's rate decays, so its ETA grows.
    assert.ok(t.progress(now + 30_000).rateBps < MiB / 5);
  });

  it('never shows a total below what was done', () => {
    const t = new TransferTracker(0, 'a', 'b', 'id', 1, 0, 100);
    t.acknowledged(10, 0, 5000);
    assert.equal(t.progress(10).bytesTotal, 5000);
    assert.equal(t.progress(10).etaMs, 0);
  });
});

describe('rebalance: move planner', () => {
  const limits: MoveLimits = { maxPerDestination: 2, maxPerSource: 4, maxInFlight: 32, replicationFactor: 3 };
  const cand = (shard: number, to: string, from: string, liveInSync = 3): MoveCandidate => ({ shard, to, from, liveInSync });

  it('starts repairs before balance moves, fewest live copies first', () => {
    const plan = planMoves(
      [cand(0, 'd', 'a'), cand(1, 'd', 'b', 2), cand(2, 'd', 'c', 1), cand(3, 'e', 'a'), cand(4, 'e', 'b', 2)],
      [],
      { ...limits, maxInFlight: 3 },
    );
    assert.deepEqual(
      plan.chosen.map((m) => [m.shard, m.kind]),
      [[2, 'repair'], [1, 'repair'], [4, 'repair']],
    );
    assert.deepEqual(plan.deferred.map((d) => d.move.shard).sort(), [0, 3]);
    assert.ok(plan.deferred.every((d) => /3 moves in flight/.test(d.reason)));
  });

  it('keeps every limit, counting the moves already in flight', () => {
    const candidates: MoveCandidate[] = [];
    for (let shard = 0; shard < 64; shard++) candidates.push(cand(shard, ['d', 'e', 'f'][shard % 3]!, ['a', 'b'][shard % 2]!, shard % 4 === 0 ? 2 : 3));
    const inFlight = [
      { shard: 100, to: 'd', from: 'a' },
      { shard: 101, to: 'f', from: null },
    ];
    const l: MoveLimits = { maxPerDestination: 3, maxPerSource: 2, maxInFlight: 6, replicationFactor: 3 };
    const plan = planMoves(candidates, inFlight, l);
    const into = new Map<string, number>([['d', 1], ['f', 1]]);
    const outOf = new Map<string, number>([['a', 1]]);
    for (const m of plan.chosen) {
      into.set(m.to, (into.get(m.to) ?? 0) + 1);
      outOf.set(m.from, (outOf.get(m.from) ?? 0) + 1);
    }
    for (const [id, n] of into) assert.ok(n <= l.maxPerDestination, `${id} gets ${n}`);
    for (const [id, n] of outOf) assert.ok(n <= l.maxPerSource, `${id} sends ${n}`);
    assert.ok(plan.chosen.length + inFlight.length <= l.maxInFlight);
    // Sources are the binding limit here: a sends 1 more, b sends 2.
    assert.equal(plan.chosen.length, 3);
    assert.equal(plan.chosen.length + plan.deferred.length, candidates.length);
  });

  it('starts one move per shard, and rotates among equals so no shard always waits', () => {
    const plan = planMoves([cand(5, 'd', 'a', 1), cand(5, 'e', 'a', 1)], [], limits);
    assert.equal(plan.chosen.length, 1);
    assert.match(plan.deferred[0]!.reason, /one move per shard/);
    const firsts = new Set<number>();
    const c = [cand(0, 'd', 'a'), cand(1, 'e', 'b'), cand(2, 'f', 'c')];
    for (let rot = 0; rot < 3; rot++) firsts.add(planMoves(c, [], { ...limits, maxInFlight: 1 }, rot).chosen[0]!.shard);
    assert.equal(firsts.size, 3);
  });

  it('is a pure function: the same input gives the same plan', () => {
    const c = Array.from({ length: 40 }, (_, k) => cand(k, `p${k % 5}`, `q${k % 3}`, 1 + (k % 3)));
    assert.deepEqual(planMoves(c, [], limits, 7), planMoves([...c].reverse(), [], limits, 7));
  });
});
