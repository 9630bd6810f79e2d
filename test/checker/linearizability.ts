/**
 * A linearizability checker for histories of the key-value store (DESIGN.md §6).
 *
 * The model is a versioned register per key (register-model.ts). Keys are independent, so a
 * history is linearizable iff its restriction to each key is (P-compositionality, the
 * partitioning Porcupine uses); each key is checked on its own with the Wing–Gong search as
 * refined by Lowe: walk a linked list of call and return entries in time order, linearize a
 * call when the model accepts it, backtrack when a return is reached whose operation is not
 * linearized yet, and memoize every (set of linearized operations, model state) pair already
 * explored so that no configuration is searched twice.
 *
 * Operations:
 * - `fail` operations are dropped, and so are reads that are not `ok` (they observed nothing).
 * - `ok` operations must be linearized between their invoke and their completion.
 * - `unknown` writes and cas (and operations never completed) may be linearized anywhere
 *   after their invoke, or not at all: they have no return entry, and the search succeeds
 *   as soon as every `ok` operation is linearized.
 * - When invoke and completion timestamps are equal, the invoke is taken to come first
 *   (the operations overlap), which can only make the checker more lenient.
 *
 * Exact reductions and a prune keep the search small:
 * - Values that no read ever returns are merged into one "unobserved" value: no operation
 *   can tell them apart (a cas looks only at presence and version). When no operation of a
 *   key reports a version and there is no cas, versions are not tracked at all.
 * - Unknown writes and cas with the same effect (same kind, same merged value, same expected
 *   version) are interchangeable, so they are only linearized in invoke order; and an unknown
 *   operation that would change nothing is never linearized (leaving it out is equivalent).
 * - Versions never decrease, so a step is refused when it would take the version past what an
 *   ok operation not linearized yet must see (its "pin": a read's version, the version before
 *   a write that reported its new one, the expected version of a successful cas). Without
 *   this, runs of unknown writes would be tried at every point of the history.
 *
 * - Two configurations are the same when they have linearized the same ok operations, reached
 *   the same state and used the same multiset of unknown-operation effects, counting values
 *   no read left can return as one, and dropping cas that can no longer apply (see
 *   KeySearch.run): which of several similar unknown operations took effect does not matter.
 *
 * Keys longer than two windows are first searched in overlapping windows that start from an
 * operation whose result fixes the state (see findLocalFailure): a violation is usually local
 * and found there in milliseconds, while the whole key must be searched exhaustively up to
 * the violation. Only then is the whole key searched.
 *
 * A failure comes with a small witness (see shrinkWitness): a sub-history that fails on its
 * own and whose failure implies the history's, possibly starting from a known state.
 *
 * Everything is bounded by a step budget and a deadline; exhausting either gives
 * `{ ok: 'unknown', reason: 'timeout' }` rather than a hang. Histories should carry versions:
 * without them (and with cas), a key with thousands of operations and many unknown writes can
 * exhaust the budget, because which unknown writes took effect is then hard to pin down.
 */
import { SeededRandom } from '../../protocols/random.js';
import { describeOperation, toOperations, type History, type Operation } from './history.js';
import { INITIAL_REGISTER, type RegisterState } from './register-model.js';

export interface CheckOptions {
  /** Wall-clock budget for the whole check, witness included. Default 10 000 ms. */
  timeoutMs?: number;
  /** Step budget for the whole check (one step = one candidate tried). Default 20 000 000. */
  maxSteps?: number;
  /**
   * Whether to shrink a failing key's operations to a small witness. Default true. The
   * shrinking gets at most twice the time the failing search took (at least 250 ms) and
   * never goes past the timeout.
   */
  witness?: boolean;
  /** State of keys before the history (default: absent at version 0). */
  initial?: ReadonlyMap<string, RegisterState>;
  /** The clock the deadline is measured on. Default `performance.now()`. */
  now?: () => number;
}

export type CheckResult =
  | { ok: true }
  | {
      ok: false;
      /** The first key found not linearizable. */
      key: string;
      /** What the search got stuck on. */
      reason: string;
      /**
       * Operations of `key` that are, starting from `witnessStart`, not linearizable, and
       * whose failure implies the failure of the whole history (see `shrinkWitness`).
       * Operations whose outcome is unknown here but not in the history were cut in flight.
       * Sorted by invoke time. Absent when `witness: false`.
       */
      minimalWitness?: Operation[];
      /**
       * The state the witness starts from, established by an operation just before it;
       * absent when it starts from the key's initial state.
       */
      witnessStart?: RegisterState;
    }
  | { ok: 'unknown'; reason: 'timeout' };

const DEFAULT_TIMEOUT_MS = 10_000;
const DEFAULT_MAX_STEPS = 20_000_000;
/** How many sub-histories the witness shrinking may check at most. */
const MAX_WITNESS_CHECKS = 120;
/** The least time the witness shrinking gets (within the timeout). */
const MIN_WITNESS_MS = 250;
/** Length of the windows searched first in long keys, in anchors (see findLocalFailure). */
const WINDOW_ANCHORS = 200;
/** Step budget of one window. */
const WINDOW_STEPS = 200_000;

/** Checks a recorded history. See the module comment for the rules. */
export function checkLinearizable(history: History, options: CheckOptions = {}): CheckResult {
  return checkOperations(toOperations(history), options);
}

