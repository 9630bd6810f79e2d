/**
 * Shard controller options: defaults with the reason for each, and their validation (throws a
 * ConfigError naming the field). Times are in ms of the `nowMs` the shell passes in.
 */
import { ConfigError } from '../errors.js';
import { DEFAULT_PLACEMENT_OPTIONS, validatePlacementOptions } from '../placement/index.js';

export interface ShardControllerOptions {
  /**
   * Length of the lease the coordinator grants with each renewal. Required, no default: it must
   * be the value the shell tells the peers (it decides when a silent primary is known to have
   * stopped serving). A peer's lease, as the coordinator sees it, expires at the receive time of
   * its last renewal + `leaseMs`.
   */
  leaseMs: number;
  /**
   * The first assignment waits for `replicationFactor` active members, or this long after the
   * controller first saw the bootstrapped map without shards. Default 3000: long enough for the
   * peers started together to join (so the first placement is not immediately moved), short
   * enough that a single-peer cluster starts serving quickly.
   */
  initialAssignmentDelayMs?: number;
  /**
   * Most replicas a peer is catching up on at once (in `replicas`, not yet in-sync, on a shard
   * with a primary); rebalancing adds no more to it until some finish. Default 4 (DESIGN §7,
   * Riak's transfer limit): a joining peer is not flooded with snapshots, yet each snapshot
   * stream (one chunk in flight) waits for round trips, so a few run side by side (measured:
   * growing 3 → 5 with 100 MB settled in 24 s with 4, 36 s with 2).
   */
  maxCatchUpsPerPeer?: number;
  /**
   * Most replicas one primary is sending at once (moves whose shard it leads). Default 4: its
   * disk and uplink are shared by its sends (and by --rebalance-rate).
   */
  maxSendsPerPeer?: number;
  /**
   * Most moves (replicas being filled) in the whole cluster at once. Default 32: enough to keep
   * every peer of a mid-sized cluster busy, few enough that writes keep their share.
   */
  maxMovesInFlight?: number;
  /**
   * A dead member keeps its replicas (and its place in the target placement) this long before
   * they are re-created elsewhere, ms. Default 30 000 (DESIGN §7): a restart should not move every
   * shard. The in-sync sets shrink at once anyway (the primary's ack timeout).
   */
  reReplicateAfterMs?: number;
  /**
   * A catching-up replica whose reported log has not advanced this long while its primary's is
   * ahead (or that has reported nothing) is abandoned: removed from the shard, which frees its
   * catch-up slot for other moves, and reported. Default 60 000: many times what a shard's
   * catch-up takes when it works (a few seconds for tens of MB here), yet a stuck move no longer
   * holds a peer's slot for good.
   */
  catchUpStallMs?: number;
  /** An abandoned catch-up of a shard on a peer is not tried again for this long, ms. Default 60 000. */
  catchUpRetryAfterMs?: number;
  /** Placement: virtual nodes per unit of capacity. Default: the placement default (128). */
  vnodesPerUnitCapacity?: number;
  /** Placement: bounded-load factor. Default: the placement default (1.25). */
  loadFactor?: number;
}

export type ResolvedShardControllerOptions = Required<ShardControllerOptions>;

export const DEFAULT_SHARD_CONTROLLER_OPTIONS: Readonly<Omit<ResolvedShardControllerOptions, 'leaseMs'>> = Object.freeze({
  initialAssignmentDelayMs: 3000,
  maxCatchUpsPerPeer: 4,
  maxSendsPerPeer: 4,
  maxMovesInFlight: 32,
  reReplicateAfterMs: 30_000,
  catchUpStallMs: 60_000,
  catchUpRetryAfterMs: 60_000,
  vnodesPerUnitCapacity: DEFAULT_PLACEMENT_OPTIONS.vnodesPerUnitCapacity,
  loadFactor: DEFAULT_PLACEMENT_OPTIONS.loadFactor,
});

const KEYS: ReadonlyArray<keyof ShardControllerOptions> = [
  'leaseMs',
  'initialAssignmentDelayMs',
  'maxCatchUpsPerPeer',
  'maxSendsPerPeer',
  'maxMovesInFlight',
  'reReplicateAfterMs',
  'catchUpStallMs',
  'catchUpRetryAfterMs',
  'vnodesPerUnitCapacity',
  'loadFactor',
];

/**
 * Fill in the defaults and check every field.
 * @throws ConfigError naming the first bad field (unknown keys are refused: they are typos).
 */
export function validateShardControllerOptions(opts: ShardControllerOptions): ResolvedShardControllerOptions {
  if (opts === null || typeof opts !== 'object') throw new ConfigError('options', 'must be an object');
  for (const key of Object.keys(opts)) {
    if (!KEYS.includes(key as keyof ShardControllerOptions)) throw new ConfigError(key, 'is not a shard controller option');
  }
  const resolved: ResolvedShardControllerOptions = { ...DEFAULT_SHARD_CONTROLLER_OPTIONS, leaseMs: opts.leaseMs };
  for (const key of KEYS) {
    const value = opts[key];
    if (value !== undefined) resolved[key] = value;
  }
  const { leaseMs, initialAssignmentDelayMs, maxCatchUpsPerPeer } = resolved;
  if (typeof leaseMs !== 'number' || !Number.isFinite(leaseMs) || leaseMs <= 0) throw new ConfigError('leaseMs', 'must be a positive number');
  if (typeof initialAssignmentDelayMs !== 'number' || !Number.isFinite(initialAssignmentDelayMs) || initialAssignmentDelayMs < 0) {
    throw new ConfigError('initialAssignmentDelayMs', 'must be a number ≥ 0');
  }
  for (const key of ['maxCatchUpsPerPeer', 'maxSendsPerPeer', 'maxMovesInFlight'] as const) {
    const v = key === 'maxCatchUpsPerPeer' ? maxCatchUpsPerPeer : resolved[key];
    if (!Number.isSafeInteger(v) || v < 1) throw new ConfigError(key, 'must be an integer ≥ 1');
  }
  if (typeof resolved.reReplicateAfterMs !== 'number' || !Number.isFinite(resolved.reReplicateAfterMs) || resolved.reReplicateAfterMs < 0) {
    throw new ConfigError('reReplicateAfterMs', 'must be a number ≥ 0');
  }
  for (const key of ['catchUpStallMs', 'catchUpRetryAfterMs'] as const) {
    const v = resolved[key];
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new ConfigError(key, 'must be a positive number');
  }
  validatePlacementOptions({ vnodesPerUnitCapacity: resolved.vnodesPerUnitCapacity, loadFactor: resolved.loadFactor });
  return resolved;
}
