/**
 * Tests of the checkers themselves (test/checker/): the history recorder, the
 * linearizability checker on hand-written good and bad histories, on randomized histories of
 * a simulated linearizable store (and single-read mutations of them), its speed, and the
 * lost-acknowledged-writes checker.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'mocha';
import { SeededRandom } from '../../protocols/random.js';
import {
  HistoryRecorder,
  toOperations,
  type History,
  type HistoryEvent,
  type KvOp,
  type OkOutcome,
  type Operation,
  type Outcome,
} from '../checker/history.js';
import { checkLinearizable, checkOperations, type CheckResult } from '../checker/linearizability.js';
import { findLostAcknowledgedWrites, type FinalRead } from '../checker/lost-writes.js';
import { applyRegisterOp, INITIAL_REGISTER, type RegisterState } from '../checker/register-model.js';
import { MIXED_WORKLOAD, simulateRegister, type Simulation, type SimulationOptions } from '../checker/simulated-register.js';

// ---------------------------------------------------------------------------------------------
// Building histories by hand

const read = (key: string): KvOp => ({ type: 'read', key });
const write = (key: string, value: string | null): KvOp => ({ type: 'write', key, value });
const del = (key: string): KvOp => ({ type: 'write', key, value: null });
const cas = (key: string, expectVersion: number, value: string): KvOp => ({ type: 'cas', key, expectVersion, value });

/** An ok read of `value` (and `version`, when given). */
const saw = (value: string | null, version?: number): Outcome =>
  version === undefined ? { status: 'ok', value } : { status: 'ok', value, version };
/** An ok write or successful cas (with the new version, when given). */
const ok = (version?: number): Outcome => (version === undefined ? { status: 'ok' } : { status: 'ok', version });
const mismatch = (version?: number): Outcome =>
  version === undefined ? { status: 'ok', casFailed: true } : { status: 'ok', casFailed: true, version };
const UNKNOWN: Outcome = { status: 'unknown' };
const FAIL: Outcome = { status: 'fail' };

/** One operation: client, invoke time, completion time (null: never completed), op, outcome. */
type Spec = [client: string, invokeAt: number, completeAt: number | null, op: KvOp, outcome?: Outcome];

/** Records `specs` through a HistoryRecorder driven by a fake clock. */
function build(specs: readonly Spec[]): History {
  let time = 0;
  const recorder = new HistoryRecorder({ now: () => time });
  const steps: { at: number; invoke: boolean; spec: number }[] = [];
  specs.forEach(([, invokeAt, completeAt], spec) => {
    steps.push({ at: invokeAt, invoke: true, spec });
    if (completeAt !== null) steps.push({ at: completeAt, invoke: false, spec });
  });
  steps.sort((a, b) => a.at - b.at || (a.invoke === b.invoke ? a.spec - b.spec : a.invoke ? -1 : 1));
  const ids = new Map<number, number>();
  for (const step of steps) {
    time = step.at;
    const [client, , , op, outcome] = specs[step.spec] as Spec;
    if (step.invoke) ids.set(step.spec, recorder.invoke(client, op));
    else recorder.complete(ids.get(step.spec) as number, outcome ?? UNKNOWN);
  }
  return recorder.history();
}

function assertOk(result: CheckResult): void {
  assert.deepEqual(result, { ok: true });
}

function assertViolation(result: CheckResult, key: string): void {
  assert.equal(result.ok, false, `expected a violation, got ${JSON.stringify(result)}`);
  if (result.ok !== false) return;
  assert.equal(result.key, key);
  assert.ok(result.reason.length > 0);
  // The witness must fail on its own, from the state it starts from.
  assert.ok(result.minimalWitness !== undefined && result.minimalWitness.length > 0);
  const initial = new Map(result.witnessStart === undefined ? [] : [[key, result.witnessStart]]);
  assert.equal(checkOperations(result.minimalWitness, { witness: false, initial }).ok, false, 'the witness must fail on its own');
}

/**
 * Changes the result of one ok read so that the history is no longer linearizable, in one
 * of three ways: the version off by one (values are unique, so the value names another
 * version), another acknowledged value of the key at the same version, or a stale read of the
 * state just before a write that had completed before the read began. Returns null if no
 * read qualifies.
 */
