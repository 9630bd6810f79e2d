/**
 * What a task submission may hold, checked (pure): the body of `POST /v1/tasks`, of
 * `peer.submit()`, and of the submit RPC a peer forwards to the coordinator. Every field is
 * bounded; a bad one is named in a TaskInputError.
 */

export class TaskInputError extends Error {
  override readonly name = 'TaskInputError';
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
  }
}

export interface TaskSubmission {
  type: string;
  /** Any JSON value, at most MAX_PAYLOAD_BYTES encoded. */
  payload: unknown;
  /** -1000..1000; higher runs first. Default 0. */
  priority: number;
  resources: { cpu: number; memMb: number };
  /** Submitting twice with the same key gives the same task. */
  idempotencyKey: string | null;
  /** An attempt running longer is given up and retried. Default 60 000. */
  timeoutMs: number;
  /** Attempts before the task fails for good. Default 3. */
  maxAttempts: number;
}

export const MAX_PAYLOAD_BYTES = 64 * 1024;
export const MAX_TASK_TYPE_LENGTH = 64;
export const TASK_TYPE_PATTERN = /^[a-z0-9][a-z0-9._-]{0,63}$/;

export const TASK_DEFAULTS = Object.freeze({ priority: 0, cpu: 1, memMb: 64, timeoutMs: 60_000, maxAttempts: 3 });

const KNOWN = new Set(['type', 'payload', 'priority', 'resources', 'idempotencyKey', 'timeoutMs', 'maxAttempts']);

function num(o: Record<string, unknown>, field: string, def: number, min: number, max: number, integer: boolean): number {
  const v = o[field];
  if (v === undefined) return def;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max || (integer && !Number.isInteger(v))) {
    throw new TaskInputError(field, `must be a${integer ? 'n integer' : ' number'} from ${min} to ${max}, got ${JSON.stringify(v)}`);
  }
  return v;
}

/** Checks a submission (parsed JSON) and fills in the defaults. */
export function parseTaskSubmission(body: unknown): TaskSubmission {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new TaskInputError('body', 'must be a JSON object');
  const o = body as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!KNOWN.has(k)) throw new TaskInputError(k, 'is not a task field');
  if (typeof o.type !== 'string' || !TASK_TYPE_PATTERN.test(o.type)) {
    throw new TaskInputError('type', `must be 1-${MAX_TASK_TYPE_LENGTH} characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit`);
  }
  let payloadBytes: number;
  try {
    payloadBytes = new TextEncoder().encode(JSON.stringify(o.payload ?? null)).length;
  } catch {
    throw new TaskInputError('payload', 'must be a JSON value');
  }
  if (payloadBytes > MAX_PAYLOAD_BYTES) throw new TaskInputError('payload', `is ${payloadBytes} bytes encoded; the limit is ${MAX_PAYLOAD_BYTES}`);
  let cpu: number = TASK_DEFAULTS.cpu;
  let memMb: number = TASK_DEFAULTS.memMb;
  if (o.resources !== undefined) {
    const r = o.resources;
    if (typeof r !== 'object' || r === null || Array.isArray(r)) throw new TaskInputError('resources', 'must be an object { cpu, memMb }');
    for (const k of Object.keys(r)) if (k !== 'cpu' && k !== 'memMb') throw new TaskInputError(`resources.${k}`, 'is not a resource');
    cpu = num(r as Record<string, unknown>, 'cpu', TASK_DEFAULTS.cpu, 0.01, 1024, false);
    memMb = num(r as Record<string, unknown>, 'memMb', TASK_DEFAULTS.memMb, 0, 1_048_576, false);
  }
  const key = o.idempotencyKey;
  if (key !== undefined && key !== null && (typeof key !== 'string' || key.length === 0 || key.length > 200 || /[\u0000-\u001f]/.test(key))) {
    throw new TaskInputError('idempotencyKey', 'must be 1-200 characters without control characters');
  }
  return {
    type: o.type,
    payload: o.payload ?? null,
    priority: num(o, 'priority', TASK_DEFAULTS.priority, -1000, 1000, true),
    resources: { cpu, memMb },
    idempotencyKey: typeof key === 'string' ? key : null,
    timeoutMs: num(o, 'timeoutMs', TASK_DEFAULTS.timeoutMs, 10, 86_400_000, true),
    maxAttempts: num(o, 'maxAttempts', TASK_DEFAULTS.maxAttempts, 1, 100, true),
  };
}
