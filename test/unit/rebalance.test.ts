/**
 * The pure parts of bulk data movement (protocols/rebalance/): the token bucket behind
 * --rebalance-rate, where a resumed snapshot stream goes on, the progress a move reports, and the
 * planner's order and limits.
 */
import assert from 'node:assert/strict';
import { decideResume, TokenBucket, TransferTracker } from '../../protocols/rebalance/index.js';

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