function mutateOneRead(rng: SeededRandom, simulation: Simulation): { history: HistoryEvent[]; key: string } | null {
  const operations = toOperations(simulation.history);
  const writerOfVersion = (key: string, version: number) =>
    operations.find(
      (o) => o.op.key === key && o.op.type !== 'read' && o.outcome.status === 'ok' && o.outcome.casFailed !== true && o.outcome.version === version,
    );
  const reads = operations.filter(
    (o) => o.op.type === 'read' && o.outcome.status === 'ok' && o.outcome.version !== undefined,
  );
  for (let attempt = 0; attempt < 20 && reads.length > 0; attempt++) {
    const target = rng.pick(reads);
    const key = target.op.key;
    const { value, version } = target.outcome as { value: string | null; version: number };
    const versions = simulation.values.get(key) as (string | null)[];
    let replacement: Outcome | null = null;
    const kind = rng.int(0, 2);
    if (kind === 0 && value !== null) {
      replacement = saw(value, version + (rng.chance(0.5) || version === 0 ? 1 : -1));
    } else if (kind === 1) {
      const others: string[] = [];
      for (const { op, outcome } of operations) {
        if (op.key !== key || op.type === 'read' || op.value === null || op.value === value) continue;
        if (outcome.status !== 'ok' || outcome.casFailed === true || outcome.version === undefined || outcome.version === version) continue;
        others.push(op.value);
      }
      if (others.length > 0) replacement = saw(rng.pick(others), version);
    } else if (kind === 2 && version >= 1) {
      const writer = writerOfVersion(key, version);
      if (writer !== undefined && (writer.completeAt as number) < target.invokeAt) {
        replacement = saw(versions[version - 1] as string | null, version - 1);
      }
    }
    if (replacement === null) continue;
    const mutated = replacement;
    const history = simulation.history.map((event) =>
      event.type === 'complete' && event.opId === target.id ? { ...event, outcome: mutated } : event,
    );
    return { history, key };
  }
  return null;
}

/**
 * Linearizability of a tiny single-key history by brute force: every order of the ok
 * operations and any subset of the unknown ones that respects real time.
 */
function bruteForceLinearizable(operations: readonly Operation[], start: RegisterState = INITIAL_REGISTER): boolean {
  const ops = operations.filter(
    (o) => o.outcome.status !== 'fail' && (o.op.type !== 'read' || o.outcome.status === 'ok'),
  );
  const ok = ops.map((o) => o.outcome.status === 'ok');
  const done = ops.map(() => false);
  const agrees = (reported: OkOutcome, actual: OkOutcome, op: KvOp): boolean => {
    if (reported.version !== undefined && reported.version !== actual.version) return false;
    if (op.type === 'read') return reported.value === actual.value;
    return (reported.casFailed === true) === (actual.casFailed === true);
  };
  const search = (state: RegisterState, left: number): boolean => {
    if (left === 0) return true;
    for (let i = 0; i < ops.length; i++) {
      const candidate = ops[i] as Operation;
      if (done[i]) continue;
      // Not before an ok operation that completed before it was invoked.
      const blocked = ops.some(
        (o, j) => !done[j] && j !== i && ok[j] && (o.completeAt as number) < candidate.invokeAt,
      );
      if (blocked) continue;
      const { state: next, outcome } = applyRegisterOp(state, candidate.op);
      if (ok[i] && !agrees(candidate.outcome as OkOutcome, outcome, candidate.op)) continue;
      done[i] = true;
      if (search(next, left - (ok[i] ? 1 : 0))) return true;
      done[i] = false;
    }
    return false;
  };
  return search(start, ok.filter(Boolean).length);
}