/** Same as {@link checkLinearizable}, on operations already paired by `toOperations`. */
export function checkOperations(operations: readonly Operation[], options: CheckOptions = {}): CheckResult {
  const now = options.now ?? (() => performance.now());
  const budget = new Budget(options.maxSteps ?? DEFAULT_MAX_STEPS, now() + (options.timeoutMs ?? DEFAULT_TIMEOUT_MS), now);
  // Cheapest keys first: a violation in a small key is found even if a large one times out.
  const keys = [...partitionByKey(operations)].sort((a, b) => a[1].length - b[1].length);
  for (const [key, ops] of keys) {
    if (budget.exhausted) return { ok: 'unknown', reason: 'timeout' };
    const initial = options.initial?.get(key);
    const started = now();
    const stepsBefore = budget.stepsUsed;
    let failure = ops.length > 2 * WINDOW_ANCHORS ? findLocalFailure(ops, initial, budget) : undefined;
    if (failure === undefined) {
      const outcome = new KeySearch(ops, initial).run(budget);
      if (outcome.kind === 'timeout') return { ok: 'unknown', reason: 'timeout' };
      if (outcome.kind === 'fail') failure = { ops, start: initial, outcome };
    }
    if (failure === undefined) continue;

    const { outcome } = failure;
    let reason =
      `key ${JSON.stringify(key)} is not linearizable: no linearization can take in ` +
      describeOperation(failure.ops[outcome.blocking] as Operation);
    if (outcome.capped >= 0) {
      reason += `, while ${describeOperation(failure.ops[outcome.capped] as Operation)} allows no further write before it`;
    }
    reason += ` (at most ${outcome.depth} of ${failure.ops.length} operations linearized`;
    reason += failure.start === initial ? ')' : `, starting from ${JSON.stringify(failure.start)})`;
    if (options.witness === false) return { ok: false, key, reason };
    const allowance = budget.child(
      Math.max(2_000_000, 4 * (budget.stepsUsed - stepsBefore)),
      now() + Math.max(MIN_WITNESS_MS, 2 * (now() - started)),
    );
    const witness = shrinkWitness(failure.ops, failure.start, [outcome.blocking, outcome.capped], allowance);
    budget.absorb(allowance);
    return witness.start === initial
      ? { ok: false, key, reason, minimalWitness: witness.ops }
      : { ok: false, key, reason, minimalWitness: witness.ops, witnessStart: witness.start as RegisterState };
  }
  return { ok: true };
}

/** A failing sub-history of one key and how its search failed. */
interface Failure extends Witness {
  outcome: Extract<SearchOutcome, { kind: 'fail' }>;
}

/**
 * Looks for a violation within windows of a long key history before searching it whole:
 * most violations are local, and a window fails much faster than the whole history (which
 * must be searched exhaustively up to the violation). A window runs from an anchor (see
 * `shrinkWitness`) to the completion of the anchor `WINDOW_ANCHORS` later (the last one to
 * the end), windows overlapping by half; a failing window proves the history fails. Windows
 * that run out of their small budget are skipped. Returns undefined when no window fails.
 */
function findLocalFailure(ops: readonly Operation[], initial: RegisterState | undefined, budget: Budget): Failure | undefined {
  const entries = orderEntries(ops);
  const returnPosition = new Map<number, number>();
  entries.forEach((entry, position) => {
    if (!entry.call) returnPosition.set(entry.index, position);
  });
  const indexOf = new Map(ops.map((o, index) => [o, index]));
  const anchors = anchorsOf(ops);
  for (let first = -1; first < anchors.length - 1; first += WINDOW_ANCHORS / 2) {
    if (budget.exhausted) return undefined;
    // The last window runs to the end of the history.
    const end = first + WINDOW_ANCHORS < anchors.length - 1 ? (anchors[first + WINDOW_ANCHORS] as Operation) : undefined;
    const prefix = end === undefined ? ops : cutAt(ops, entries, returnPosition.get(indexOf.get(end) as number) as number);
    const window = first < 0 ? { ops: prefix.slice(), start: initial } : suffixAfter(prefix, anchors[first] as Operation);
    const child = budget.child(WINDOW_STEPS);
    const outcome = new KeySearch(window.ops, window.start).run(child);
    budget.absorb(child);
    if (outcome.kind === 'fail') return { ...window, outcome };
    if (end === undefined) break;
  }
  return undefined;
}

/** Groups the operations that constrain the model by key, dropping the others. */
function partitionByKey(operations: readonly Operation[]): Map<string, Operation[]> {
  const byKey = new Map<string, Operation[]>();
  for (const operation of operations) {
    if (!constrains(operation)) continue;
    const list = byKey.get(operation.op.key);
    if (list === undefined) byKey.set(operation.op.key, [operation]);
    else list.push(operation);
  }
  return byKey;
}

/** False for operations the checker ignores: failed ones, and reads without a result. */
function constrains(operation: Operation): boolean {
  if (operation.outcome.status === 'fail') return false;
  return operation.op.type !== 'read' || operation.outcome.status === 'ok';
}

function isDefinite(operation: Operation): boolean {
  return operation.outcome.status === 'ok';
}

/** A step and time allowance. */
class Budget {
  stepsUsed = 0;
  private readonly maxSteps: number;
  private readonly deadline: number;
  private readonly now: () => number;
  private expired = false;

