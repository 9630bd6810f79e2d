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
 * Two exact reductions keep the search small:
 * - Values that no read ever returns are merged into one "unobserved" value: no operation
 *   can tell them apart (a cas looks only at presence and version).
 * - Unknown writes and cas with the same effect (same kind, same merged value, same expected
 *   version) are interchangeable, so they are only linearized in invoke order; and an unknown
 *   operation that would change nothing is never linearized (leaving it out is equivalent).
 *
 * The search is bounded by a step budget and a deadline; exhausting either gives
 * `{ ok: 'unknown', reason: 'timeout' }` rather than a hang.
 */
import { SeededRandom } from '../../protocols/random.js';
import { describeOperation, toOperations, type History, type Operation } from './history.js';

export interface CheckOptions {
  /** Wall-clock budget for the whole check, witness included. Default 10 000 ms. */
  timeoutMs?: number;
  /** Step budget for the whole check (one step = one list entry visited). Default 20 000 000. */
  maxSteps?: number;
  /** Whether to shrink a failing key's operations to a small witness. Default true. */
  witness?: boolean;
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
       * A sub-history of `key` that is itself not linearizable and whose failure implies the
       * failure of the whole history: a prefix of it (operations still in flight at the cut
       * appear with an unknown outcome), from which reads and refused cas that were not
       * needed were removed. Sorted by invoke time. Absent when `witness: false`.
       */
      minimalWitness?: Operation[];
    }
  | { ok: 'unknown'; reason: 'timeout' };

const DEFAULT_TIMEOUT_MS = 10_000;
const DEFAULT_MAX_STEPS = 20_000_000;
/** How many sub-histories the witness shrinking may check at most. */
const MAX_WITNESS_CHECKS = 120;

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
    const search = new KeySearch(ops);
    const stepsBefore = budget.stepsUsed;
    const outcome = search.run(budget);
    if (outcome.kind === 'timeout') return { ok: 'unknown', reason: 'timeout' };
    if (outcome.kind === 'fail') {
      const reason =
        `key ${JSON.stringify(key)} is not linearizable: a linearization covers at most ${outcome.depth} ` +
        `of its ${ops.length} operations and cannot take in ${describeOperation(ops[outcome.blocking] as Operation)}`;
      if (options.witness === false) return { ok: false, key, reason };
      const perCheck = Math.max(200_000, 4 * (budget.stepsUsed - stepsBefore));
      return { ok: false, key, reason, minimalWitness: shrinkWitness(ops, budget, perCheck) };
    }
  }
  return { ok: true };
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

/** The shared step and time allowance of one check. */
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
    return this.expired || this.stepsUsed > this.maxSteps || this.now() > this.deadline;
  }

  /** A budget drawing on this one, capped at `steps` more steps. */
  child(steps: number): Budget {
    const child = new Budget(Math.min(this.maxSteps, this.stepsUsed + steps), this.deadline, this.now);
    child.stepsUsed = this.stepsUsed;
    return child;
  }

  /** Takes back the steps a child used. */
  absorb(child: Budget): void {
    this.stepsUsed = Math.max(this.stepsUsed, child.stepsUsed);
  }
}

type SearchOutcome =
  | { kind: 'ok' }
  | { kind: 'timeout' }
  /** `blocking`: index of the operation whose completion could not be reached at the deepest point. */
  | { kind: 'fail'; blocking: number; depth: number };

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

/** A configuration already explored: the linearized set and the model state after it. */
interface Explored {
  bits: Uint32Array;
  value: number;
  version: number;
}

