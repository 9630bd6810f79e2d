/**
 * Replication options, their defaults (in one place) and their validation. Times are in ms of the
 * `nowMs` the shell passes in; the core never reads a clock.
 */
import { ConfigError } from '../errors.js';

/** Largest key, UTF-8 bytes (DESIGN §7). */
export const MAX_KEY_BYTES = 1024;
/** Largest value, bytes (DESIGN §7). */
export const MAX_VALUE_BYTES = 1024 * 1024;
/** Most ops in one group (also the codec's limit). */
export const MAX_OPS_PER_GROUP = 1024;
/** Bytes a logged op costs beyond its key and value when sizing groups and messages (framing, version). */
export const OP_OVERHEAD_BYTES = 64;

export interface ReplicationConfig {
  /**
   * Writes are refused while the in-sync set is smaller, and a group commits only once at least
   * this many replicas (the primary included) hold it. Default 2 (DESIGN §7): one failure never
   * loses an acknowledged write. The shell passes the cluster setting.
   */
  minInSync: number;
  /**
   * A replica in the in-sync set that has not acknowledged a group (or the reconciliation point)
   * this long after it was sent is reported for removal. Default 500: several round trips plus an
   * fsync and a GC pause; shorter shrinks the set on every hiccup, longer stalls all writes of the
   * shard behind a dead backup.
   */
  ackTimeoutMs: number;
  /**
   * The bound that replaces `ackTimeoutMs` for a replica whose peer is still heard from (the shell
   * passes, with each tick, when each peer last sent any replication traffic): it is alive, only
   * slowed by a backlog — under a burst of megabyte values every ack waits behind other shards'
   * work. Shrinking then would only churn the in-sync sets, and shrinking both backups of a
   * shard would refuse its writes. Default 5000: a replica stuck on a live peer still leaves
   * within seconds; a silent peer's replicas still leave after `ackTimeoutMs`.
   */
  slowAckTimeoutMs: number;
  /**
   * The primary sends each replica an append (new groups, a retransmission from the replica's
   * last acknowledged group, or an empty heartbeat carrying the commit point) at least this
   * often. Default 50: lost messages are repaired well within `ackTimeoutMs`.
   */
  heartbeatIntervalMs: number;
  /**
   * The heartbeat interval for a replica with nothing to learn: in sync, holding our whole log,
   * and known (from its acknowledgements) to know our commit point, while no write waits. Such a
   * heartbeat repairs nothing, so an idle shard need not send ten a second to each replica (with
   * 64 shards that traffic was most of an idle peer's CPU). Any write, a lagging or catching-up
   * replica, or an unacknowledged commit point brings back `heartbeatIntervalMs` at once.
   * Default 1000; at least `heartbeatIntervalMs`.
   */
  idleHeartbeatIntervalMs: number;
  /**
   * A replica that is not in-sync (or sees a gap) and has heard nothing useful from the primary
   * asks it for catch-up this often. Default 200: cheap, and a restarted replica rejoins quickly.
   */
  catchUpRetryMs: number;
  /**
   * An in-sync change request still needed is repeated this often (the shell forwards requests
   * best effort). Default 300: a few coordinator heartbeats.
   */
  coordinatorRetryMs: number;
  /** A snapshot for a replica whose needed groups were trimmed is offered again after this. Default 2000. */
  snapshotRetryMs: number;
  /**
   * Most writes accepted but not yet sequenced into a group. Default 4096: four full groups;
   * beyond it writes are refused with OverloadedError instead of queueing without bound.
   */
  maxPendingWrites: number;
  /**
   * Most groups sequenced but not yet committed. Default 1: writes that arrive while a group is
   * in flight are batched into the next group (PacificA group commit); more pipelines groups at
   * the cost of more work lost on a failover.
   */
  maxGroupsInFlight: number;
  /** Most ops per group. Default 1024 (the codec's limit). */
  maxOpsPerGroup: number;
  /**
   * Most bytes of keys and values (plus OP_OVERHEAD_BYTES per op) in one group; a single larger op
   * still forms a group of its own. Default 1 MiB: thousands of small writes share a group, while
   * one group (a storage batch, a message) stays small enough to cross, persist and be
   * acknowledged well within `ackTimeoutMs`, and to yield the event loop between groups.
   */
  maxGroupBytes: number;
  /**
   * Groups sent to a replica and not acknowledged this long are sent again, from its last
   * acknowledged group. Default 300: a broken stream loses what was on it, and this repairs it
   * within `ackTimeoutMs`; yet it is several times what a full append takes to cross, persist
   * and be acknowledged here under load, so a slow replica is not mistaken for a lossy one (a
   * resend on every heartbeat sent a catching-up replica the same megabytes over and over).
   */
  retransmitTimeoutMs: number;
  /**
   * Most bytes of groups in flight to one replica (sent, not acknowledged). Default 4 MiB: a few
   * appends keep a catching-up replica busy, while a shard's whole log never queues on the wire
   * ahead of other shards' acknowledgements. One group is always allowed.
   */
  maxInflightBytes: number;
  /** Most groups in one append message (the catch-up batch). Default 64. */
  maxGroupsPerAppend: number;
  /**
   * Most group bytes in one append message (at least one group is always sent). Default 1 MiB:
   * one message costs a bounded slice of the event loop to encode and decode (leases and
   * heartbeats keep their timing under bulk traffic), and stays far under the frame limit.
   */
  maxAppendBytes: number;
  /**
   * Most out-of-order appends a backup holds while waiting for the gap to fill. Default 16: covers
   * ordinary reordering; a longer gap is repaired by catch-up instead.
   */
  maxBufferedAppends: number;
  /**
   * Committed and applied groups kept in the log (memory and disk) for lagging replicas. Default
   * 256; a replica further behind gets a snapshot.
   */
  logRetainGroups: number;
  /** Byte bound of the same window. Default 32 MiB. */
  logRetainBytes: number;
  /**
   * While a replica is being sent a snapshot, the groups after the applied seq the snapshot was
   * asked at are kept beyond the window above (else a shard written faster than the snapshot
   * moves would need snapshot after snapshot and never catch up), up to this many bytes.
   * Default 64 MiB.
   */
  snapshotPinBytes: number;
  /**
   * Applied groups whose versions the core still remembers, so that a version the shell read just
   * before an apply completed is still corrected. Default 32: far more than one read can straddle;
   * an older read gets StaleVersionError.
   */
  versionHistoryGroups: number;
}