  constructor(maxSteps: number, deadline: number, now: () => number) {
    this.maxSteps = maxSteps;
    this.deadline = deadline;
    this.now = now;
  }

  /** Counts one step; false once the steps or the time are used up. */
  tick(): boolean {
    this.stepsUsed++;
    if (this.expired) return false;
    if (this.stepsUsed > this.maxSteps) this.expired = true;
    else if ((this.stepsUsed & 0xfff) === 0 && this.now() > this.deadline) this.expired = true;
    return !this.expired;
  }

  get exhausted(): boolean {
    if (!this.expired && (this.stepsUsed > this.maxSteps || this.now() > this.deadline)) this.expired = true;
    return this.expired;
  }

  /** A part of this allowance: at most `steps` more steps, until `deadline` at the latest. */
  child(steps: number, deadline = this.deadline): Budget {
    const child = new Budget(Math.min(this.maxSteps, this.stepsUsed + steps), Math.min(deadline, this.deadline), this.now);
    child.stepsUsed = this.stepsUsed;
    return child;
  }

  /** Counts the steps a child used. */
  absorb(child: Budget): void {
    this.stepsUsed = Math.max(this.stepsUsed, child.stepsUsed);
  }
}

type SearchOutcome =
  | { kind: 'ok' }
  | { kind: 'timeout' }
  /**
   * `depth`: the most operations linearized at once; `blocking`: the operation whose
   * completion could not be reached then; `capped`: an ok operation left whose version bound
   * then forbade any write, or -1.
   */
  | { kind: 'fail'; blocking: number; depth: number; capped: number };

/** One entry of the time-ordered list: the call or the return of operation `index`. */
interface TimedEntry {
  index: number;
  call: boolean;
  time: number;
}

/**
 * Calls and returns of `ops` in time order. Unknown operations have no return. At equal
 * times calls come before returns (the operations overlap); then invoke order.
 */
function orderEntries(ops: readonly Operation[]): TimedEntry[] {
  const entries: TimedEntry[] = [];
  ops.forEach((operation, index) => {
    entries.push({ index, call: true, time: operation.invokeAt });
    if (isDefinite(operation)) entries.push({ index, call: false, time: operation.completeAt as number });
  });
  entries.sort((a, b) => a.time - b.time || (a.call === b.call ? 0 : a.call ? -1 : 1) || a.index - b.index);
  return entries;
}

const READ = 0;
const WRITE = 1;
const CAS = 2;
/** The merged id of every value no read returns. Null (absent) is -1; observed values are 1, 2, … */
const UNOBSERVED = 0;
const ABSENT = -1;

/** Random 32-bit words for Zobrist hashing of the linearized set; fixed seed, so runs are reproducible. */
const zobristSource = new SeededRandom(0x5eed_11e5);
const zobristWords: number[] = [];
function zobrist(count: number): Uint32Array {
  while (zobristWords.length < count) zobristWords.push(zobristSource.nextUint32());
  return Uint32Array.from(zobristWords.slice(0, count));
}

/** Pin of an operation that constrains no version. */
const NO_PIN = 0x7fffffff;

/** The minimum of a fixed-size array under point updates (a segment tree). */
class MinTree {
  private readonly size: number;
  private readonly tree: Int32Array;

  constructor(values: Int32Array) {
    let size = 1;
    while (size < values.length) size *= 2;
    this.size = size;
    this.tree = new Int32Array(2 * size).fill(NO_PIN);
    this.tree.set(values, size);
    for (let p = size - 1; p >= 1; p--) this.tree[p] = Math.min(this.tree[2 * p] as number, this.tree[2 * p + 1] as number);
  }

  get min(): number {
    return this.tree[1] as number;
  }

  /** An index holding the minimum. */
  argmin(): number {
    let p = 1;
    while (p < this.size) p = this.tree[2 * p] === this.tree[p] ? 2 * p : 2 * p + 1;
    return p - this.size;
  }

  set(index: number, value: number): void {
    let p = this.size + index;
    this.tree[p] = value;
    for (p >>= 1; p >= 1; p >>= 1) this.tree[p] = Math.min(this.tree[2 * p] as number, this.tree[2 * p + 1] as number);
  }
}

/**
 * A configuration already explored: the ok operations linearized, the state after them, and
 * the unknown operations used, as a hash and a sorted list of effect keys (see KeySearch.run).
 */
interface Explored {
  bits: Uint32Array;
  value: number;
  version: number;
  unknownHash: number;
  unknownKeys: Float64Array;
}

/** The configurations explored by one search, hashed. */
class ExploredSet {
  private readonly buckets = new Map<number, Explored[]>();

  /**
   * Records a configuration; false if an equal one was recorded before. `unknownKeys` is
   * only called when needed.
   */
  add(bits: Uint32Array, bitsHash: number, value: number, version: number, unknownHash: number, unknownKeys: () => Float64Array): boolean {
    const key = (bitsHash ^ unknownHash ^ Math.imul(value + 2, 0x9e3779b1) ^ Math.imul(version + 1, 0x85ebca6b)) >>> 0;
    let bucket = this.buckets.get(key);
    let keys: Float64Array | undefined;
    if (bucket === undefined) {
      bucket = [];
      this.buckets.set(key, bucket);
    } else {
      for (const seen of bucket) {
        if (seen.value !== value || seen.version !== version || seen.unknownHash !== unknownHash) continue;
        if (!sameWords(seen.bits, bits)) continue;
        keys ??= unknownKeys();
        if (sameWords(seen.unknownKeys, keys)) return false;
      }
    }
    bucket.push({ bits: bits.slice(), value, version, unknownHash, unknownKeys: keys ?? unknownKeys() });
    return true;
  }
}

