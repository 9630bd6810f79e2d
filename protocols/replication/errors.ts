/** Errors a replication caller can handle. Callers and tests check `name`, never the message. */
import type { ReplicaId } from './types.js';

export type NotPrimaryReason =
  /** Another replica is primary at this epoch (see `primary`), or none is known. */
  | 'not-primary'
  /** This replica is primary but its lease has lapsed (or was never granted since start). */
  | 'no-lease'
  /** A newer epoch exists than the assignment this replica holds; it waits for the new map. */
  | 'stale-epoch'
  /** A newly promoted primary has not yet brought its in-sync set to its sequence. */
  | 'reconciling'
  /**
   * This replica restarted while primary: it may have sent groups it never persisted, so it does
   * not sequence at that epoch again and waits for the coordinator to bump it (a fresh epoch).
   */
  | 'restarted';

/** The request reached a replica that may not serve it now; `primary` is the best hint (or null). */
export class NotPrimaryError extends Error {
  override readonly name = 'NotPrimaryError';
  constructor(
    readonly primary: ReplicaId | null,
    readonly epoch: number,
    readonly reason: NotPrimaryReason,
  ) {
    super(`not serving as primary (${reason}) at epoch ${epoch}${primary === null ? '' : `; try ${primary}`}`);
  }
}

/** The in-sync set is smaller than `minInSync`: writes are refused until a replica catches up. */
export class NotEnoughReplicasError extends Error {
  override readonly name = 'NotEnoughReplicasError';
  constructor(
    readonly inSync: number,
    readonly minInSync: number,
  ) {
    super(`in-sync set has ${inSync} replicas, fewer than minInSync ${minInSync}`);
  }
}

/**
 * The write was sequenced and may have reached some replicas, but this primary lost its role
 * before the write committed: it may or may not take effect (a linearizability checker records it
 * as indeterminate). Retrying a put is safe; retrying a cas may fail on its own effect.
 */
export class IndeterminateWriteError extends Error {
  override readonly name = 'IndeterminateWriteError';
  constructor(readonly seq: number) {
    super(`write in group ${seq} has an unknown outcome: the primary lost its role before it committed`);
  }
}

/** Too many writes are waiting at this primary (`maxPendingWrites`); retry later. */
export class OverloadedError extends Error {
  override readonly name = 'OverloadedError';
  constructor(readonly limit: number) {
    super(`too many pending writes (limit ${limit})`);
  }
}

/**
 * The version the shell read is older than the versions the core still remembers
 * (`durableAtSeq` below the overlay floor): read the key again and retry.
 */
export class StaleVersionError extends Error {
  override readonly name = 'StaleVersionError';
  constructor(
    readonly durableAtSeq: number,
    readonly floorSeq: number,
  ) {
    super(`version read at seq ${durableAtSeq} is older than the overlay floor ${floorSeq}; read again`);
  }
}

/** An `any` read at a replica that is not in the in-sync set (it may miss acknowledged writes). */
export class NotInSyncError extends Error {
  override readonly name = 'NotInSyncError';
  constructor(readonly primary: ReplicaId | null) {
    super('this replica is not in the in-sync set');
  }
}

/** A request the shell should have refused (key or value too large, bad expectVersion or version read). */
export class InvalidRequestError extends Error {
  override readonly name = 'InvalidRequestError';
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
  }
}

/** A broken replication invariant: the core is wrong or its input was corrupted. Crashes on purpose. */
export class ReplicationInvariantError extends Error {
  override readonly name = 'ReplicationInvariantError';
}

export function assertReplication(condition: boolean, message: string): asserts condition {
  if (!condition) throw new ReplicationInvariantError(message);
}
