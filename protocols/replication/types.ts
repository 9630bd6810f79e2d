/**
 * Types of the per-shard primary-backup replication core: the key-value model (ops, versions,
 * tombstones), the op log (groups), the wire messages, and what the core hands to the shell.
 * See replica.ts for the shell contract.
 */

/** A peer id (a libp2p peer id string in production, `r1`, `r2`, ... in tests). */
export type ReplicaId = string;

/**
 * Per-key version model (shared with the linearizability checker):
 *
 * - A key that was never written is absent with version 0.
 * - Every applied `put`, every `delete` and every successful `cas` sets
 *   version = previous version + 1.
 * - A `delete` leaves the key absent but keeps its version: the store keeps a tombstone
 *   `{ present: false, version }` so the counter never goes back (a later put continues from it).
 * - `cas(key, expectVersion, value)` succeeds when `casMatches(expectVersion, current)`:
 *   `expectVersion` equals the current version, or `expectVersion` is 0 and the key is absent
 *   (never written or deleted). A successful cas is a put; a failed one changes nothing and
 *   reports the current version.
 */
export interface KeyVersion {
  /** 0 when the key was never written. */
  version: number;
  /** False when absent (never written, or deleted: a tombstone). */
  present: boolean;
}

/** A write a client asks for. `key` is a string of at most 1 KiB UTF-8, `value` at most 1 MiB. */
export type WriteOp =
  | { kind: 'put'; key: string; value: Uint8Array }
  | { kind: 'delete'; key: string }
  | { kind: 'cas'; key: string; expectVersion: number; value: Uint8Array };

/**
 * A mutation as it sits in the op log: already resolved by the primary (a successful cas is a
 * `put`, a failed one is not logged), carrying the version it sets. Applying it is therefore
 * idempotent: `data[key] = { value, version }` or `data[key] = tombstone(version)`.
 */
export type LoggedOp =
  | { kind: 'put'; key: string; value: Uint8Array; version: number }
  | { kind: 'delete'; key: string; version: number };

/**
 * One group commit: the writes the primary batched under one sequence number. Written to the op
 * log and to the data as one storage batch, sent to each backup in one message.
 */
export interface LogGroup {
  /** Per-shard sequence number: 1, 2, 3, ... without gaps. */
  seq: number;
  /** Epoch of the primary that sequenced the group. (seq, epoch) names one group uniquely. */
  epoch: number;
  /** At most 1024 ops. */
  ops: LoggedOp[];
}

export type ReadConsistency = 'strong' | 'any';

/** A write handed to the primary's core by its shell. */
export interface WriteRequest {
  /** The shell's id for this request, echoed in the answer; unique among pending requests. */
  requestId: number;
  op: WriteOp;
  /**
   * The key's version in the shell's durable data (absent and never written: `{ version: 0,
   * present: false }`), read before calling `write`. The core overlays the versions of groups
   * sequenced but not yet applied to the data (see VersionOverlay).
   */
  durable: KeyVersion;
  /**
   * Every group up to this sequence number had been applied to the data (its storage batch had
   * completed) before the shell started the read of `durable`. Later applies may or may not show.
   */
  durableAtSeq: number;
}

/** The result of a write the primary accepted and committed. */
export type WriteResult =
  /** The put, delete or cas took effect and set `version`; it is in group `seq`. */
  | { applied: true; version: number; seq: number }
  /** A cas whose expectation did not hold; nothing changed. */
  | { applied: false; current: KeyVersion };

/** The answer to one accepted write. */
export type WriteAnswer =
  | { requestId: number; ok: true; result: WriteResult }
  /** `error` is a NotPrimaryError, NotEnoughReplicasError or IndeterminateWriteError. */
  | { requestId: number; ok: false; error: Error };