function sameWords(a: Uint32Array | Float64Array, b: Uint32Array | Float64Array): boolean {
  if (a.length !== b.length) return false;
  for (let w = 0; w < a.length; w++) if (a[w] !== b[w]) return false;
  return true;
}

/**
 * The unknown operations of one effect class (same kind, same value id, same expected
 * version): interchangeable, so used in invoke order, `used` at a time.
 */
interface UnknownClass {
  /** Operation indices, in invoke order. */
  members: number[];
  /** How many members are linearized (always the first ones). */
  used: number;
}

/**
 * Lowe's just-in-time linearization search over the operations of one key. Operation data
 * is compiled into typed arrays; the model state is (value id, version).
 *
 * The linked list holds the calls and returns of ok operations only. At each point of the
 * search the candidates are, in order: the ok operations whose call precedes the first
 * return still in the list, then the next unused member of each class of unknown operations
 * invoked by then (only classes that can change the state: puts and deletes, and cas whose
 * expected version matches the state).
 */
class KeySearch {
  private readonly n: number;
  private readonly kind: Uint8Array;
  private readonly definite: Uint8Array;
  private readonly casFailed: Uint8Array;
  /** Write and cas: the value id written. Read: the value id read. */
  private readonly value: Int32Array;
  /** Cas: the expected version. */
  private readonly expect: Int32Array;
  /** The version reported by the outcome, -1 when none. */
  private readonly outVersion: Int32Array;
  private readonly invokeAt: Float64Array;
  /** For ok operations: the highest version the state may have just before them, or NO_PIN. */
  private readonly pin: Int32Array;
  /** 1, or 0 when nothing in the key depends on versions. */
  private readonly versionStep: number;
  private readonly definiteCount: number;
  /** How many ok reads return each observed value id. */
  private readonly readsPerValue: Int32Array;
  /** How many operations can tell an absent key from a present one (see {@link watchesNull}). */
  private readonly nullWatchers: number;
  /** Bound on value ids + 2, for effect keys. */
  private readonly valueSpace: number;
  /** For unknown operations: their class. */
  private readonly classOf: Int32Array;
  private readonly classes: UnknownClass[] = [];
  /** Classes of unknown puts and deletes, by the invoke time of their first member. */
  private readonly writeClasses: number[] = [];
  /** Classes of unknown cas, by expected version. */
  private readonly casClasses = new Map<number, number[]>();
  /**
   * The doubly linked entry list: node 0 is the head, 1..n the calls, n+1..2n the returns
   * (of ok operations only), 2n+1 the tail.
   */
  private readonly next: Int32Array;
  private readonly prev: Int32Array;
  /** Time of each return node. */
  private readonly returnAt: Float64Array;
  private readonly zob: Uint32Array;
  /** Output of {@link stepModel}. */
  private nextValue = 0;
  private nextVersion = 0;

  /** The state before the first operation. */
  private readonly initialValue: number;
  private readonly initialVersion: number;

  constructor(ops: readonly Operation[], initial: RegisterState = INITIAL_REGISTER) {
    const n = ops.length;
    this.n = n;
    this.kind = new Uint8Array(n);
    this.definite = new Uint8Array(n);
    this.casFailed = new Uint8Array(n);
    this.value = new Int32Array(n);
    this.expect = new Int32Array(n);
    this.outVersion = new Int32Array(n).fill(-1);
    this.invokeAt = new Float64Array(n);
    this.pin = new Int32Array(n).fill(NO_PIN);
    this.classOf = new Int32Array(n).fill(-1);
    this.zob = zobrist(n);

    // Value ids: observed values (those some read returns) get their own id, the rest share UNOBSERVED.
    const observed = new Map<string, number>();
    for (const operation of ops) {
      if (operation.op.type === 'read' && operation.outcome.status === 'ok') {
        const read = operation.outcome.value;
        if (typeof read === 'string' && !observed.has(read)) observed.set(read, observed.size + 1);
      }
    }
    const idOf = (v: string | null | undefined): number => (v === null || v === undefined ? ABSENT : observed.get(v) ?? UNOBSERVED);
    this.readsPerValue = new Int32Array(observed.size + 1);
    this.initialValue = idOf(initial.value);
    this.initialVersion = initial.version;
    this.valueSpace = observed.size + 3;

    let definiteCount = 0;
    let versionMatters = false;
    ops.forEach((operation, i) => {
      const { op, outcome } = operation;
      this.invokeAt[i] = operation.invokeAt;
      if (outcome.status === 'ok') {
        this.definite[i] = 1;
        definiteCount++;
        if (outcome.version !== undefined) {
          this.outVersion[i] = outcome.version;
          versionMatters = true;
        }
        if (outcome.casFailed === true) this.casFailed[i] = 1;
      }
      switch (op.type) {
        case 'read':
          this.kind[i] = READ;
          this.value[i] = idOf(outcome.status === 'ok' ? outcome.value : null);
          if ((this.value[i] as number) > 0) this.readsPerValue[this.value[i] as number]++;
          break;
        case 'write':
          this.kind[i] = WRITE;
          this.value[i] = idOf(op.value);
          break;
        case 'cas':
          this.kind[i] = CAS;
          this.value[i] = idOf(op.value);
          this.expect[i] = op.expectVersion;
          versionMatters = true;
          break;
      }
    });
    this.definiteCount = definiteCount;
    let nullWatchers = 0;
    for (let i = 0; i < n; i++) if (this.watchesNull(i)) nullWatchers++;
    this.nullWatchers = nullWatchers;
    this.versionStep = versionMatters ? 1 : 0;
    this.computePins();
    this.groupUnknowns();

    const tail = 2 * n + 1;
    this.next = new Int32Array(2 * n + 2);
    this.prev = new Int32Array(2 * n + 2);
    this.returnAt = new Float64Array(2 * n + 2);
    let last = 0;
    for (const entry of orderEntries(ops)) {
      if (!this.definite[entry.index]) continue;
      const node = entry.call ? entry.index + 1 : n + 1 + entry.index;
      if (!entry.call) this.returnAt[node] = entry.time;
      this.next[last] = node;
      this.prev[node] = last;
      last = node;
    }
    this.next[last] = tail;
    this.prev[tail] = last;
  }