/**
 * Lowe's just-in-time linearization search over the operations of one key. Operation data
 * is compiled into typed arrays; the model state is (value id, version).
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
  /** For unknown operations: the previous interchangeable unknown operation, or -1. */
  private readonly chainPrev: Int32Array;
  private readonly definiteCount: number;
  /** The doubly linked entry list: node 0 is the head, 1..n calls, n+1..2n returns, 2n+1 the tail. */
  private readonly next: Int32Array;
  private readonly prev: Int32Array;
  private readonly zob: Uint32Array;
  /** Output of {@link stepModel}. */
  private nextValue = 0;
  private nextVersion = 0;

  constructor(ops: readonly Operation[]) {
    const n = ops.length;
    this.n = n;
    this.kind = new Uint8Array(n);
    this.definite = new Uint8Array(n);
    this.casFailed = new Uint8Array(n);
    this.value = new Int32Array(n);
    this.expect = new Int32Array(n);
    this.outVersion = new Int32Array(n).fill(-1);
    this.chainPrev = new Int32Array(n).fill(-1);
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

    let definiteCount = 0;
    const lastOfClass = new Map<string, number>();
    ops.forEach((operation, i) => {
      const { op, outcome } = operation;
      if (outcome.status === 'ok') {
        this.definite[i] = 1;
        definiteCount++;
        if (outcome.version !== undefined) this.outVersion[i] = outcome.version;
        if (outcome.casFailed === true) this.casFailed[i] = 1;
      }
      switch (op.type) {
        case 'read':
          this.kind[i] = READ;
          this.value[i] = idOf(outcome.status === 'ok' ? outcome.value : null);
          break;
        case 'write':
          this.kind[i] = WRITE;
          this.value[i] = idOf(op.value);
          break;
        case 'cas':
          this.kind[i] = CAS;
          this.value[i] = idOf(op.value);
          this.expect[i] = op.expectVersion;
          break;
      }
      if (!this.definite[i]) {
        const effect = `${this.kind[i]}:${this.value[i]}:${this.expect[i]}`;
        this.chainPrev[i] = lastOfClass.get(effect) ?? -1;
        lastOfClass.set(effect, i);
      }
    });
    this.definiteCount = definiteCount;

    const tail = 2 * n + 1;
    this.next = new Int32Array(2 * n + 2);
    this.prev = new Int32Array(2 * n + 2);
    let last = 0;
    for (const entry of orderEntries(ops)) {
      const node = entry.call ? entry.index + 1 : n + 1 + entry.index;
      this.next[last] = node;
      this.prev[node] = last;
      last = node;
    }
    this.next[last] = tail;
    this.prev[tail] = last;
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
        this.nextVersion = version + 1;
        return true;
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
        this.nextVersion = version + 1;
        return true;
      }
    }
  }

  /** Removes the call (and return) entries of operation `i` from the list. */
  private lift(i: number): void {
    this.unlink(i + 1);
    if (this.definite[i]) this.unlink(this.n + 1 + i);
  }

  /** Undoes {@link lift}, in reverse order. */
  private unlift(i: number): void {
    if (this.definite[i]) this.relink(this.n + 1 + i);
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

  /** Runs the search, drawing steps from `budget`. */
  run(budget: Budget): SearchOutcome {
    const n = this.n;
    const tail = 2 * n + 1;
    const bits = new Uint32Array(Math.max(1, Math.ceil(n / 32)));
    const explored = new Map<number, Explored[]>();
    const stackOp = new Int32Array(n);
    const stackValue = new Int32Array(n);
    const stackVersion = new Int32Array(n);
    let depth = 0;
    let value = ABSENT;
    let version = 0;
    let hash = 0;
    let remaining = this.definiteCount;
    let deepest = -1;
    let blocking = -1;
    let node = this.next[0] as number;

    const has = (i: number): boolean => ((bits[i >>> 5] as number) & (1 << (i & 31))) !== 0;
    const toggle = (i: number): void => {
      bits[i >>> 5] = (bits[i >>> 5] as number) ^ (1 << (i & 31));
      hash = (hash ^ (this.zob[i] as number)) >>> 0;
    };

    while (remaining > 0) {
      if (!budget.tick()) return { kind: 'timeout' };
      if (node <= n) {
        const i = node - 1;
        const chained = this.chainPrev[i] as number;
        if ((chained < 0 || has(chained)) && this.stepModel(i, value, version)) {
          toggle(i);
          if (remember(explored, bits, hash, this.nextValue, this.nextVersion)) {
            stackOp[depth] = i;
            stackValue[depth] = value;
            stackVersion[depth] = version;
            depth++;
            value = this.nextValue;
            version = this.nextVersion;
            this.lift(i);
            if (this.definite[i]) remaining--;
            node = this.next[0] as number;
            continue;
          }
          toggle(i);
        }
        node = this.next[node] as number;
      } else {
        // The return of an operation not linearized yet: nothing pending fits before it.
        if (node === tail) throw new Error('linearizability search: reached the end with ok operations left');
        if (depth > deepest) {
          deepest = depth;
          blocking = node - n - 1;
        }
        if (depth === 0) return { kind: 'fail', blocking, depth: deepest };
        depth--;
        const i = stackOp[depth] as number;
        value = stackValue[depth] as number;
        version = stackVersion[depth] as number;
        toggle(i);
        this.unlift(i);
        if (this.definite[i]) remaining++;
        node = this.next[i + 1] as number;
      }
    }
    return { kind: 'ok' };
  }
}