export const DEFAULT_REPLICATION_CONFIG: Readonly<ReplicationConfig> = Object.freeze({
  minInSync: 2,
  ackTimeoutMs: 500,
  slowAckTimeoutMs: 5000,
  heartbeatIntervalMs: 50,
  idleHeartbeatIntervalMs: 1000,
  catchUpRetryMs: 200,
  coordinatorRetryMs: 300,
  snapshotRetryMs: 2000,
  maxPendingWrites: 4096,
  maxGroupsInFlight: 1,
  maxOpsPerGroup: MAX_OPS_PER_GROUP,
  maxGroupBytes: 1024 * 1024,
  retransmitTimeoutMs: 300,
  maxInflightBytes: 4 * 1024 * 1024,
  maxGroupsPerAppend: 64,
  maxAppendBytes: 1024 * 1024,
  maxBufferedAppends: 16,
  logRetainGroups: 256,
  logRetainBytes: 32 * 1024 * 1024,
  snapshotPinBytes: 64 * 1024 * 1024,
  versionHistoryGroups: 32,
});

function requireInteger(field: keyof ReplicationConfig, value: unknown, min: number, max: number): void {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(field, `must be an integer in [${min}, ${max}], got ${String(value)}`);
  }
}

/** Throws `ConfigError` naming the first bad field. */
export function validateReplicationConfig(config: ReplicationConfig): void {
  requireInteger('minInSync', config.minInSync, 1, 64);
  requireInteger('ackTimeoutMs', config.ackTimeoutMs, 1, 600_000);
  requireInteger('slowAckTimeoutMs', config.slowAckTimeoutMs, 1, 600_000);
  if (config.slowAckTimeoutMs < config.ackTimeoutMs) throw new ConfigError('slowAckTimeoutMs', 'must be at least ackTimeoutMs');
  requireInteger('heartbeatIntervalMs', config.heartbeatIntervalMs, 1, 600_000);
  if (config.heartbeatIntervalMs >= config.ackTimeoutMs) {
    throw new ConfigError('heartbeatIntervalMs', 'must be smaller than ackTimeoutMs (a lost append must be resent before the timeout)');
  }
  requireInteger('idleHeartbeatIntervalMs', config.idleHeartbeatIntervalMs, 1, 600_000);
  if (config.idleHeartbeatIntervalMs < config.heartbeatIntervalMs) {
    throw new ConfigError('idleHeartbeatIntervalMs', 'must be at least heartbeatIntervalMs');
  }
  requireInteger('catchUpRetryMs', config.catchUpRetryMs, 1, 600_000);
  requireInteger('coordinatorRetryMs', config.coordinatorRetryMs, 1, 600_000);
  requireInteger('snapshotRetryMs', config.snapshotRetryMs, 1, 3_600_000);
  requireInteger('maxPendingWrites', config.maxPendingWrites, 1, 1_000_000);
  requireInteger('maxGroupsInFlight', config.maxGroupsInFlight, 1, 1024);
  requireInteger('maxOpsPerGroup', config.maxOpsPerGroup, 1, MAX_OPS_PER_GROUP);
  requireInteger('maxGroupBytes', config.maxGroupBytes, 1, 64 * 1024 * 1024);
  requireInteger('retransmitTimeoutMs', config.retransmitTimeoutMs, 1, 600_000);
  if (config.retransmitTimeoutMs >= config.ackTimeoutMs) {
    throw new ConfigError('retransmitTimeoutMs', 'must be smaller than ackTimeoutMs (a lost append must be resent before the replica is reported late)');
  }
  requireInteger('maxInflightBytes', config.maxInflightBytes, 1, 1024 * 1024 * 1024);
  requireInteger('maxGroupsPerAppend', config.maxGroupsPerAppend, 1, 1024);
  requireInteger('maxAppendBytes', config.maxAppendBytes, 1, 8 * 1024 * 1024);
  requireInteger('maxBufferedAppends', config.maxBufferedAppends, 0, 1024);
  requireInteger('logRetainGroups', config.logRetainGroups, 0, 1_000_000);
  requireInteger('logRetainBytes', config.logRetainBytes, 0, 4 * 1024 * 1024 * 1024);
  requireInteger('snapshotPinBytes', config.snapshotPinBytes, 0, 4 * 1024 * 1024 * 1024);
  requireInteger('versionHistoryGroups', config.versionHistoryGroups, 0, 1_000_000);
}

/** Defaults overlaid with `overrides`, validated. */
export function resolveReplicationConfig(overrides: Partial<ReplicationConfig> = {}): ReplicationConfig {
  const config: ReplicationConfig = { ...DEFAULT_REPLICATION_CONFIG, ...overrides };
  validateReplicationConfig(config);
  return config;
}