  /** Whether operation `i` can tell an absent key from a present one: a read of null, a cas expecting absence. */
  private watchesNull(i: number): boolean {
    return (this.kind[i] === READ && this.value[i] === ABSENT) || (this.kind[i] === CAS && this.expect[i] === 0);
  }

  /** Versions the state may not exceed before each ok operation (see the module comment). */
  private computePins(): void {
    for (let i = 0; i < this.n; i++) {
      if (!this.definite[i]) continue;
      const reported = this.outVersion[i] as number;
      if (this.kind[i] === READ || this.casFailed[i]) {
        if (reported >= 0) this.pin[i] = reported;
      } else if (reported >= 1) {
        this.pin[i] = reported - 1;
      } else if (this.kind[i] === CAS && (this.expect[i] as number) > 0) {
        this.pin[i] = this.expect[i] as number;
      }
    }
  }

  /** Sorts the unknown operations into classes of interchangeable ones. */
  private groupUnknowns(): void {
    const unknown: number[] = [];
    for (let i = 0; i < this.n; i++) if (!this.definite[i]) unknown.push(i);
    unknown.sort((a, b) => (this.invokeAt[a] as number) - (this.invokeAt[b] as number) || a - b);
    const byEffect = new Map<string, number>();
    for (const i of unknown) {
      const effect = `${this.kind[i]}:${this.value[i]}:${this.kind[i] === CAS ? this.expect[i] : ''}`;
      let c = byEffect.get(effect);
      if (c === undefined) {
        c = this.classes.length;
        byEffect.set(effect, c);
        this.classes.push({ members: [], used: 0 });
        if (this.kind[i] === WRITE) {
          this.writeClasses.push(c);
        } else {
          const expect = this.expect[i] as number;
          const list = this.casClasses.get(expect);
          if (list === undefined) this.casClasses.set(expect, [c]);
          else list.push(c);
        }
      }
      this.classOf[i] = c;
      (this.classes[c] as UnknownClass).members.push(i);
    }
  }

  /**
   * The unknown classes worth trying in state (value, version) when the first return still
   * in the list is at time `until`: their next member is invoked by then and would change the
   * state.
   */
  private unknownCandidates(value: number, version: number, until: number): number[] {
    const candidates: number[] = [];
    const consider = (c: number): void => {
      const { members, used } = this.classes[c] as UnknownClass;
      if (used < members.length && (this.invokeAt[members[used] as number] as number) <= until) candidates.push(c);
    };
    for (const c of this.writeClasses) {
      const first = (this.classes[c] as UnknownClass).members[0] as number;
      if ((this.invokeAt[first] as number) > until) break; // sorted by first invoke
      consider(c);
    }
    if (value === ABSENT) for (const c of this.casClasses.get(0) ?? []) consider(c);
    if (version > 0) for (const c of this.casClasses.get(version) ?? []) consider(c);
    return candidates;
  }

  /**
   * The model: applies operation `i` to (value, version). Returns false if its outcome is
   * impossible from that state, or if it is an unknown operation that would change nothing.
   * Otherwise leaves the new state in nextValue / nextVersion.
   */
  private stepModel(i: number, value: number, version: number): boolean {
    const definite = this.definite[i] === 1;
    const reported = this.outVersion[i] as number;
    switch (this.kind[i]) {
      case READ:
        if (value !== this.value[i] || (reported >= 0 && reported !== version)) return false;
        this.nextValue = value;
        this.nextVersion = version;
        return true;
      case WRITE:
        if (definite && reported >= 0 && reported !== version + 1) return false;
        this.nextValue = this.value[i] as number;
        this.nextVersion = version + this.versionStep;
        break;
      default: {
        const expect = this.expect[i] as number;
        const matches = expect === 0 ? value === ABSENT : version === expect;
        if (definite && this.casFailed[i] === 1) {
          if (matches || (reported >= 0 && reported !== version)) return false;
          this.nextValue = value;
          this.nextVersion = version;
          return true;
        }
        if (!matches) return false; // a definite success cannot; an unknown one would be a no-op
        if (definite && reported >= 0 && reported !== version + 1) return false;
        this.nextValue = this.value[i] as number;
        this.nextVersion = version + this.versionStep;
        break;
      }
    }
    return definite || this.nextValue !== value || this.nextVersion !== version;
  }

