import assert from 'node:assert/strict';
import { describe, it } from 'mocha';
import { phi, PHI_MAX, PhiAccrualDetector, type PhiAccrualOptions } from '../../protocols/membership/phi-accrual.js';

/** The defaults of protocols/membership/config.ts. */
const DEFAULTS: PhiAccrualOptions = {
  maxSampleSize: 200,
  minStdDeviationMs: 100,
  acceptableHeartbeatPauseMs: 1000,
  firstHeartbeatEstimateMs: 500,
};

/** Akka's formula written out literally, to check ours against. */
function akkaPhi(t: number, mean: number, std: number): number {
  const y = (t - mean) / std;
  const e = Math.exp(-y * (1.5976 + 0.070566 * y * y));
  return t > mean ? -Math.log10(e / (1 + e)) : -Math.log10(1 - 1 / (1 + e));
}

function assertClose(actual: number, expected: number, tolerance = 1e-6, what = ''): void {
  assert.ok(Math.abs(actual - expected) <= tolerance, `${what} expected ${expected} ± ${tolerance}, got ${actual}`);
}

/** Heartbeats at `startMs`, then every `intervalMs`, `count` times in all; returns the last arrival. */
function feed(detector: PhiAccrualDetector, startMs: number, intervalMs: number, count: number): number {
  let t = startMs;
  for (let i = 0; i < count; i++) {
    detector.heartbeat(t);
    if (i < count - 1) t += intervalMs;
  }
  return t;
}

/** First silence (ms after `lastMs`, to 0.01 ms) at which phi reaches `level`; bounded bisection. */
function silenceUntilPhi(detector: PhiAccrualDetector, lastMs: number, level: number): number {
  let lo = 0;
  let hi = 100_000;
  for (let i = 0; i < 60 && hi - lo > 0.001; i++) {
    const mid = (lo + hi) / 2;
    if (detector.phi(lastMs + mid) >= level) hi = mid;
    else lo = mid;
  }
  return Math.round(hi * 100) / 100;
}

describe('phi()', () => {
  it('is log10(2) ≈ 0.30103 at the mean', () => {
    assertClose(phi(1000, 1000, 100), Math.log10(2), 1e-12);
    assertClose(phi(1000, 1000, 100), 0.30103, 1e-5);
  });

  it('has pinned values at known points', () => {
    const pinned: [t: number, mean: number, std: number, phi: number][] = [
      [900, 1000, 100, 0.075033032],
      [1100, 1000, 100, 0.799508321],
      [1200, 1000, 100, 1.642827885],
      [1300, 1000, 100, 2.909475326],
      [1500, 1000, 100, 7.299947394],
      [2000, 1000, 100, 37.584713053],
      [1000, 500, 125, 4.736694583],
    ];
    for (const [t, mean, std, expected] of pinned) assertClose(phi(t, mean, std), expected, 1e-6, `phi(${t}, ${mean}, ${std})`);
  });

  it("equals Akka's two-branch formula wherever that one is finite", () => {
    for (let t = 0; t <= 3000; t += 37) {
      for (const [mean, std] of [[1000, 100], [500, 125], [1500, 300]] as const) {
        const reference = akkaPhi(t, mean, std);
        if (Number.isFinite(reference)) assertClose(phi(t, mean, std), Math.max(0, reference), 1e-9, `t=${t}`);
      }
    }
  });

  it('grows monotonically with silence', () => {
    let previous = -1;
    for (let t = 0; t <= 5000; t += 10) {
      const value = phi(t, 1500, 100);
      assert.ok(value >= previous, `phi fell at t=${t}`);
      previous = value;
    }
  });

  it('stays finite: capped at PHI_MAX, NaN and Infinity map to PHI_MAX', () => {
    assertClose(phi(4000, 1000, 100), 848.268325, 1e-5); // Akka's literal formula gives Infinity here
    assert.equal(phi(10_000, 1000, 100), PHI_MAX);
    assert.equal(phi(Infinity, 1000, 100), PHI_MAX);
    assert.equal(phi(NaN, 1000, 100), PHI_MAX);
    assert.equal(phi(1000, 1000, 0), PHI_MAX); // 0/0
    assert.equal(phi(1001, 1000, 0), PHI_MAX);
    assert.equal(phi(999, 1000, 0), 0);
    assert.ok(phi(0, 1000, 100) >= 0);
  });
});