/**
 * A request the core makes of the coordinator. Both are conditional on `epoch`: the coordinator
 * applies one only if the shard's assignment is still at `epoch` and `from` is its primary (and,
 * for shrink, `replica` is in the in-sync set; for expand, in `replicas` but not in-sync), and
 * then bumps the epoch. A stale request is dropped; the core asks again at the new epoch.
 */
export interface InSyncChangeRequest {
  /**
   * `renew-epoch`: the primary restarted at `epoch` (it may have sent groups it never persisted,
   * see replica.ts): bump the epoch without other change (`replica` is `from`).
   */
  kind: 'shrink-in-sync' | 'expand-in-sync' | 'renew-epoch';
  shard: number;
  /** The primary making the request. */
  from: ReplicaId;
  replica: ReplicaId;
  epoch: number;
}

/** What a replica reports to the coordinator (piggybacked on lease renewals). */
export interface ReplicaProgress {
  shard: number;
  /** The highest epoch this replica has accepted. */
  epoch: number;
  /** Its last sequence number in the op log. */
  lastSeq: number;
  /** The epoch of the group at `lastSeq` (0 when empty). */
  lastEpoch: number;
  /** Highest sequence it knows committed. */
  commitSeq: number;
}

export type ReplicaRole = 'primary' | 'backup' | 'removed';

/** A read-only snapshot of the core for status pages, tests and the simulation. */
export interface ReplicaStatus {
  shard: number;
  id: ReplicaId;
  role: ReplicaRole;
  epoch: number;
  /** The primary at `epoch` as far as this replica knows. */
  primary: ReplicaId | null;
  /** Primary at the current epoch, lease valid: it may sequence writes and serve strong reads. */
  serving: boolean;
  /** Primary that has brought its in-sync set to its sequence (reconciliation done). */
  reconciled: boolean;
  lastSeq: number;
  commitSeq: number;
  /** Highest sequence the shell confirmed applied to the data (through `advance`). */
  appliedSeq: number;
  /** Log entries at or below this are trimmed (or never held). */
  trimSeq: number;
  inSync: ReplicaId[];
  pendingWrites: number;
  groupsInFlight: number;
}

/** The replica's small durable record (Ready.hardState). */
export interface ReplicaHardState {
  /** The highest epoch accepted. */
  epoch: number;
  /**
   * Replicas this replica, as primary, asked the coordinator at `epoch` to add to the in-sync set.
   * It counts them for commits until the epoch changes, also across a restart: the coordinator
   * may still apply the request.
   */
  expanding: ReplicaId[];
}

/** The durable state the shell recovered from disk at start: exactly what earlier Readys persisted. */
export interface RecoveredReplicaState {
  /** The highest epoch accepted (from `Ready.hardState`); 0 for a new replica. */
  epoch: number;
  /** From `Ready.hardState`; default none. */
  expanding?: ReplicaId[];
  /** Highest group applied to the data (stored in the same batch as the data); 0 for none. */
  appliedSeq: number;
  /** The epoch of group `appliedSeq` (0 for none). */
  appliedEpoch: number;
  /**
   * The op log: contiguous groups. Groups at or below `appliedSeq` are optional (the log may have
   * been trimmed) but there must be no gap after `appliedSeq`.
   */
  log: LogGroup[];
}

/** Header of a shard snapshot stream (the data travels out of band, see replica.ts). */
export interface SnapshotMeta {
  shard: number;
  /** Epoch of the primary sending it. */
  epoch: number;
  from: ReplicaId;
  /** The data holds every group up to and including `seq` (all committed), nothing after. */
  seq: number;
  /** Epoch of group `seq`. */
  seqEpoch: number;
}

// ---------------------------------------------------------------------------------------------
// Wire messages. Protocol id: `/shoal/replication/1.0.0`. Every message names the shard, the
// sender's epoch, the sender and the receiver.
// ---------------------------------------------------------------------------------------------

interface MessageBase {
  shard: number;
  epoch: number;
  from: ReplicaId;
  to: ReplicaId;
}