  /** Removes the call and return entries of ok operation `i` from the list. */
  private lift(i: number): void {
    this.unlink(i + 1);
    this.unlink(this.n + 1 + i);
  }

  /** Undoes {@link lift}, in reverse order. */
  private unlift(i: number): void {
    this.relink(this.n + 1 + i);
    this.relink(i + 1);
  }

  private unlink(node: number): void {
    const before = this.prev[node] as number;
    const after = this.next[node] as number;
    this.next[before] = after;
    this.prev[after] = before;
  }

  private relink(node: number): void {
    this.next[this.prev[node] as number] = node;
    this.prev[this.next[node] as number] = node;
  }

  /**
   * Runs the search, drawing steps from `budget`.
   *
   * A configuration is identified by the ok operations linearized, the state, and the
   * multiset of effects (see `effectKey`) of the unknown operations linearized, where values
   * that nothing left can tell apart count as one. Two configurations equal in this sense have
   * the same futures: the same ok operations left, and unknown operations left that differ
   * only by dead or indistinguishable ones. This merges the many ways of choosing which of
   * several similar unknown operations took effect.
   */
  run(budget: Budget): SearchOutcome {
    const n = this.n;
    const tail = 2 * n + 1;
    const explored = new ExploredSet();
    // The ok operations linearized, and their Zobrist hash.
    const bits = new Uint32Array(Math.max(1, Math.ceil(n / 32)));
    let bitsHash = 0;
    // The unknown operations linearized.
    const usedUnknown = new Int32Array(n);
    let usedCount = 0;
    // Reads not linearized yet, per observed value; and the operations left that can tell
    // an absent key from an unobserved value: reads of null and cas expecting absence.
    const readsLeft = this.readsPerValue.slice();
    let nullWatchers = this.nullWatchers;
    /** The value id as far as the operations left can tell. */
    const shown = (v: number): number =>
      v > 0 ? (readsLeft[v] === 0 ? UNOBSERVED : v) : v === ABSENT && nullWatchers === 0 ? UNOBSERVED : v;
    /**
     * The effect of unknown operation `u` on the rest of a search at `atVersion`, as a number
     * (-1 when it can have none): kind, expected version (cas) and value as shown. A cas
     * expecting an older version is dead.
     */
    const effectKey = (u: number, atVersion: number): number => {
      const written = shown(this.value[u] as number) + 2;
      if (this.kind[u] === WRITE) return written * 2;
      const expect = this.expect[u] as number;
      if (expect > 0 && expect < atVersion) return -1;
      return (expect * this.valueSpace + written) * 2 + 1;
    };
    // The stack of linearized operations, with the state before each, and the return node
    // bounding their level and their position among its unknown candidates.
    const stackOp = new Int32Array(n);
    const stackValue = new Int32Array(n);
    const stackVersion = new Int32Array(n);
    const stackReturn = new Int32Array(n);
    const stackCandidate = new Int32Array(n);
    let depth = 0;
    let value = this.initialValue;
    let version = this.initialVersion;
    let remaining = this.definiteCount;
    let deepest = -1;
    let blocking = -1;
    let capped = -1;
    // Where the current level stands: walking the list at `node`, or (when `candidates` is
    // set) trying unknown classes from `candidate`, bounded by return node `bound`.
    let node = this.next[0] as number;
    let candidates: number[] | null = null;
    let candidate = 0;
    let bound = 0;
    // Pins of the ok operations not linearized yet.
    const pins = new MinTree(this.pin);

    /** Adds or removes ok operation `i` from the linearized set. */
    const toggle = (i: number, linearized: boolean): void => {
      bits[i >>> 5] = (bits[i >>> 5] as number) ^ (1 << (i & 31));
      bitsHash = (bitsHash ^ (this.zob[i] as number)) >>> 0;
      const read = this.value[i] as number;
      if (this.kind[i] === READ && read > 0) readsLeft[read] = (readsLeft[read] as number) + (linearized ? -1 : 1);
      if (this.watchesNull(i)) nullWatchers += linearized ? -1 : 1;
    };
    const useUnknown = (u: number): void => {
      usedUnknown[usedCount++] = u;
      (this.classes[this.classOf[u] as number] as UnknownClass).used++;
      if (this.watchesNull(u)) nullWatchers--;
    };
    const unuseUnknown = (u: number): void => {
      usedCount--;
      (this.classes[this.classOf[u] as number] as UnknownClass).used--;
      if (this.watchesNull(u)) nullWatchers++;
    };
    const unknownHash = (atVersion: number): number => {
      let hash = 0;
      for (let k = 0; k < usedCount; k++) {
        const key = effectKey(usedUnknown[k] as number, atVersion);
        if (key >= 0) hash = (hash + mixNumber(key)) >>> 0;
      }
      return hash;
    };
    const unknownKeys = (atVersion: number): Float64Array => {
      const keys: number[] = [];
      for (let k = 0; k < usedCount; k++) {
        const key = effectKey(usedUnknown[k] as number, atVersion);
        if (key >= 0) keys.push(key);
      }
      return Float64Array.from(keys).sort();
    };
    /** Tries to linearize `i` next; true if it was (and the state moved on). */
    const attempt = (i: number): boolean => {
      if (!this.stepModel(i, value, version)) return false;
      const definite = this.definite[i] === 1;
      const pinned = (this.pin[i] as number) !== NO_PIN;
      if (pinned) pins.set(i, NO_PIN);
      const after = this.nextVersion;
      if (after <= pins.min) {
        if (definite) toggle(i, true);
        else useUnknown(i);
        if (explored.add(bits, bitsHash, shown(this.nextValue), after, unknownHash(after), () => unknownKeys(after))) {
          stackOp[depth] = i;
          stackValue[depth] = value;
          stackVersion[depth] = version;
          stackReturn[depth] = bound;
          stackCandidate[depth] = candidate;
          depth++;
          value = this.nextValue;
          version = after;
          if (definite) {
            this.lift(i);
            remaining--;
          }
          node = this.next[0] as number;
          candidates = null;
          return true;
        }
        if (definite) toggle(i, false);
        else unuseUnknown(i);
      }
      if (pinned) pins.set(i, this.pin[i] as number);
      return false;
    };

    while (remaining > 0) {
      if (!budget.tick()) return { kind: 'timeout' };
      if (candidates === null) {
        if (node <= n) {
          // The call of an ok operation not linearized yet.
          if (!attempt(node - 1)) node = this.next[node] as number;
          continue;
        }
        // The first return: now the unknown operations invoked before it.
        if (node === tail) throw new Error('linearizability search: reached the end with ok operations left');
        bound = node;
        candidates = this.unknownCandidates(value, version, this.returnAt[node] as number);
        candidate = 0;
      }
      if (candidate < candidates.length) {
        const c = this.classes[candidates[candidate] as number] as UnknownClass;
        if (!attempt(c.members[c.used] as number)) candidate++;
        continue;
      }
      // Nothing fits before the return at `bound`: backtrack.
      if (depth > deepest) {
        deepest = depth;
        blocking = bound - n - 1;
        // Another operation whose bound forbids writes now, if any.
        pins.set(blocking, NO_PIN);
        capped = pins.min <= version ? pins.argmin() : -1;
        pins.set(blocking, this.pin[blocking] as number);
      }
      if (depth === 0) return { kind: 'fail', blocking, depth: deepest, capped };
      depth--;
      const i = stackOp[depth] as number;
      value = stackValue[depth] as number;
      version = stackVersion[depth] as number;
      if ((this.pin[i] as number) !== NO_PIN) pins.set(i, this.pin[i] as number);
      if (this.definite[i]) {
        toggle(i, false);
        this.unlift(i);
        remaining++;
        node = this.next[i + 1] as number;
        candidates = null;
      } else {
        unuseUnknown(i);
        bound = stackReturn[depth] as number;
        candidates = this.unknownCandidates(value, version, this.returnAt[bound] as number);
        candidate = (stackCandidate[depth] as number) + 1;
      }
    }
    return { kind: 'ok' };
  }
}

