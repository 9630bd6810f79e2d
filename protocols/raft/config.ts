/**
 * Raft options, their defaults (in one place) and their validation. Times are in ticks: the shell
 * calls `RaftNode.tick()` every `tickIntervalMs`.
 */
import { ConfigError } from '../errors.js';

export interface RaftConfig {
  /**
   * Wall time of one tick, ms. Default 100: with the tick defaults below this gives etcd's and
   * hashicorp/raft's 100 ms heartbeat and 1000–2000 ms election timeout. The core never reads
   * it; the shell uses it to drive `tick()`.
   */
  tickIntervalMs: number;
  /**
   * Base election timeout, ticks. Default 10. Each term a follower picks a timeout uniformly in
   * [electionTicks, 2*electionTicks) so split votes resolve; the leader lease and check-quorum
   * use the base value.
   */
  electionTicks: number;
  /** Heartbeat interval, ticks. Default 1: an order of magnitude below the election timeout. */
  heartbeatTicks: number;
  /**
   * Campaign with a pre-vote round first. Default true: a partitioned peer cannot inflate terms.
   * With both `preVote` and `checkQuorum` off (plain Raft), a removed voter that missed its own
   * removal keeps campaigning with higher terms and can stall the cluster (Raft dissertation
   * §4.2.3); keep at least one of them on when membership changes.
   */
  preVote: boolean;
  /**
   * A leader steps down when it has not heard from a quorum within an election timeout, and
   * followers ignore vote requests while they hear from a live leader. Default true (etcd).
   */
  checkQuorum: boolean;
  /** Most entries in one append message. Default 64: bounds message size and catch-up bursts. */
  maxEntriesPerAppend: number;
  /**
   * Most entry bytes in one append message (at least one entry is always sent). Default 1 MiB:
   * with `maxEntriesPerAppend` this bounds a message well under the codec's size limit.
   */
  maxAppendBytes: number;
  /** Most unacknowledged append messages per follower. Default 64: bounded flow control. */
  maxInflightAppends: number;
  /**
   * Most entries a leader holds uncommitted before it drops proposals. Default 4096: a leader cut
   * off from its quorum must not grow its log without bound.
   */
  maxUncommittedEntries: number;
  /** Largest `data` of one proposed entry, bytes. Default 1 MiB + 4 KiB (a max value plus framing); at most 4 MiB. */
  maxEntryBytes: number;
  /**
   * Ticks a leader waits for a follower to acknowledge an InstallSnapshot before sending it
   * again. Default 20 (two election timeouts): a lost snapshot is retried, a large one is not
   * sent twice while in flight.
   */
  snapshotRetryTicks: number;
}

export const DEFAULT_RAFT_CONFIG: Readonly<RaftConfig> = Object.freeze({
  tickIntervalMs: 100,
  electionTicks: 10,
  heartbeatTicks: 1,
  preVote: true,
  checkQuorum: true,
  maxEntriesPerAppend: 64,
  maxAppendBytes: 1024 * 1024,
  maxInflightAppends: 64,
  maxUncommittedEntries: 4096,
  maxEntryBytes: 1024 * 1024 + 4096,
  snapshotRetryTicks: 20,
});

function requireInteger(field: keyof RaftConfig, value: unknown, min: number, max: number): void {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(field, `must be an integer in [${min}, ${max}], got ${String(value)}`);
  }
}

function requireBoolean(field: keyof RaftConfig, value: unknown): void {
  if (typeof value !== 'boolean') throw new ConfigError(field, `must be a boolean, got ${String(value)}`);
}

/** Throws `ConfigError` naming the first bad field. */
export function validateRaftConfig(config: RaftConfig): void {
  requireInteger('tickIntervalMs', config.tickIntervalMs, 1, 60_000);
  requireInteger('electionTicks', config.electionTicks, 2, 10_000);
  requireInteger('heartbeatTicks', config.heartbeatTicks, 1, 10_000);
  if (config.heartbeatTicks >= config.electionTicks) {
    throw new ConfigError('heartbeatTicks', 'must be smaller than electionTicks');
  }
  requireBoolean('preVote', config.preVote);
  requireBoolean('checkQuorum', config.checkQuorum);
  requireInteger('maxEntriesPerAppend', config.maxEntriesPerAppend, 1, 4096);
  requireInteger('maxAppendBytes', config.maxAppendBytes, 1, 4 * 1024 * 1024);
  requireInteger('maxInflightAppends', config.maxInflightAppends, 1, 4096);
  requireInteger('maxUncommittedEntries', config.maxUncommittedEntries, 1, 1_000_000);
  requireInteger('maxEntryBytes', config.maxEntryBytes, 1, 4 * 1024 * 1024);
  requireInteger('snapshotRetryTicks', config.snapshotRetryTicks, 1, 1_000_000);
}

/** Defaults overlaid with `overrides`, validated. */
export function resolveRaftConfig(overrides: Partial<RaftConfig> = {}): RaftConfig {
  const config: RaftConfig = { ...DEFAULT_RAFT_CONFIG, ...overrides };
  validateRaftConfig(config);
  return config;
}