describe('PhiAccrualDetector', () => {
  it('is 0 before any heartbeat and seeds the Akka bootstrap on the first', () => {
    const d = new PhiAccrualDetector(DEFAULTS);
    assert.equal(d.phi(12_345), 0);
    assert.equal(d.lastArrivalMs, null);
    d.heartbeat(1000);
    assert.equal(d.lastArrivalMs, 1000);
    assert.equal(d.sampleCount, 2); // 375 and 625
    assert.equal(d.meanMs, 500);
    assert.equal(d.stdDevMs, 125);
    assertClose(silenceUntilPhi(d, 1000, 8), 2153.25, 0.01);
  });

  it('steady 500 ms heartbeats: phi small shortly after, crosses 8 at 2022.60 ms of silence', () => {
    const d = new PhiAccrualDetector(DEFAULTS);
    const last = feed(d, 0, 500, 21);
    assert.equal(d.sampleCount, 22);
    assert.equal(d.meanMs, 500);
    assertClose(d.stdDevMs, 37.688918, 1e-6); // the bootstrap pair still in the window
    assert.ok(d.phi(last + 500) < 1e-30);
    assertClose(d.phi(last + 1500), Math.log10(2), 1e-9); // mean + acceptable pause
    assertClose(d.phi(last + 2000), 7.299947394, 1e-6);
    assertClose(silenceUntilPhi(d, last, 8), 2022.6, 0.01);
  });

  it('keeps the std-dev floor for perfectly steady intervals', () => {
    const d = new PhiAccrualDetector({ ...DEFAULTS, maxSampleSize: 10 });
    const last = feed(d, 0, 500, 30); // the bootstrap pair has left the window
    assert.equal(d.sampleCount, 10);
    assert.equal(d.stdDevMs, 0);
    // Without the floor phi would jump from 0 to PHI_MAX at mean + pause; with it, it is smooth.
    assertClose(d.phi(last + 1500), Math.log10(2), 1e-9);
    assertClose(d.phi(last + 1600), phi(1600, 1500, 100), 1e-12);
    assertClose(silenceUntilPhi(d, last, 8), 2022.6, 0.01);
  });

  it('tolerates jitter: phi stays low at every arrival and crosses 8 later than for steady beats', () => {
    const d = new PhiAccrualDetector(DEFAULTS);
    const jitterMs = [0, 150, -150, 90, -90, 200, -200, 50, -50, 0];
    let t = 0;
    d.heartbeat(t);
    for (let i = 0; i < 100; i++) {
      const next = t + 500 + (jitterMs[i % jitterMs.length] as number);
      assert.ok(d.phi(next) < 0.01, `phi at arrival ${i} is ${d.phi(next)}`);
      d.heartbeat(next);
      t = next;
    }
    assertClose(d.meanMs, 500, 1e-9);
    assertClose(d.stdDevMs, Math.sqrt((10 * 146_200 + 2 * 125 ** 2) / 102), 1e-9); // 120.994652
    assertClose(silenceUntilPhi(d, t, 8), 2132.32, 0.01);
  });

  it('a long pause drives phi to the cap, and one heartbeat brings it back', () => {
    const d = new PhiAccrualDetector(DEFAULTS);
    const last = feed(d, 0, 500, 20);
    assert.equal(d.phi(last + 30_000), PHI_MAX);
    d.heartbeat(last + 30_000);
    assert.ok(d.phi(last + 30_100) < 0.2);
    // Without a threshold option every interval counts, the 30 s one included,
    // and it skews the statistics: the next silence must last ~35 s to reach phi 8.
    assert.equal(d.sampleCount, 22);
    assertClose(d.meanMs, 40_500 / 22, 1e-9);
    assertClose(silenceUntilPhi(d, last + 30_000, 8), 34_954.25, 0.01);
  });

  it('with phiThreshold, an interval that ended past the threshold is not recorded', () => {
    const d = new PhiAccrualDetector({ ...DEFAULTS, phiThreshold: 8 });
    const last = feed(d, 0, 500, 20);
    d.heartbeat(last + 30_000);
    assert.equal(d.sampleCount, 21);
    assert.equal(d.meanMs, 500);
    assertClose(silenceUntilPhi(d, last + 30_000, 8), 2022.6, 0.01);
    d.heartbeat(last + 30_500);
    assert.equal(d.sampleCount, 22);
  });

  it('evicts old intervals: after many 100 ms then many 1000 ms intervals the mean tracks the new ones', () => {
    const d = new PhiAccrualDetector({ ...DEFAULTS, maxSampleSize: 50 });
    const last100 = feed(d, 0, 100, 101);
    assert.equal(d.sampleCount, 50);
    assert.equal(d.meanMs, 100);
    feed(d, last100 + 1000, 1000, 25); // half the window replaced
    assertClose(d.meanMs, 550, 1e-9);
    assertClose(d.stdDevMs, 450, 1e-9);
    feed(d, last100 + 26_000, 1000, 50);
    assert.equal(d.sampleCount, 50);
    assertClose(d.meanMs, 1000, 1e-9);
    assertClose(d.stdDevMs, 0, 1e-6);
  });

  it('resetClock restarts the silence without recording an interval', () => {
    const d = new PhiAccrualDetector(DEFAULTS);
    const last = feed(d, 0, 500, 20);
    const samples = d.sampleCount;
    assert.equal(d.phi(last + 5000), PHI_MAX);
    d.resetClock(last + 5000);
    assert.equal(d.lastArrivalMs, last + 5000);
    assert.equal(d.sampleCount, samples);
    assert.ok(d.phi(last + 5100) < 1e-20);
    const fresh = new PhiAccrualDetector(DEFAULTS);
    fresh.resetClock(100);
    assert.equal(fresh.lastArrivalMs, null);
  });

  it('treats a clock that steps backwards as zero elapsed', () => {
    const d = new PhiAccrualDetector(DEFAULTS);
    d.heartbeat(1000);
    assert.ok(d.phi(900) < 1e-20);
    d.heartbeat(900);
    assert.equal(d.sampleCount, 3);
    assert.ok(d.meanMs < 500);
  });

  it('refuses a window size below 1 and a non-positive std-dev floor', () => {
    assert.throws(() => new PhiAccrualDetector({ ...DEFAULTS, maxSampleSize: 0 }), RangeError);
    assert.throws(() => new PhiAccrualDetector({ ...DEFAULTS, minStdDeviationMs: 0 }), RangeError);
  });
});