/** A 32-bit hash of a non-negative integer below 2^53. */
function mixNumber(x: number): number {
  let h = Math.imul((x >>> 0) ^ Math.imul(Math.floor(x / 4294967296), 0x27d4eb2d), 0x9e3779b1);
  h ^= h >>> 15;
  h = Math.imul(h, 0x85ebca6b);
  return (h ^ (h >>> 13)) >>> 0;
}

/** A failing sub-history of one key, and the state it starts from. */
interface Witness {
  ops: Operation[];
  start: RegisterState | undefined;
}

/**
 * Shrinks the (non-linearizable) operations of one key to a small witness, by reductions
 * that each keep "the witness is not linearizable" a proof that the key is not:
 * 1. A failing prefix: cut after the completion of the operations the search got stuck on
 *    (`stuckOn`), if that fails; operations in flight at the cut become unknown (reads in
 *    flight are dropped). Linearizability is prefix-closed, so a failing prefix proves the
 *    history fails.
 * 2. The shortest failing suffix after an anchor: an ok operation whose result fixes the
 *    state right after it (a read reporting value and version, a write or successful cas
 *    reporting its version). In any linearization, the operations after the anchor start
 *    from that state; they include every operation invoked after the anchor completed, and
 *    possibly those in flight during it (which become unknown; reads among them are
 *    dropped); operations completed before it began are out. So a failing suffix from the
 *    anchor's state proves the history fails. The latest anchor that fails is looked for by
 *    galloping back from the end, where the checks are cheapest, then bisecting.
 * 3. Removal of operations that do not change the state (ok reads, refused cas): removing
 *    them from a linearizable history leaves it linearizable, so the rest still proves it.
 * Each candidate is checked; checks that run out of budget count as "not failing", which
 * only keeps more operations.
 */
