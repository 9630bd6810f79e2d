/**
 * Histories of client operations against the key-value store, for the checkers
 * (DESIGN.md §6): every operation is an `invoke` event when a client sends it and a
 * `complete` event when the client learns how it ended (ok, fail or unknown).
 *
 * Outcomes, and what the checkers make of them:
 * - `ok`: the operation took effect exactly once, somewhere between its invoke and its
 *   completion. A read reports `value` (null when the key is absent) and, when the store
 *   says it, `version`; a write or successful cas reports the new `version`. A cas refused
 *   because the version did not match (HTTP 412) is also `ok`, with `casFailed: true`: it
 *   did happen, it observed a mismatching version and changed nothing.
 * - `fail`: the operation certainly did not take effect (a 4xx or a 503 refusal sent before
 *   anything was applied). The checkers drop it.
 * - `unknown`: a timeout or a reset connection. The operation may have taken effect at any
 *   moment after its invoke, possibly never. An operation that was never completed (still in
 *   flight when the history was taken) counts as unknown too.
 *
 * Timestamps come from one monotonic clock shared by all clients of a history (by default
 * `performance.now()`), so that "A completed before B was invoked" is meaningful.
 */

/** Reads `key`. */
export interface ReadOp {
  type: 'read';
  key: string;
}

/** Sets `key` to `value`; `value: null` deletes the key. */
export interface WriteOp {
  type: 'write';
  key: string;
  value: string | null;
}

/**
 * Sets `key` to `value` if its version is `expectVersion`. `expectVersion: 0` means "only
 * if the key is absent" (see the register model in linearizability.ts).
 */
export interface CasOp {
  type: 'cas';
  key: string;
  expectVersion: number;
  value: string;
}

/** One client request against the key-value store. */
export type KvOp = ReadOp | WriteOp | CasOp;

/** The operation took effect (or, for `casFailed`, was evaluated and refused). */
export interface OkOutcome {
  status: 'ok';
  /** Read only: the value read, null when the key is absent. Required for reads. */
  value?: string | null;
  /**
   * Read: the version read. Write and successful cas: the new version. Failed cas: the
   * current version the store reported, if it did. Omitted when unknown; the checker then
   * does not check it.
   */
  version?: number;
  /** Cas only: the version did not match, nothing was written (HTTP 412). */
  casFailed?: boolean;
}

/** The operation certainly did not take effect. */
export interface FailOutcome {
  status: 'fail';
}

/** The operation may or may not have taken effect (timeout, reset connection). */
export interface UnknownOutcome {
  status: 'unknown';
}

/** How an operation ended, as far as its client knows. */
export type Outcome = OkOutcome | FailOutcome | UnknownOutcome;

/** A client sent `op`. */
export interface InvokeEvent {
  type: 'invoke';
  opId: number;
  clientId: string;
  op: KvOp;
  /** Clock reading when the request was sent. */
  at: number;
}

/** The client learnt the outcome of operation `opId`. */
export interface CompleteEvent {
  type: 'complete';
  opId: number;
  outcome: Outcome;
  /** Clock reading when the outcome was learnt. */
  at: number;
}

export type HistoryEvent = InvokeEvent | CompleteEvent;

/** A history: events in the order they were recorded. */
export type History = readonly HistoryEvent[];

/** An invoke paired with its completion: the form the checkers work on. */
export interface Operation {
  id: number;
  clientId: string;
  op: KvOp;
  invokeAt: number;
  /** Null when the operation was never completed. */
  completeAt: number | null;
  /** `{ status: 'unknown' }` when the operation was never completed. */
  outcome: Outcome;
}

/** The serialized form written by {@link HistoryRecorder.toJSON}. */
export interface HistoryJson {
  format: 'shoal-kv-history';
  version: 1;
  events: HistoryEvent[];
}

export interface HistoryRecorderOptions {
  /** A monotonic clock in milliseconds. Default: `performance.now()`. */
  now?: () => number;
}

/**
 * Records the operations of any number of clients into one history. Not tied to any
 * transport: the caller invokes before sending and completes when the answer (or the
 * give-up) arrives.
 *
 * ```ts
 * const id = recorder.invoke('c1', { type: 'write', key: 'a', value: 'x' });
 * recorder.complete(id, { status: 'ok', version: 1 });
 * ```
 */
