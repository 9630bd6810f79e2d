/** Errors a Raft caller can handle. Tests and callers check `name`, never the message. */
import type { NodeId } from './types.js';

/** The proposal reached a peer that is not the leader; `leader` is its best guess (or null). */
export class NotLeaderError extends Error {
  override readonly name = 'NotLeaderError';
  constructor(readonly leader: NodeId | null) {
    super(leader === null ? 'not the leader; no leader known' : `not the leader; try ${leader}`);
  }
}

export type ProposalDropReason =
  /** A leadership transfer is in progress; retry at the new leader. */
  | 'transferring'
  /** Another configuration change is not committed yet. */
  | 'conf-change-pending'
  /** Too many uncommitted entries (the leader may be cut off from its quorum). */
  | 'too-many-uncommitted'
  /** The entry is larger than `maxEntryBytes`. */
  | 'entry-too-large'
  /** This leader has removed itself from the configuration and is about to step down. */
  | 'leader-removed'
  /** The configuration change makes no sense for the current configuration. */
  | 'invalid-conf-change';

/** The leader refused a proposal; `reason` says why (retrying later may succeed). */
export class ProposalDroppedError extends Error {
  override readonly name = 'ProposalDroppedError';
  constructor(readonly reason: ProposalDropReason, detail = '') {
    super(detail === '' ? `proposal dropped: ${reason}` : `proposal dropped: ${reason}: ${detail}`);
  }
}

/** A leadership transfer cannot start (target unknown, not a voter, or this peer is not leader). */
export class TransferError extends Error {
  override readonly name = 'TransferError';
}

/** `compact()` was asked for an index it cannot snapshot at (not applied yet, or already compacted). */
export class CompactionError extends Error {
  override readonly name = 'CompactionError';
}