/** Records (bits, value, version) as explored; false if it already was. */
function remember(explored: Map<number, Explored[]>, bits: Uint32Array, hash: number, value: number, version: number): boolean {
  const key = (hash ^ Math.imul(value + 2, 0x9e3779b1) ^ Math.imul(version + 1, 0x85ebca6b)) >>> 0;
  const bucket = explored.get(key);
  if (bucket === undefined) {
    explored.set(key, [{ bits: bits.slice(), value, version }]);
    return true;
  }
  for (const seen of bucket) {
    if (seen.value === value && seen.version === version && sameBits(seen.bits, bits)) return false;
  }
  bucket.push({ bits: bits.slice(), value, version });
  return true;
}

function sameBits(a: Uint32Array, b: Uint32Array): boolean {
  for (let w = 0; w < a.length; w++) if (a[w] !== b[w]) return false;
  return true;
}

/**
 * Shrinks the (non-linearizable) operations of one key to a small witness, by two reductions
 * that keep "not linearizable" meaningful for the whole history:
 * 1. the shortest failing prefix: cut after the r-th completion, operations in flight at the
 *    cut become unknown (reads in flight are dropped). Linearizability is prefix-closed, so a
 *    failing prefix proves the history fails, and failure is monotone in r (binary search);
 * 2. removal of operations that do not change the state (ok reads and refused cas): removing
 *    them from a linearizable history leaves it linearizable, so the rest still proves it.
 * Sub-checks that run out of budget count as "not failing", which only keeps more operations.
 */
function shrinkWitness(ops: readonly Operation[], budget: Budget, stepsPerCheck: number): Operation[] {
  let checks = 0;
  const fails = (candidate: readonly Operation[]): boolean => {
    if (checks >= MAX_WITNESS_CHECKS || budget.exhausted) return false;
    checks++;
    const child = budget.child(stepsPerCheck);
    const outcome = new KeySearch(candidate).run(child);
    budget.absorb(child);
    return outcome.kind === 'fail';
  };

  // 1. Shortest failing prefix.
  const entries = orderEntries(ops);
  const returnPositions: number[] = [];
  entries.forEach((entry, position) => {
    if (!entry.call) returnPositions.push(position);
  });
  const prefix = (returns: number): Operation[] => cutAt(ops, entries, returnPositions[returns - 1] as number);
  let low = 1;
  let high = returnPositions.length; // the whole key fails
  let best = prefix(high);
  while (low < high) {
    const middle = (low + high) >>> 1;
    const candidate = prefix(middle);
    if (fails(candidate)) {
      high = middle;
      best = candidate;
    } else {
      low = middle + 1;
    }
  }

  // 2. Remove reads and refused cas that are not needed: first all but the last to complete,
  // then in halving chunks.
  const removable = (operation: Operation): boolean =>
    operation.outcome.status === 'ok' && (operation.op.type === 'read' || operation.outcome.casFailed === true);
  const lastToComplete = best.reduce<Operation | undefined>(
    (last, o) => (o.completeAt !== null && (last === undefined || (o.completeAt as number) > (last.completeAt as number)) ? o : last),
    undefined,
  );
  const keepOnly = best.filter((o) => !removable(o) || o === lastToComplete);
  if (keepOnly.length < best.length && fails(keepOnly)) {
    best = keepOnly;
  } else {
    let chunk = Math.ceil(best.filter(removable).length / 2);
    while (chunk >= 1 && checks < MAX_WITNESS_CHECKS && !budget.exhausted) {
      const candidates = best.filter(removable);
      for (let start = 0; start < candidates.length; start += chunk) {
        const drop = new Set(candidates.slice(start, start + chunk));
        const smaller = best.filter((o) => !drop.has(o));
        if (fails(smaller)) best = smaller;
      }
      chunk = chunk === 1 ? 0 : Math.ceil(chunk / 2);
    }
  }
  return best.slice().sort((a, b) => a.invokeAt - b.invokeAt || a.id - b.id);
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
