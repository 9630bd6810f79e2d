/**
 * The sequential specification of one key of the store: a versioned register. The
 * linearizability checker judges histories against it, and the store must behave like it.
 *
 * Rules:
 * - A key starts absent at version 0: `{ value: null, version: 0 }`.
 * - Every applied write increments the version by exactly 1: a put, a delete and a
 *   successful cas alike. A delete leaves the key absent but keeps the advanced version
 *   (a tombstone): versions of a key never go back and never repeat, so a version names
 *   exactly one write. Deleting an absent key is an applied write too (it advances the
 *   version).
 * - A read returns the current value (null when absent) and the current version (the
 *   tombstone's version for a deleted key, 0 for a key never written).
 * - `cas(expectVersion, value)` applies when `expectVersion` is 0 and the key is absent
 *   (never written or deleted, whatever its version), or when `expectVersion` > 0 equals the
 *   current version (present or deleted). Otherwise it changes nothing and reports a
 *   mismatch (HTTP 412), optionally with the current version.
 * - A write or successful cas returns the new version.
 */
import type { KvOp, OkOutcome } from './history.js';

/** The state of one key. */
export interface RegisterState {
  /** Null when the key is absent (never written, or deleted). */
  value: string | null;
  /** How many writes have been applied to the key. */
  version: number;
}

/** Every key starts here. */
export const INITIAL_REGISTER: Readonly<RegisterState> = Object.freeze({ value: null, version: 0 });

/** Whether a cas expecting `expectVersion` applies to `state`. */
export function casMatches(state: Readonly<RegisterState>, expectVersion: number): boolean {
  return expectVersion === 0 ? state.value === null : state.version === expectVersion;
}

/**
 * Applies `op` to `state` sequentially: the new state and the outcome a correct store
 * reports (the key of `op` is not looked at).
 */
export function applyRegisterOp(
  state: Readonly<RegisterState>,
  op: KvOp,
): { state: RegisterState; outcome: OkOutcome } {
  switch (op.type) {
    case 'read':
      return { state: { ...state }, outcome: { status: 'ok', value: state.value, version: state.version } };
    case 'write': {
      const version = state.version + 1;
      return { state: { value: op.value, version }, outcome: { status: 'ok', version } };
    }
    case 'cas': {
      if (!casMatches(state, op.expectVersion)) {
        return { state: { ...state }, outcome: { status: 'ok', casFailed: true, version: state.version } };
      }
      const version = state.version + 1;
      return { state: { value: op.value, version }, outcome: { status: 'ok', version } };
    }
  }
}
