/**
 * The lost-acknowledged-writes checker (DESIGN.md §6): after a run, the final state of every
 * key must account for every write the store acknowledged.
 *
 * It relies only on the register model (register-model.ts: each applied write, delete or
 * successful cas advances the key's version by exactly 1, starting from absent at 0) and on
 * real time, and reports a key only when the final state is impossible:
 * - `version-too-low`: the final version is lower than the number of acknowledged writes;
 * - `version-too-high`: it is higher than the number of writes that may have applied
 *   (acknowledged plus unknown);
 * - `version-value-mismatch`: an acknowledged write returned the final version but wrote
 *   another value (a version names exactly one write), or version 0 with a value;
 * - `value-never-written`: no acknowledged or unknown write wrote the final value (null is
 *   allowed as the initial state);
 * - `value-overwritten`: every write of the final value completed before some other
 *   acknowledged write was invoked, so that later write must have been lost;
 * - `missing-final-read`: a key with acknowledged writes has no final read.
 * Failed operations (status `fail`) and refused cas are not writes.
 */
import { toOperations, type History, type Operation } from './history.js';

/** The final state read from the store, once quiet. */
export interface FinalRead {
  value: string | null;
  version: number;
}

export type LostWriteKind =
  | 'version-too-low'
  | 'version-too-high'
  | 'version-value-mismatch'
  | 'value-never-written'
  | 'value-overwritten'
  | 'missing-final-read';

export interface LostWriteReport {
  key: string;
  kind: LostWriteKind;
  /** A human-readable explanation. */
  detail: string;
  /** The final read, if there was one. */
  final?: FinalRead;
}

/** A write that may have changed the state: its value and, when acknowledged, its timing. */
interface Writer {
  value: string | null;
  acknowledged: boolean;
  /** Completion time; +Infinity for unknown writes (they may have applied at any later time). */
  completeAt: number;
  invokeAt: number;
  version: number | undefined;
}

/**
 * Returns one report per problem found (none when the final state is consistent), in key
 * order. Keys of `finalReads` without any operation are checked against the initial state.
 */
export function findLostAcknowledgedWrites(history: History, finalReads: ReadonlyMap<string, FinalRead>): LostWriteReport[] {
  const writers = writersByKey(toOperations(history));
  const keys = [...new Set([...writers.keys(), ...finalReads.keys()])].sort();
  const reports: LostWriteReport[] = [];
  for (const key of keys) {
    const keyWriters = writers.get(key) ?? [];
    const acknowledged = keyWriters.filter((w) => w.acknowledged);
    const final = finalReads.get(key);
    if (final === undefined) {
      if (acknowledged.length > 0) {
        reports.push({ key, kind: 'missing-final-read', detail: `${acknowledged.length} acknowledged writes but no final read` });
      }
      continue;
    }
    const report = (kind: LostWriteKind, detail: string): void => {
      reports.push({ key, kind, detail, final });
    };
    const shown = `${JSON.stringify(final.value)}@v${final.version}`;

    if (final.version < acknowledged.length) {
      report('version-too-low', `final ${shown} but ${acknowledged.length} writes were acknowledged`);
    }
    if (final.version > keyWriters.length) {
      report('version-too-high', `final ${shown} but at most ${keyWriters.length} writes may have applied`);
    }
    const namesFinal = acknowledged.find((w) => w.version === final.version && w.value !== final.value);
    if (namesFinal !== undefined || (final.version === 0 && final.value !== null)) {
      const other = namesFinal === undefined ? 'the initial absent state' : `an acknowledged write of ${JSON.stringify(namesFinal.value)}`;
      report('version-value-mismatch', `final ${shown} but v${final.version} is ${other}`);
    }

    // Writers of the final value; the initial state counts as a write of null long ago.
    const candidates = keyWriters.filter((w) => w.value === final.value);
    if (final.value === null) {
      candidates.push({ value: null, acknowledged: true, completeAt: -Infinity, invokeAt: -Infinity, version: 0 });
    }
    if (candidates.length === 0) {
      report('value-never-written', `final ${shown} was never written by an acknowledged or unknown write`);
      continue;
    }
    const overwrittenBy = (candidate: Writer): Writer | undefined =>
      acknowledged.find((later) => later.invokeAt > candidate.completeAt);
    if (candidates.every((candidate) => overwrittenBy(candidate) !== undefined)) {
      const latest = candidates.reduce((a, b) => (b.completeAt > a.completeAt ? b : a));
      const later = overwrittenBy(latest) as Writer;
      report(
        'value-overwritten',
        `final ${shown} but its last write completed at ${latest.completeAt}, before an acknowledged write of ` +
          `${JSON.stringify(later.value)} was invoked at ${later.invokeAt}`,
      );
    }
  }
  return reports;
}

/** Writes, deletes and cas that may have applied, by key. */
function writersByKey(operations: readonly Operation[]): Map<string, Writer[]> {
  const byKey = new Map<string, Writer[]>();
  for (const { op, outcome, invokeAt, completeAt } of operations) {
    if (op.type === 'read' || outcome.status === 'fail') continue;
    if (outcome.status === 'ok' && outcome.casFailed === true) continue;
    const acknowledged = outcome.status === 'ok';
    const writer: Writer = {
      value: op.value,
      acknowledged,
      invokeAt,
      completeAt: acknowledged ? (completeAt as number) : Infinity,
      version: acknowledged ? outcome.version : undefined,
    };
    const list = byKey.get(op.key);
    if (list === undefined) byKey.set(op.key, [writer]);
    else list.push(writer);
  }
  return byKey;
}
