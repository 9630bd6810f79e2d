import assert from 'node:assert/strict';
import { WriteWaiters } from '../../node/write-waiters.js';
import { NotPrimaryError } from '../../protocols/replication/errors.js';

/** Settles to the outcome, or 'pending' when the promise has not settled by the next turn. */
async function outcome(p: Promise<unknown>): Promise<unknown> {
  const pending = Symbol('pending');
  const r = await Promise.race([p.then((v) => v, (e: Error) => `${e.name}: ${e.message}`), new Promise((res) => setImmediate(() => res(pending)))]);
  return r === pending ? 'pending' : r;
}

describe('WriteWaiters', () => {
  it('settles each write with its own answer, success or error, and forgets it', async () => {
    const w = new WriteWaiters(1000);
    const a = w.wait(1, 0);
    const b = w.wait(2, 0);
    const c = w.wait(3, 0);
    w.deliver([
      { requestId: 2, ok: false, error: new NotPrimaryError('p2', 4, 'not-primary') },
      { requestId: 1, ok: true, result: { applied: true, version: 7, seq: 3 } },
      { requestId: 99, ok: true, result: { applied: true, version: 1, seq: 1 } }, // nobody waits: dropped
    ]);
    assert.deepEqual(await outcome(a), { applied: true, version: 7, seq: 3 });
    assert.match(String(await outcome(b)), /^NotPrimaryError/);
    assert.equal(await outcome(c), 'pending');
    assert.equal(w.size, 1);
  });

  it('times each applied write from its acceptance to its answer; refused and failed writes are not timed', async () => {
    let clock = 100;
    const timed: number[] = [];
    const w = new WriteWaiters(1000, { now: () => clock, applied: (ms) => timed.push(ms) });
    const a = w.wait(1, 100);
    const b = w.wait(2, 110);
    const c = w.wait(3, 120);
    clock = 135;
    w.deliver([
      { requestId: 1, ok: true, result: { applied: true, version: 1, seq: 1 } },
      { requestId: 2, ok: true, result: { applied: false, current: { version: 4, present: true } } },
      { requestId: 3, ok: false, error: new NotPrimaryError('p2', 4, 'not-primary') },
    ]);
    assert.deepEqual(timed, [35]);
    assert.deepEqual(await outcome(a), { applied: true, version: 1, seq: 1 });
    assert.deepEqual(await outcome(b), { applied: false, current: { version: 4, present: true } });
    assert.match(String(await outcome(c)), /^NotPrimaryError/);
  });

  it('fails a write indeterminate once its deadline has passed on the tick, not before, and only the expired ones', async () => {
    const w = new WriteWaiters(1000);
    const early = w.wait(1, 0);
    const late = w.wait(2, 500);
    w.expire(999);
    assert.equal(await outcome(early), 'pending');
    w.expire(1000);
    assert.match(String(await outcome(early)), /^StoreError: no answer within 1000 ms; the write may or may not have been applied/);
    assert.equal(await outcome(late), 'pending');
    // An answer after the deadline finds nobody: the client already has its indeterminate.
    w.deliver([{ requestId: 1, ok: true, result: { applied: true, version: 1, seq: 1 } }]);
    w.expire(1500);
    assert.match(String(await outcome(late)), /^StoreError: no answer within/);
    assert.equal(w.size, 0);
  });

  it('keeps deadline order even if the clock handed in goes back', async () => {
    const w = new WriteWaiters(100);
    const a = w.wait(1, 50);
    const b = w.wait(2, 10); // deadline raised to a's (150), so it never hides behind a
    w.expire(149);
    assert.equal(await outcome(a), 'pending');
    assert.equal(await outcome(b), 'pending');
    w.expire(150);
    assert.match(String(await outcome(a)), /^StoreError/);
    assert.match(String(await outcome(b)), /^StoreError/);
  });

  it('fails every waiting write when the peer stops, and refuses a request id twice or a bad timeout', async () => {
    const w = new WriteWaiters(1000);
    const a = w.wait(1, 0);
    assert.throws(() => w.wait(1, 0), /already waiting/);
    w.rejectAll('the peer stopped');
    assert.equal(await outcome(a), 'StoreError: the peer stopped');
    assert.throws(() => new WriteWaiters(0), RangeError);
  });
});