export class HistoryRecorder {
  private readonly events: HistoryEvent[] = [];
  /** Operations invoked and not yet completed, with their invoke time. */
  private readonly pending = new Map<number, { op: KvOp; at: number }>();
  /** Every opId invoked so far. */
  private readonly invoked = new Set<number>();
  private readonly now: () => number;
  private nextOpId = 1;

  constructor(options: HistoryRecorderOptions = {}) {
    this.now = options.now ?? (() => performance.now());
  }

  /** Records that `clientId` sent `op`; returns the id to complete it with. */
  invoke(clientId: string, op: KvOp): number {
    validateOp(op);
    const opId = this.nextOpId++;
    const at = this.now();
    const event: InvokeEvent = { type: 'invoke', opId, clientId, op: { ...op }, at };
    this.events.push(event);
    this.pending.set(opId, { op: event.op, at });
    this.invoked.add(opId);
    return opId;
  }

  /**
   * Records the outcome of operation `opId`. Throws if `opId` was never invoked or is
   * already complete, or if `outcome` does not fit the operation (for example `casFailed`
   * on a write, or an ok read without a value).
   */
  complete(opId: number, outcome: Outcome): void {
    const invoked = this.pending.get(opId);
    if (invoked === undefined) {
      throw new Error(`complete(${opId}): no operation ${opId} in flight`);
    }
    validateOutcome(invoked.op, outcome, opId);
    const at = this.now();
    if (at < invoked.at) {
      throw new Error(`complete(${opId}): the clock went backwards (${at} < ${invoked.at})`);
    }
    this.pending.delete(opId);
    this.events.push({ type: 'complete', opId, outcome: { ...outcome }, at });
  }

  /** The events recorded so far, in order (a copy). */
  history(): HistoryEvent[] {
    return this.events.slice();
  }

  /** The recorded operations, invokes paired with completions (see {@link toOperations}). */
  operations(): Operation[] {
    return toOperations(this.events);
  }

  /** Ids of the operations invoked and not completed yet. */
  inFlight(): number[] {
    return [...this.pending.keys()];
  }

  /** The history in a form `JSON.stringify` can save and {@link fromJSON} can load. */
  toJSON(): HistoryJson {
    return { format: 'shoal-kv-history', version: 1, events: this.history() };
  }

  /**
   * Loads a history saved with {@link toJSON} (as a JSON string or an already parsed
   * object). The recorder can go on recording after it; give it the same clock.
   */
  static fromJSON(data: string | HistoryJson, options: HistoryRecorderOptions = {}): HistoryRecorder {
    const parsed: unknown = typeof data === 'string' ? JSON.parse(data) : data;
    if (!isRecord(parsed) || parsed.format !== 'shoal-kv-history' || parsed.version !== 1 || !Array.isArray(parsed.events)) {
      throw new Error('fromJSON: not a shoal-kv-history version 1 document');
    }
    const recorder = new HistoryRecorder(options);
    for (const [index, raw] of (parsed.events as unknown[]).entries()) {
      recorder.load(raw, index);
    }
    return recorder;
  }

  /** Appends one saved event after checking that it is well formed and in sequence. */
  private load(raw: unknown, index: number): void {
    const where = `fromJSON: event ${index}`;
    if (!isRecord(raw) || typeof raw.opId !== 'number' || typeof raw.at !== 'number') {
      throw new Error(`${where}: malformed`);
    }
    if (raw.type === 'invoke') {
      if (typeof raw.clientId !== 'string') throw new Error(`${where}: clientId must be a string`);
      const op = raw.op as KvOp;
      validateOp(op);
      if (!Number.isInteger(raw.opId) || raw.opId < 1 || this.invoked.has(raw.opId)) {
        throw new Error(`${where}: duplicate or invalid opId ${raw.opId}`);
      }
      this.events.push({ type: 'invoke', opId: raw.opId, clientId: raw.clientId, op, at: raw.at });
      this.pending.set(raw.opId, { op, at: raw.at });
      this.invoked.add(raw.opId);
      this.nextOpId = Math.max(this.nextOpId, raw.opId + 1);
    } else if (raw.type === 'complete') {
      const invoked = this.pending.get(raw.opId);
      if (invoked === undefined) throw new Error(`${where}: completes opId ${raw.opId}, which is not in flight`);
      const outcome = raw.outcome as Outcome;
      validateOutcome(invoked.op, outcome, raw.opId);
      if (raw.at < invoked.at) throw new Error(`${where}: completes before its invoke`);
      this.pending.delete(raw.opId);
      this.events.push({ type: 'complete', opId: raw.opId, outcome, at: raw.at });
    } else {
      throw new Error(`${where}: unknown event type`);
    }
  }
}

