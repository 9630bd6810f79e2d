/**
 * Membership and failure-detector settings: one place for the defaults and the
 * reason behind each, and `validateMembershipConfig` that names the bad field.
 */
import { ConfigError } from '../errors.js';
import { MAX_ADDRS } from './codec.js';

export interface MembershipConfig {
  /** How often we publish our heartbeat. Default 500 ms: fast detection on a LAN at a tiny message rate. */
  heartbeatIntervalMs: number;
  /** How often the shell calls `tick`. Default 100 ms: verdicts land within a tenth of a second of phi crossing. */
  tickIntervalMs: number;
  /** Phi at or above which a silent member becomes suspect. Default 8: the Akka and Cassandra default (~1e-8 false-positive odds under the model). */
  phiThreshold: number;
  /** Floor on the inter-arrival std deviation. Default 100 ms: perfectly regular heartbeats must not make phi hair-triggered. */
  minStdDeviationMs: number;
  /** Pause added to the mean interval before phi rises. Default 1000 ms: tolerate GC and event-loop pauses of the sender. */
  acceptableHeartbeatPauseMs: number;
  /** Inter-arrival samples kept per member. Default 200: ~100 s of history at 500 ms, a stable mean that still adapts. */
  maxSampleSize: number;
  /** Assumed interval before real samples exist. Default 500 ms: equal to the heartbeat interval. */
  firstHeartbeatEstimateMs: number;
  /** Suspect → dead after this long still suspect. Default 1000 ms: time for the member to hear the suspicion and refute it. */
  suspicionTimeoutMs: number;
  /** How often we publish the whole member table. Default 1000 ms: heals lost gossip within about a second. */
  digestIntervalMs: number;
  /** Dead and left rows are forgotten after this long. Default 600000 ms (10 min): long enough that stale gossip cannot resurrect them. */
  reapAfterMs: number;
  /** Most rows in the member table, self included. Default 1024: bounds memory and digest size; newer peers beyond it are refused. */
  maxMembers: number;
  /** Most addresses kept per member. Default 16: a peer rarely listens on more; the codec refuses more than 16. */
  maxAddrsPerMember: number;
}

export const DEFAULT_MEMBERSHIP_CONFIG: Readonly<MembershipConfig> = Object.freeze({
  heartbeatIntervalMs: 500,
  tickIntervalMs: 100,
  phiThreshold: 8,
  minStdDeviationMs: 100,
  acceptableHeartbeatPauseMs: 1000,
  maxSampleSize: 200,
  firstHeartbeatEstimateMs: 500,
  suspicionTimeoutMs: 1000,
  digestIntervalMs: 1000,
  reapAfterMs: 600_000,
  maxMembers: 1024,
  maxAddrsPerMember: 16,
});

type Rule = (value: number) => string | null;

const positiveFinite: Rule = (v) => (Number.isFinite(v) && v > 0 ? null : 'must be a positive finite number');
const positiveInteger: Rule = (v) => (Number.isSafeInteger(v) && v > 0 ? null : 'must be a positive integer');
const atMost =
  (max: number, base: Rule): Rule =>
  (v) =>
    base(v) ?? (v <= max ? null : `must be at most ${max}`);

const RULES: Record<keyof MembershipConfig, Rule> = {
  heartbeatIntervalMs: positiveFinite,
  tickIntervalMs: positiveFinite,
  phiThreshold: atMost(1000, positiveFinite),
  minStdDeviationMs: positiveFinite,
  acceptableHeartbeatPauseMs: (v) => (Number.isFinite(v) && v >= 0 ? null : 'must be a finite number >= 0'),
  maxSampleSize: positiveInteger,
  firstHeartbeatEstimateMs: positiveFinite,
  suspicionTimeoutMs: positiveFinite,
  digestIntervalMs: positiveFinite,
  reapAfterMs: positiveFinite,
  maxMembers: positiveInteger,
  maxAddrsPerMember: atMost(MAX_ADDRS, positiveInteger),
};

/**
 * Merge `partial` over the defaults and check every field.
 * `undefined` values take the default; unknown keys are refused (they are typos).
 * @throws ConfigError naming the first bad field.
 */
export function validateMembershipConfig(partial: Partial<MembershipConfig> = {}): MembershipConfig {
  if (partial === null || typeof partial !== 'object') {
    throw new ConfigError('membership', 'must be an object');
  }
  for (const key of Object.keys(partial)) {
    if (!(key in RULES)) throw new ConfigError(key, 'unknown membership option');
  }
  const merged: MembershipConfig = { ...DEFAULT_MEMBERSHIP_CONFIG };
  for (const key of Object.keys(RULES) as (keyof MembershipConfig)[]) {
    const value: unknown = partial[key];
    if (value === undefined) continue;
    if (typeof value !== 'number') throw new ConfigError(key, 'must be a number');
    const problem = RULES[key](value);
    if (problem !== null) throw new ConfigError(key, `${problem} (got ${value})`);
    merged[key] = value;
  }
  return merged;
}