/** Perturbs some ok outcomes of `history` at random: versions, values, cas results. */
function perturb(rng: SeededRandom, history: readonly HistoryEvent[], probability: number): HistoryEvent[] {
  const operations = toOperations(history);
  const values = operations.map((o) => (o.op.type === 'read' ? null : o.op.value));
  const opOf = new Map(operations.map((o) => [o.id, o.op]));
  return history.map((event) => {
    if (event.type !== 'complete' || event.outcome.status !== 'ok' || !rng.chance(probability)) return event;
    const outcome: OkOutcome = { ...event.outcome };
    const op = opOf.get(event.opId) as KvOp;
    const change = rng.int(0, 3);
    if (change === 0 && outcome.version !== undefined) outcome.version = Math.max(0, outcome.version + rng.pick([-1, 1]));
    else if (change === 1 && op.type === 'read') outcome.value = rng.pick(values);
    else if (change === 2 && op.type === 'cas') outcome.casFailed = outcome.casFailed !== true;
    else return { ...event, outcome: { status: 'unknown' } };
    return { ...event, outcome };
  });
}

// ---------------------------------------------------------------------------------------------

describe('checkers', () => {
  describe('HistoryRecorder', () => {
    it('records invokes and completions with the injected clock', () => {
      let time = 5;
      const recorder = new HistoryRecorder({ now: () => time });
      const a = recorder.invoke('c1', write('k', 'x'));
      time = 7;
      const b = recorder.invoke('c2', read('k'));
      time = 9;
      recorder.complete(a, ok(1));
      assert.notEqual(a, b);
      assert.deepEqual(recorder.inFlight(), [b]);
      assert.deepEqual(recorder.history(), [
        { type: 'invoke', opId: a, clientId: 'c1', op: write('k', 'x'), at: 5 },
        { type: 'invoke', opId: b, clientId: 'c2', op: read('k'), at: 7 },
        { type: 'complete', opId: a, outcome: ok(1), at: 9 },
      ]);
      const operations = recorder.operations();
      assert.equal(operations[0]?.completeAt, 9);
      assert.deepEqual(operations[1]?.outcome, UNKNOWN);
      assert.equal(operations[1]?.completeAt, null);
    });

    it('uses performance.now by default', () => {
      const recorder = new HistoryRecorder();
      const before = performance.now();
      recorder.invoke('c', read('k'));
      const [event] = recorder.history();
      assert.ok(event !== undefined && event.at >= before && event.at <= performance.now());
    });

    it('rejects completions that do not fit', () => {
      const recorder = new HistoryRecorder({ now: () => 0 });
      const w = recorder.invoke('c', write('k', 'x'));
      assert.throws(() => recorder.complete(w, mismatch()), /casFailed/);
      assert.throws(() => recorder.complete(w, saw('x')), /only reads/);
      recorder.complete(w, ok());
      assert.throws(() => recorder.complete(w, ok()), /not|no operation/);
      assert.throws(() => recorder.complete(999, ok()), /no operation/);
      const r = recorder.invoke('c', read('k'));
      assert.throws(() => recorder.complete(r, ok(1)), /needs a value/);
      assert.throws(() => recorder.invoke('c', cas('k', -1, 'v')), /expectVersion/);
    });

    it('round-trips through JSON and goes on recording', () => {
      let time = 0;
      const recorder = new HistoryRecorder({ now: () => time++ });
      const a = recorder.invoke('c1', cas('k', 0, 'x'));
      recorder.complete(a, ok(1));
      const b = recorder.invoke('c2', del('k'));
      recorder.complete(b, UNKNOWN);
      const c = recorder.invoke('c3', read('k'));
      const saved = JSON.stringify(recorder);
      const loaded = HistoryRecorder.fromJSON(saved, { now: () => time++ });
      assert.deepEqual(loaded.history(), recorder.history());
      assert.deepEqual(loaded.inFlight(), [c]);
      loaded.complete(c, saw(null, 2));
      assert.ok(loaded.invoke('c1', read('k')) > c);
      assert.deepEqual(HistoryRecorder.fromJSON(JSON.parse(saved)).history(), recorder.history());
      assert.throws(() => HistoryRecorder.fromJSON('{"format":"other"}'), /not a shoal-kv-history/);
      const orphan = { format: 'shoal-kv-history', version: 1, events: [{ type: 'complete', opId: 1, outcome: ok(), at: 0 }] };
      assert.throws(() => HistoryRecorder.fromJSON(JSON.stringify(orphan)), /not in flight/);
    });
  });

  describe('checkLinearizable: linearizable histories', () => {
    it('accepts a sequential history of puts, deletes, cas and reads', () => {
      assertOk(
        checkLinearizable(
          build([
            ['c1', 0, 1, read('a'), saw(null, 0)],
            ['c1', 2, 3, write('a', 'x'), ok(1)],
            ['c2', 4, 5, read('a'), saw('x', 1)],
            ['c2', 6, 7, write('a', 'y'), ok(2)],
            ['c1', 8, 9, del('a'), ok(3)],
            ['c1', 10, 11, read('a'), saw(null, 3)],
            ['c2', 12, 13, cas('a', 0, 'z'), ok(4)],
            ['c2', 14, 15, cas('a', 4, 'w'), ok(5)],
            ['c1', 16, 17, read('a'), saw('w', 5)],
            ['c1', 18, 19, del('b'), ok(1)],
            ['c1', 20, 21, cas('b', 1, 'p'), ok(2)],
          ]),
        ),
      );
    });

    it('accepts reads that see concurrent writes in either order', () => {
      // x then y.
      assertOk(
        checkLinearizable(
          build([
            ['c1', 0, 10, write('a', 'x'), ok(1)],
            ['c2', 1, 9, write('a', 'y'), ok(2)],
            ['c3', 2, 8, read('a'), saw('x', 1)],
            ['c3', 11, 12, read('a'), saw('y', 2)],
          ]),
        ),
      );
      // y then x, without versions.
      assertOk(
        checkLinearizable(
          build([
            ['c1', 0, 10, write('a', 'x'), ok()],
            ['c2', 1, 9, write('a', 'y'), ok()],
            ['c3', 2, 3, read('a'), saw('y')],
            ['c4', 4, 5, read('a'), saw('x')],
            ['c3', 11, 12, read('a'), saw('x')],
          ]),
        ),
      );
      // A read concurrent with a write may see the old value, the next one the new.
      assertOk(
        checkLinearizable(
          build([
            ['c1', 0, 1, write('a', 'x'), ok(1)],
            ['c1', 2, 10, write('a', 'y'), ok(2)],
            ['c2', 3, 4, read('a'), saw('y', 2)],
            ['c3', 3, 9, read('a'), saw('y', 2)],
          ]),
        ),
      );
      // Equal timestamps: treated as overlapping.
      assertOk(
        checkLinearizable(
          build([
            ['c1', 0, 5, write('a', 'x'), ok(1)],
            ['c2', 5, 6, read('a'), saw(null, 0)],
          ]),
        ),
      );
    });

    it('accepts unknown writes that did, did not, or later took effect', () => {
      const base: Spec[] = [
        ['c1', 0, 1, write('a', 'x'), ok(1)],
        ['c2', 2, 5, write('a', 'y'), UNKNOWN],
      ];
      assertOk(checkLinearizable(build([...base, ['c3', 10, 11, read('a'), saw('y', 2)]])));
      assertOk(checkLinearizable(build([...base, ['c3', 10, 11, read('a'), saw('x', 1)]])));
      // Took effect long after the client gave up.
      assertOk(
        checkLinearizable(
          build([...base, ['c3', 10, 11, read('a'), saw('x', 1)], ['c3', 20, 21, read('a'), saw('y', 2)]]),
        ),
      );
      // Never completed at all; a later write's version shows it applied.
      assertOk(
        checkLinearizable(
          build([
            ['c1', 0, null, write('a', 'x')],
            ['c2', 3, 4, write('a', 'y'), ok(2)],
          ]),
        ),
      );
      // Failed writes never took effect; unknown reads say nothing.
      assertOk(
        checkLinearizable(
          build([
            ['c1', 0, 1, write('a', 'x'), FAIL],
            ['c2', 2, 3, read('a'), UNKNOWN],
            ['c2', 4, 5, read('a'), saw(null, 0)],
          ]),
        ),
      );
    });

    it('accepts cas successes and mismatches in any consistent interleaving', () => {
      assertOk(
        checkLinearizable(
          build([
            ['c1', 0, 1, write('a', 'x'), ok(1)],
            ['c1', 2, 6, cas('a', 1, 'b'), ok(2)],
            ['c2', 3, 7, cas('a', 1, 'c'), mismatch(2)],
            ['c3', 8, 9, read('a'), saw('b', 2)],
          ]),
        ),
      );
      // The mismatch may come first when the other cas changed the version first.
      assertOk(
        checkLinearizable(
          build([
            ['c1', 0, 1, write('a', 'x'), ok(1)],
            ['c2', 2, 3, cas('a', 1, 'c'), ok(2)],
            ['c1', 2, 9, cas('a', 1, 'b'), mismatch()],
            ['c3', 4, 5, cas('a', 0, 'd'), mismatch(2)],
            ['c3', 10, 11, read('a'), saw('c', 2)],
          ]),
        ),
      );
      // Two creators racing on an absent key: one wins.
      assertOk(
        checkLinearizable(
          build([
            ['c1', 0, 5, cas('a', 0, 'p'), mismatch()],
            ['c2', 1, 4, cas('a', 0, 'q'), ok(1)],
            ['c3', 6, 7, read('a'), saw('q', 1)],
          ]),
        ),
      );
      // An unknown cas that applied.
      assertOk(
        checkLinearizable(
          build([
            ['c1', 0, 3, cas('a', 0, 'p'), UNKNOWN],
            ['c2', 4, 5, cas('a', 1, 'q'), ok(2)],
          ]),
        ),
      );
    });

    it('starts keys from the given initial state', () => {
      const operations = toOperations(
        build([
          ['c1', 0, 1, read('a'), saw('x', 5)],
          ['c1', 2, 3, cas('a', 5, 'y'), ok(6)],
        ]),
      );
      assertOk(checkOperations(operations, { initial: new Map([['a', { value: 'x', version: 5 }]]) }));
      assertViolation(checkOperations(operations), 'a');
    });

    it('accepts many independent keys', () => {
      const specs: Spec[] = [];
      for (let k = 0; k < 50; k++) {
        const key = `key-${k}`;
        specs.push(['c1', k, k + 200, write(key, `v${k}`), ok(1)]);
        specs.push(['c2', k + 1, k + 100, read(key), saw(null, 0)]);
        specs.push(['c3', k + 300, k + 301, read(key), saw(`v${k}`, 1)]);
      }
      assertOk(checkLinearizable(build(specs)));
    });
  });

  describe('checkLinearizable: violations', () => {
    it('rejects a stale read after a completed write', () => {
      const specs: Spec[] = [
        ['c1', 0, 1, write('a', 'x'), ok(1)],
        ['c1', 2, 3, write('a', 'y'), ok(2)],
        ['c2', 4, 5, read('a'), saw('x', 1)],
      ];
      const result = checkLinearizable(build(specs));
      assertViolation(result, 'a');
      if (result.ok === false) {
        assert.ok(result.reason.includes('read(a)'), result.reason);
        assert.ok(result.minimalWitness?.some((o) => o.op.type === 'read'));
      }
      // Without versions, too.
      assertViolation(
        checkLinearizable(
          build([
            ['c1', 0, 1, write('a', 'x'), ok()],
            ['c1', 2, 3, write('a', 'y'), ok()],
            ['c2', 4, 5, read('a'), saw('x')],
          ]),
        ),
        'a',
      );
    });

    it('rejects a read of a value never written', () => {
      assertViolation(
        checkLinearizable(
          build([
            ['c1', 0, 1, write('a', 'x'), ok(1)],
            ['c2', 0, 2, write('a', 'z'), FAIL],
            ['c2', 3, 4, read('a'), saw('z')],
          ]),
        ),
        'a',
      );
    });

    it('rejects two cas with the same expected version both succeeding', () => {
      assertViolation(
        checkLinearizable(
          build([
            ['c1', 0, 1, write('a', 'x'), ok()],
            ['c1', 2, 6, cas('a', 1, 'b'), ok()],
            ['c2', 3, 7, cas('a', 1, 'c'), ok()],
          ]),
        ),
        'a',
      );
      assertViolation(
        checkLinearizable(
          build([
            ['c1', 0, 5, cas('a', 0, 'p'), ok()],
            ['c2', 1, 4, cas('a', 0, 'q'), ok()],
          ]),
        ),
        'a',
      );
      // A mismatch although the version matched.
      assertViolation(
        checkLinearizable(
          build([
            ['c1', 0, 1, write('a', 'x'), ok(1)],
            ['c2', 2, 3, cas('a', 1, 'b'), mismatch()],
          ]),
        ),
        'a',
      );
    });

    it('rejects versions going backwards', () => {
      assertViolation(
        checkLinearizable(
          build([
            ['c1', 0, 1, write('a', 'x'), ok(1)],
            ['c1', 2, 3, write('a', 'y'), ok(2)],
            ['c2', 4, 5, read('a'), saw('y', 2)],
            ['c2', 6, 7, read('a'), saw('y', 1)],
          ]),
        ),
        'a',
      );
      assertViolation(
        checkLinearizable(
          build([
            ['c1', 0, 1, write('a', 'x'), ok(2)],
            ['c2', 2, 3, write('a', 'y'), ok(1)],
          ]),
        ),
        'a',
      );
      // A delete does not reset the version.
      assertViolation(
        checkLinearizable(
          build([
            ['c1', 0, 1, write('a', 'x'), ok(1)],
            ['c1', 2, 3, del('a'), ok(2)],
            ['c2', 4, 5, read('a'), saw(null, 0)],
          ]),
        ),
        'a',
      );
    });

    it('rejects a lost acknowledged write', () => {
      assertViolation(
        checkLinearizable(
          build([
            ['c1', 0, 1, write('a', 'x'), ok(1)],
            ['c2', 2, 3, read('a'), saw(null, 0)],
          ]),
        ),
        'a',
      );
    });

    it('rejects an unknown write seen before it was invoked', () => {
      assertViolation(
        checkLinearizable(
          build([
            ['c2', 0, 1, read('a'), saw('y')],
            ['c1', 2, 3, write('a', 'y'), UNKNOWN],
          ]),
        ),
        'a',
      );
    });

    it('names the bad key among many good ones', () => {
      const specs: Spec[] = [];
      for (let k = 0; k < 30; k++) {
        const key = `key-${k}`;
        specs.push(['c1', 10 * k, 10 * k + 1, write(key, 'x'), ok(1)]);
        specs.push(['c2', 10 * k + 2, 10 * k + 3, read(key), saw(k === 17 ? null : 'x', k === 17 ? 0 : 1)]);
      }
      assertViolation(checkLinearizable(build(specs)), 'key-17');
    });

    it('shrinks the witness to the operations that matter', () => {
      const specs: Spec[] = [];
      let t = 0;
      for (let i = 1; i <= 40; i++) {
        specs.push(['c1', t++, t++, write('a', `v${i}`), ok(i)]);
        specs.push(['c2', t++, t++, read('a'), saw(`v${i}`, i)]);
      }
      specs.push(['c2', t++, t++, read('a'), saw('v3', 3)]); // stale
      for (let i = 41; i <= 60; i++) specs.push(['c1', t++, t++, write('a', `v${i}`), ok(i)]);
      const result = checkLinearizable(build(specs));
      assertViolation(result, 'a');
      if (result.ok !== false) return;
      // The stale read alone, from the state the read just before it saw.
      assert.deepEqual(
        result.minimalWitness?.map((o) => o.outcome),
        [saw('v3', 3)],
      );
      assert.deepEqual(result.witnessStart, { value: 'v40', version: 40 });
    });

    it('gives up with unknown when the budget runs out', () => {
      const { history } = simulateRegister(new SeededRandom(7), { ...MIXED_WORKLOAD, clients: 4, opsPerClient: 50, keys: 1 });
      assert.deepEqual(checkLinearizable(history, { maxSteps: 10 }), { ok: 'unknown', reason: 'timeout' });
      let time = 0;
      assert.deepEqual(checkLinearizable(history, { timeoutMs: 1, now: () => (time += 1000) }), { ok: 'unknown', reason: 'timeout' });
    });
  });

  describe('checkLinearizable: randomized', () => {
    const SEEDS = 300;
    const shape = (rng: SeededRandom): SimulationOptions => ({
      ...MIXED_WORKLOAD,
      clients: rng.int(2, 5),
      opsPerClient: rng.int(10, 60),
      keys: rng.int(1, 3),
    });

    it('accepts every history of a simulated linearizable store', function () {
      this.timeout(30_000);
      for (let seed = 1; seed <= SEEDS; seed++) {
        const rng = new SeededRandom(seed);
        const { history } = simulateRegister(rng, shape(rng));
        const result = checkLinearizable(history);
        assert.deepEqual(result, { ok: true }, `seed ${seed}: ${JSON.stringify(result)}`);
      }
    });

    it('detects a single mutated read', function () {
      this.timeout(60_000);
      let mutated = 0;
      let detected = 0;
      let undecided = 0;
      for (let seed = 1; seed <= SEEDS; seed++) {
        const rng = new SeededRandom(seed);
        const simulation = simulateRegister(rng, shape(rng));
        const mutation = mutateOneRead(rng, simulation);
        if (mutation === null) continue;
        mutated++;
        const result = checkLinearizable(mutation.history, { timeoutMs: 2_000 });
        if (result.ok === 'unknown') undecided++;
        if (result.ok === false) {
          assert.equal(result.key, mutation.key, `seed ${seed}: wrong key`);
          detected++;
        }
      }
      assert.ok(mutated >= SEEDS * 0.9, `only ${mutated} histories could be mutated`);
      assert.ok(detected >= mutated * 0.95, `detected ${detected} of ${mutated} mutations (${undecided} undecided)`);
    });

    it('agrees with a brute-force search on small histories', function () {
      this.timeout(60_000);
      const verdicts = { linearizable: 0, not: 0 };
      for (let seed = 1; seed <= 3000; seed++) {
        const rng = new SeededRandom(seed);
        const simulation = simulateRegister(rng, {
          ...MIXED_WORKLOAD,
          pUnknownLost: 0.1,
          pUnknownApplied: 0.1,
          pNoVersion: 0.3,
          clients: rng.int(2, 4),
          opsPerClient: rng.int(1, 3),
          keys: 1,
        });
        const history = perturb(rng, simulation.history, 0.2);
        const expected = bruteForceLinearizable(toOperations(history));
        const result = checkLinearizable(history);
        assert.equal(result.ok, expected, `seed ${seed}: ${JSON.stringify(result)}`);
        if (result.ok === false) {
          verdicts.not++;
          assert.equal(bruteForceLinearizable(result.minimalWitness ?? [], result.witnessStart), false, `seed ${seed}: witness`);
        } else {
          verdicts.linearizable++;
        }
      }
      // Both verdicts are well represented.
      assert.ok(verdicts.linearizable > 500 && verdicts.not > 500, JSON.stringify(verdicts));
    });

    it('finds a violation deep in a long single-key history quickly', function () {
      this.timeout(30_000);
      const rng = new SeededRandom(99);
      const simulation = simulateRegister(rng, { ...MIXED_WORKLOAD, clients: 5, opsPerClient: 1000, keys: 1 });
      const mutation = mutateOneRead(rng, simulation);
      assert.ok(mutation !== null);
      const started = performance.now();
      const result = checkLinearizable(mutation.history);
      const elapsed = performance.now() - started;
      assertViolation(result, 'k0');
      assert.ok(result.ok === false && (result.minimalWitness?.length ?? 0) < 500, 'a small witness');
      assert.ok(elapsed < 5000, `took ${elapsed.toFixed(0)} ms`);
    });

    it('checks 5 clients × 2000 operations over 10 keys in under 2 s', function () {
      this.timeout(20_000);
      const rng = new SeededRandom(2024);
      const simulation = simulateRegister(rng, { ...MIXED_WORKLOAD, clients: 5, opsPerClient: 2000, keys: 10 });
      const started = performance.now();
      const result = checkLinearizable(simulation.history);
      const elapsed = performance.now() - started;
      assert.deepEqual(result, { ok: true });
      assert.ok(elapsed < 2000, `took ${elapsed.toFixed(0)} ms`);

      const mutation = mutateOneRead(rng, simulation);
      assert.ok(mutation !== null);
      const failing = checkLinearizable(mutation.history);
      assert.equal(failing.ok, false);
    });
  });

  describe('findLostAcknowledgedWrites', () => {
    const finals = (entries: [string, string | null, number][]): Map<string, FinalRead> =>
      new Map(entries.map(([key, value, version]) => [key, { value, version }]));

    it('accepts a final state that accounts for every acknowledged write', () => {
      const history = build([
        ['c1', 0, 1, write('a', 'x'), ok(1)],
        ['c1', 2, 3, write('a', 'y'), ok(2)],
        ['c2', 4, 5, write('a', 'z'), UNKNOWN],
        ['c2', 6, 7, write('a', 'q'), FAIL],
        ['c1', 0, 1, write('b', 'p'), ok(1)],
        ['c2', 2, 3, del('b'), ok(2)],
        ['c1', 0, 5, cas('c', 0, 'm'), ok(1)],
        ['c2', 1, 4, cas('c', 0, 'n'), mismatch()],
      ]);
      assert.deepEqual(findLostAcknowledgedWrites(history, finals([['a', 'y', 2], ['b', null, 2], ['c', 'm', 1], ['d', null, 0]])), []);
      // The unknown write may have applied.
      assert.deepEqual(findLostAcknowledgedWrites(history, finals([['a', 'z', 3], ['b', null, 2], ['c', 'm', 1]])), []);
    });

    it('reports a final version lower than the number of acknowledged writes', () => {
      const history = build([
        ['c1', 0, 1, write('a', 'x'), ok()],
        ['c2', 0, 1, write('a', 'y'), ok()],
        ['c1', 2, 3, cas('a', 2, 'z'), ok()],
      ]);
      const reports = findLostAcknowledgedWrites(history, finals([['a', 'z', 2]]));
      assert.deepEqual(reports.map((r) => [r.key, r.kind]), [['a', 'version-too-low']]);
    });

    it('reports a final value never written', () => {
      const history = build([
        ['c1', 0, 1, write('a', 'x'), ok()],
        ['c1', 2, 3, write('a', 'ghost'), FAIL],
      ]);
      const reports = findLostAcknowledgedWrites(history, finals([['a', 'ghost', 1]]));
      assert.deepEqual(reports.map((r) => [r.key, r.kind]), [['a', 'value-never-written']]);
    });

    it('reports a final value overwritten by a later acknowledged write', () => {
      const history = build([
        ['c1', 0, 1, write('a', 'x'), ok()],
        ['c1', 2, 3, write('a', 'y'), ok()],
        ['c1', 4, 5, write('a', 'z'), UNKNOWN],
      ]);
      const reports = findLostAcknowledgedWrites(history, finals([['a', 'x', 3]]));
      assert.deepEqual(reports.map((r) => [r.key, r.kind]), [['a', 'value-overwritten']]);
      // With versions, the version names the write.
      const versioned = build([
        ['c1', 0, 1, write('a', 'x'), ok(1)],
        ['c1', 2, 3, write('a', 'y'), ok(2)],
      ]);
      const kinds = findLostAcknowledgedWrites(versioned, finals([['a', 'x', 2]])).map((r) => r.kind);
      assert.deepEqual(kinds, ['version-value-mismatch', 'value-overwritten']);
    });

    it('reports impossible versions and keys without a final read', () => {
      const history = build([
        ['c1', 0, 1, write('a', 'x'), ok()],
        ['c1', 0, 1, write('b', 'x'), ok()],
      ]);
      const reports = findLostAcknowledgedWrites(history, finals([['a', 'x', 5], ['c', 'w', 0]]));
      assert.deepEqual(
        reports.map((r) => [r.key, r.kind]),
        [
          ['a', 'version-too-high'],
          ['b', 'missing-final-read'],
          ['c', 'version-value-mismatch'],
          ['c', 'value-never-written'],
        ],
      );
    });

    it('accepts the final state of every simulated run', () => {
      for (let seed = 1; seed <= 100; seed++) {
        const rng = new SeededRandom(seed);
        const simulation = simulateRegister(rng, { ...MIXED_WORKLOAD, leavePending: false, clients: 4, opsPerClient: 40, keys: 3 });
        const final = new Map<string, FinalRead>();
        for (const [key, values] of simulation.values) final.set(key, { value: values.at(-1) ?? null, version: values.length - 1 });
        assert.deepEqual(findLostAcknowledgedWrites(simulation.history, final), [], `seed ${seed}`);
      }
    });
  });
});