/**
 * Primary → replica: groups after `prevSeq` (possibly none: a heartbeat or a probe). The replica
 * accepts only if its group at `prevSeq` has epoch `prevEpoch` (log matching, as Raft's
 * prevLogIndex/prevLogTerm).
 */
export interface AppendMessage extends MessageBase {
  type: 'append';
  /**
   * The primary's log holds groups of earlier epochs only up to here; everything after is of
   * `epoch`. A replica drops its groups of earlier epochs after this point: the primary never had
   * them, so they were never acknowledged (reconciliation).
   */
  epochStartSeq: number;
  prevSeq: number;
  prevEpoch: number;
  /** Contiguous: groups[k].seq === prevSeq + 1 + k. */
  groups: LogGroup[];
  /** The primary's commit point: groups up to here are on every in-sync replica. */
  commitSeq: number;
}

/**
 * Replica → primary: "my log matches yours up to `matchSeq`, durably" (sent only after the
 * groups are persisted).
 */
export interface AppendAckMessage extends MessageBase {
  type: 'append-ack';
  matchSeq: number;
  /**
   * The replica's commit point when it acknowledged: once it has the primary's, an idle primary
   * heartbeats it only every `idleHeartbeatIntervalMs`. Pacing only; safety never rests on it.
   */
  commitSeq: number;
}

/**
 * Replica → primary: "send me the groups after `afterSeq`". Sent on a gap, on a mismatch (then
 * `afterSeq` is the replica's commit point, where logs surely agree), and periodically by a
 * replica that is not in-sync and hears nothing.
 */
export interface CatchUpMessage extends MessageBase {
  type: 'catch-up';
  afterSeq: number;
}

/** Header of a snapshot stream (primary → replica); the shard data follows out of band. */
export interface SnapshotMessage extends MessageBase {
  type: 'snapshot';
  seq: number;
  seqEpoch: number;
}

export type ReplicationMessage = AppendMessage | AppendAckMessage | CatchUpMessage | SnapshotMessage;
export type ReplicationMessageType = ReplicationMessage['type'];

/** A snapshot the shell must send: a copy of this replica's applied shard data, to `to`. */
export interface SnapshotToSend {
  shard: number;
  to: ReplicaId;
  /** The sender's epoch, to put in the header. */
  epoch: number;
}

/**
 * Everything the shell must do after the core changed. Order (see replica.ts):
 * 1. persist `hardState`, then the log changes (`truncateLogAfterSeq`, `appendLog`), and apply
 *    `apply` to the data with the applied sequence number, durably (may be one storage batch);
 * 2. then send `messages` and `snapshots`;
 * 3. then forward `coordinatorRequests` (`answers` may go to clients at once, before 1);
 * 4. `trimLogThroughSeq` may be done any time after 1;
 * 5. call `advance(ready)` once 1 is durable.
 */
export interface ReplicationReady {
  /**
   * Persist before sending or forwarding anything of this Ready: the highest accepted epoch, and
   * the replicas this primary has asked (at that epoch) to add to the in-sync set.
   */
  hardState?: ReplicaHardState;
  /** Delete op-log groups with seq > this before appending `appendLog`. */
  truncateLogAfterSeq?: number;
  /** Groups to append to the op log, contiguous. */
  appendLog: LogGroup[];
  /** Committed groups to apply to the data, in order; store the last one's seq and epoch with them. */
  apply: LogGroup[];
  /** Op-log groups with seq ≤ this may be deleted (every in-sync replica has them, and they are applied). */
  trimLogThroughSeq?: number;
  /** Send only after everything above is durable (the primary's early appends are taken with takeEarlyMessages). */
  messages: ReplicationMessage[];
  snapshots: SnapshotToSend[];
  /** Answers to clients: all about committed groups (or writes that never happened), so they may go before 1. */
  answers: WriteAnswer[];
  /** Forward to the coordinator (best effort: the core asks again while still needed). */
  coordinatorRequests: InSyncChangeRequest[];
}
