/**
 * Structured logs through pino: one JSON object a line on stderr, with an ISO `time`, the level
 * as a label (`"level":"info"`), the base fields (the peer id), `component` on a service's
 * lines, `msg` and the call's fields. Human-facing lines (the peer id and join addresses at
 * start) go to stdout through `announce`, not through the logger.
 */
import { pino, type DestinationStream, type Logger as PinoLogger } from 'pino';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'silent';

export const LOG_LEVELS: readonly LogLevel[] = ['debug', 'info', 'warn', 'error', 'silent'];

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  /** A logger whose lines all carry these fields too (a later value for a key replaces the earlier). */
  child(fields: Record<string, unknown>): Logger;
}

/** How deep `toLoggable` looks into fields for errors; beyond it values are left as they are. */
const MAX_FIELD_DEPTH = 4;

/**
 * An error as JSON can show it: `JSON.stringify(new Error('x'))` is `{}`. Keeps `name` (what
 * callers and tests key on), `message`, `code` when there is one, the stack, and the cause.
 */
function serializeError(e: Error, depth: number): Record<string, unknown> {
  const out: Record<string, unknown> = { name: e.name, message: e.message };
  const code = (e as { code?: unknown }).code;
  if (typeof code === 'string' || typeof code === 'number') out.code = code;
  if (e.stack !== undefined) out.stack = e.stack;
  if (e.cause !== undefined) out.cause = toLoggable(e.cause, depth + 1);
  return out;
}

/**
 * `value` with every Error in it (in plain objects and arrays, to MAX_FIELD_DEPTH) replaced by
 * its serialized form; the same object back when there is none, so most lines copy nothing.
 */
function toLoggable(value: unknown, depth = 0): unknown {
  if (value instanceof Error) return serializeError(value, depth);
  if (depth >= MAX_FIELD_DEPTH || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) {
    let copy: unknown[] | null = null;
    value.forEach((v: unknown, i) => {
      const w = toLoggable(v, depth + 1);
      if (w !== v) (copy ??= [...value])[i] = w;
    });
    return copy ?? value;
  }
  const proto = Object.getPrototypeOf(value) as unknown;
  if (proto !== Object.prototype && proto !== null) return value;
  let copy: Record<string, unknown> | null = null;
  for (const [k, v] of Object.entries(value)) {
    const w = toLoggable(v, depth + 1);
    if (w !== v) (copy ??= { ...value })[k] = w;
  }
  return copy ?? value;
}

let stderrDestination: DestinationStream | null = null;

/**
 * fd 2 through pino's own destination with `sync: true`: each line is written with
 * `fs.writeSync` before the log call returns, so a line logged just before `process.exit`
 * is not lost. One for the process, however many loggers there are.
 */
function stderr(): DestinationStream {
  stderrDestination ??= pino.destination({ fd: 2, sync: true });
  return stderrDestination;
}

/**
 * A logger at `level` whose lines carry `base`. `write`, when given, receives each line
 * (without its newline) instead of stderr, as tests do to read what was logged.
 */
export function createLogger(level: LogLevel, base: Record<string, unknown> = {}, write?: (line: string) => void): Logger {
  const destination: DestinationStream =
    write === undefined ? stderr() : { write: (line: string) => write(line.endsWith('\n') ? line.slice(0, -1) : line) };
  const root = pino(
    {
      level,
      // No pid or hostname: the peer id says which process it is.
      base: null,
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: {
        level: (label) => ({ level: label }),
        log: (object) => toLoggable(object) as Record<string, unknown>,
      },
      // pino's own `err` serializer would turn an already serialized error into `type: "Object"`.
      serializers: { err: (v: unknown) => toLoggable(v) },
    },
    destination,
  );
  return bind(root, base);
}

/**
 * The bindings are kept here and every child is made from the root with all of them merged:
 * pino's nested children (and a call's fields that repeat a binding) would write the key twice
 * into one line, which JSON readers disagree about.
 */
function bind(root: PinoLogger, bindings: Record<string, unknown>): Logger {
  const bound = root.child(toLoggable(bindings) as Record<string, unknown>);
  const emit = (lvl: Exclude<LogLevel, 'silent'>, msg: string, fields?: Record<string, unknown>): void => {
    if (!bound.isLevelEnabled(lvl)) return;
    if (fields === undefined) bound[lvl](msg);
    else if (Object.keys(fields).some((k) => Object.hasOwn(bindings, k))) root[lvl]({ ...bindings, ...fields }, msg);
    else bound[lvl](fields, msg);
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (fields) => bind(root, { ...bindings, ...fields }),
  };
}