function shrinkWitness(
  ops: readonly Operation[],
  initial: RegisterState | undefined,
  stuckOn: readonly number[],
  budget: Budget,
): Witness {
  let checks = 0;
  const fails = (candidate: Witness): boolean => {
    if (checks >= MAX_WITNESS_CHECKS || budget.exhausted) return false;
    checks++;
    return new KeySearch(candidate.ops, candidate.start).run(budget).kind === 'fail';
  };

  // 1. A failing prefix.
  let best: Witness = { ops: ops.slice(), start: initial };
  const entries = orderEntries(ops);
  let cut = -1;
  entries.forEach((entry, position) => {
    if (!entry.call && stuckOn.includes(entry.index)) cut = position;
  });
  if (cut >= 0) {
    const prefix = { ops: cutAt(ops, entries, cut), start: initial };
    if (prefix.ops.length < ops.length && fails(prefix)) best = prefix;
  }

  // 2. The shortest failing suffix after an anchor: gallop back from the latest anchor to a
  // failing one, then bisect between it and the earliest one known not to fail.
  const anchors = anchorsOf(best.ops);
  const fromPrefix = best.ops;
  const suffix = (index: number): Witness => suffixAfter(fromPrefix, anchors[index] as Operation);
  let passing = anchors.length; // anchors at or after this index are known not to fail (or untried)
  let failing = -1; // the latest anchor known to fail; -1: none, the prefix itself
  for (let back = 1; anchors.length - back >= 0; back *= 2) {
    const index = anchors.length - back;
    const candidate = suffix(index);
    if (fails(candidate)) {
      failing = index;
      best = candidate;
      break;
    }
    passing = index;
    if (budget.exhausted || checks >= MAX_WITNESS_CHECKS) break;
  }
  if (failing >= 0) {
    while (passing - failing > 1) {
      const middle = (failing + passing) >>> 1;
      const candidate = suffix(middle);
      if (fails(candidate)) {
        failing = middle;
        best = candidate;
      } else {
        passing = middle;
      }
    }
  }

  // 3. Remove reads and refused cas that are not needed: first all but the last to
  // complete, then in halving chunks.
  const removable = (o: Operation): boolean =>
    o.outcome.status === 'ok' && (o.op.type === 'read' || o.outcome.casFailed === true);
  const without = (drop: ReadonlySet<Operation>): Witness => ({ ops: best.ops.filter((o) => !drop.has(o)), start: best.start });
  const lastToComplete = best.ops.reduce<Operation | undefined>(
    (latestOp, o) => (o.completeAt !== null && (latestOp === undefined || o.completeAt > (latestOp.completeAt as number)) ? o : latestOp),
    undefined,
  );
  const allButLast = new Set(best.ops.filter((o) => removable(o) && o !== lastToComplete));
  if (allButLast.size > 0 && fails(without(allButLast))) {
    best = without(allButLast);
  } else {
    let chunk = Math.ceil(best.ops.filter(removable).length / 2);
    while (chunk >= 1 && checks < MAX_WITNESS_CHECKS && !budget.exhausted) {
      const candidates = best.ops.filter(removable);
      for (let start = 0; start < candidates.length; start += chunk) {
        const smaller = without(new Set(candidates.slice(start, start + chunk)));
        if (smaller.ops.length < best.ops.length && fails(smaller)) best = smaller;
      }
      chunk = chunk === 1 ? 0 : Math.ceil(chunk / 2);
    }
  }
  return { ops: best.ops.slice().sort((a, b) => a.invokeAt - b.invokeAt || a.id - b.id), start: best.start };
}

/** The operations whose outcome fixes the state right after them, by completion time. */
function anchorsOf(ops: readonly Operation[]): Operation[] {
  return ops.filter((o) => anchorState(o) !== undefined).sort((a, b) => (a.completeAt as number) - (b.completeAt as number));
}

/** The state right after `o`, if its outcome fixes it. */
function anchorState(o: Operation): RegisterState | undefined {
  const { op, outcome } = o;
  if (outcome.status !== 'ok' || outcome.version === undefined) return undefined;
  if (op.type === 'read') return outcome.value === undefined ? undefined : { value: outcome.value, version: outcome.version };
  if (outcome.casFailed === true) return undefined;
  return { value: op.value, version: outcome.version };
}

/**
 * The operations that may come after `anchor` in a linearization, and the state it fixes
 * (reduction 2 of shrinkWitness). Unknown cas expecting a version older than that state can
 * never apply after it and are left out.
 */
function suffixAfter(ops: readonly Operation[], anchor: Operation): Witness {
  const start = anchorState(anchor) as RegisterState;
  const result: Operation[] = [];
  const anchorEnd = anchor.completeAt as number;
  for (const o of ops) {
    if (o === anchor) continue;
    if (o.completeAt !== null && isDefinite(o) && o.completeAt < anchor.invokeAt) continue; // before the anchor
    if (o.invokeAt > anchorEnd) {
      result.push(o);
    } else if (o.op.type === 'read') {
      continue; // a read in flight during the anchor may come before it
    } else if (o.op.type === 'write' || o.op.expectVersion === 0 || o.op.expectVersion >= start.version) {
      result.push(isDefinite(o) ? { ...o, completeAt: null, outcome: { status: 'unknown' } } : o);
    }
  }
  return { ops: result, start };
}

/**
 * The operations of `ops` as seen by a history cut just after entry `position`: those
 * invoked by then, with the ones not completed by then turned unknown (or dropped, for reads).
 */
function cutAt(ops: readonly Operation[], entries: readonly TimedEntry[], position: number): Operation[] {
  const invoked = new Set<number>();
  const completed = new Set<number>();
  for (let p = 0; p <= position; p++) {
    const entry = entries[p] as TimedEntry;
    (entry.call ? invoked : completed).add(entry.index);
  }
  const result: Operation[] = [];
  ops.forEach((operation, index) => {
    if (!invoked.has(index)) return;
    if (completed.has(index) || !isDefinite(operation)) result.push(operation);
    else if (operation.op.type !== 'read') result.push({ ...operation, completeAt: null, outcome: { status: 'unknown' } });
  });
  return result;
}