/**
 * Pairs invokes with completions, in invoke order. Operations without a completion get
 * `completeAt: null` and an unknown outcome.
 */
export function toOperations(history: History): Operation[] {
  const operations: Operation[] = [];
  const byId = new Map<number, Operation>();
  for (const event of history) {
    if (event.type === 'invoke') {
      if (byId.has(event.opId)) throw new Error(`toOperations: opId ${event.opId} invoked twice`);
      const operation: Operation = {
        id: event.opId,
        clientId: event.clientId,
        op: event.op,
        invokeAt: event.at,
        completeAt: null,
        outcome: { status: 'unknown' },
      };
      byId.set(event.opId, operation);
      operations.push(operation);
    } else {
      const operation = byId.get(event.opId);
      if (operation === undefined || operation.completeAt !== null) {
        throw new Error(`toOperations: completion of opId ${event.opId} without a matching invoke`);
      }
      operation.completeAt = event.at;
      operation.outcome = event.outcome;
    }
  }
  return operations;
}

/** A one-line description of an operation, for failure messages. */
export function describeOperation(operation: Operation): string {
  const { op, outcome } = operation;
  let call: string;
  switch (op.type) {
    case 'read':
      call = `read(${op.key})`;
      break;
    case 'write':
      call = op.value === null ? `delete(${op.key})` : `write(${op.key}, ${JSON.stringify(op.value)})`;
      break;
    case 'cas':
      call = `cas(${op.key}, expect v${op.expectVersion}, ${JSON.stringify(op.value)})`;
      break;
  }
  let result: string;
  if (outcome.status !== 'ok') {
    result = outcome.status;
  } else if (outcome.casFailed === true) {
    result = `mismatch${outcome.version === undefined ? '' : ` (at v${outcome.version})`}`;
  } else if (op.type === 'read') {
    result = `${JSON.stringify(outcome.value ?? null)}${outcome.version === undefined ? '' : `@v${outcome.version}`}`;
  } else {
    result = outcome.version === undefined ? 'ok' : `ok v${outcome.version}`;
  }
  const end = operation.completeAt === null ? '…' : String(operation.completeAt);
  return `#${operation.id} ${operation.clientId} ${call} → ${result} [${operation.invokeAt}, ${end}]`;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function validateOp(op: KvOp): void {
  if (!isRecord(op) || typeof op.key !== 'string') throw new Error('invalid operation: missing key');
  switch (op.type) {
    case 'read':
      return;
    case 'write':
      if (op.value !== null && typeof op.value !== 'string') throw new Error('invalid write: value must be a string or null');
      return;
    case 'cas':
      if (!Number.isInteger(op.expectVersion) || op.expectVersion < 0) {
        throw new Error('invalid cas: expectVersion must be an integer >= 0');
      }
      if (typeof op.value !== 'string') throw new Error('invalid cas: value must be a string');
      return;
    default:
      throw new Error(`invalid operation type ${String((op as { type: unknown }).type)}`);
  }
}

function validateOutcome(op: KvOp, outcome: Outcome, opId: number): void {
  const where = `outcome of operation ${opId} (${op.type})`;
  if (!isRecord(outcome)) throw new Error(`${where}: not an object`);
  if (outcome.status === 'fail' || outcome.status === 'unknown') return;
  if (outcome.status !== 'ok') throw new Error(`${where}: unknown status`);
  if (outcome.version !== undefined && (!Number.isInteger(outcome.version) || outcome.version < 0)) {
    throw new Error(`${where}: version must be an integer >= 0`);
  }
  if (outcome.casFailed !== undefined && op.type !== 'cas') throw new Error(`${where}: casFailed is for cas only`);
  if (op.type === 'read') {
    if (outcome.value === undefined) throw new Error(`${where}: an ok read needs a value (null when absent)`);
    if (outcome.value !== null && typeof outcome.value !== 'string') throw new Error(`${where}: value must be a string or null`);
  } else if (outcome.value !== undefined) {
    throw new Error(`${where}: only reads report a value`);
  }
}
