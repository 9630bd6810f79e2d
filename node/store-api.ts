/**
 * The key-value store as a user of a peer sees it (library, HTTP API and CLI all map onto this).
 * The implementation is node/store-service.ts; the HTTP mapping of each error code is
 * STORE_ERROR_HTTP_STATUS.
 */
import type { ShardAssignment } from '../protocols/cluster-map/types.js';

export type ReadConsistency = 'strong' | 'any';
export const READ_CONSISTENCIES: readonly ReadConsistency[] = ['strong', 'any'];

export type ReadPolicy = 'round-robin' | 'random' | 'weighted' | 'least-latency';
export const READ_POLICIES: readonly ReadPolicy[] = ['round-robin', 'random', 'weighted', 'least-latency'];

export interface PutOptions {
  /**
   * Compare-and-set: write only if the key's current version is this (0: only if the key is
   * absent, never written or deleted). A mismatch throws StoreError `version_mismatch`.
   */
  ifVersion?: number;
}

export interface GetOptions {
  /** `strong` (default): the primary, under a valid lease. `any`: one in-sync replica (--read-policy). */
  consistency?: ReadConsistency;
}

export interface WriteOutcome {
  /** The key's version after the write (every put and delete adds 1). */
  version: number;
}

export interface GetOutcome {
  value: Uint8Array;
  version: number;
}

export type StoreErrorCode =
  /** Empty key, key over the key limit, or not well-formed UTF-8 / UTF-16. */
  | 'invalid_key'
  /** A bad option (ifVersion not a non-negative integer, unknown consistency). */
  | 'invalid_request'
  /** Value over the value limit. */
  | 'value_too_large'
  /** Compare-and-set failed; `current` has the key's current version. */
  | 'version_mismatch'
  /** No coordinator, no serving primary for the shard yet, shard assignment not made yet. Retry. */
  | 'unavailable'
  /** The shard's in-sync set is smaller than minInSync: writes refused. Retry later. */
  | 'not_enough_replicas'
  /** Too many writes queued at the primary. Retry. */
  | 'overloaded'
  /** The write was sent but its outcome is unknown (primary died or timed out): it may or may not have been applied. */
  | 'indeterminate'
  /** This peer is stopping. */
  | 'stopping';

export const STORE_ERROR_HTTP_STATUS: Readonly<Record<StoreErrorCode, number>> = Object.freeze({
  invalid_key: 400,
  invalid_request: 400,
  value_too_large: 413,
  version_mismatch: 412,
  unavailable: 503,
  not_enough_replicas: 503,
  overloaded: 503,
  indeterminate: 503,
  stopping: 503,
});

/** Codes worth retrying as they are: nothing was applied, and the condition passes. */
export const RETRYABLE_STORE_ERRORS: ReadonlySet<StoreErrorCode> = new Set<StoreErrorCode>(['unavailable', 'not_enough_replicas', 'overloaded', 'stopping']);

/** Every store failure a caller can handle; check `code`, never the message. */
export class StoreError extends Error {
  override readonly name = 'StoreError';
  constructor(
    readonly code: StoreErrorCode,
    message: string,
    /** For `version_mismatch`: the key's current version and whether it is present. */
    readonly current?: { version: number; present: boolean },
    /** For retryable codes: a hint in seconds (HTTP Retry-After). */
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
  }

  get retryable(): boolean {
    return RETRYABLE_STORE_ERRORS.has(this.code);
  }
}

/** Limits a peer enforces on client input. */
export interface StoreLimits {
  /** Largest key, UTF-8 bytes: 1..1024, default 1024. */
  maxKeyBytes: number;
  /** Largest value, bytes: 0..1 MiB, default 1 MiB. */
  maxValueBytes: number;
}

/** One shard as `GET /v1/shards` lists it. */
export interface ShardInfo extends ShardAssignment {
  shard: number;
  /** The primary's last sequence number as last reported (null when unknown here). */
  seq: number | null;
}

/** Per peer: how many shards it is primary of and how many replicas it holds. */
export interface ShardSummary {
  shardCount: number;
  replicationFactor: number;
  minInSync: number;
  /**
   * The in-sync count writes need now: minInSync, but at most the members that have not left,
   * so a cluster growing from one peer takes writes (below minInSync only while it has fewer peers).
   */
  effectiveMinInSync: number;
  /** Shards with a primary and at least effectiveMinInSync in-sync replicas. */
  writableShards: number;
  /** Replicas being filled (in a shard's replicas, not yet in its in-sync set). */
  movesInFlight: number;
  /** Members being drained (their replicas move to the others). */
  draining: string[];
  perPeer: Record<string, { primaries: number; replicas: number }>;
}

/** The store operations of a running peer. */
export interface KvApi {
  put(key: string, value: Uint8Array | string, options?: PutOptions): Promise<WriteOutcome>;
  /** Null when the key is absent (never written, or deleted). */
  get(key: string, options?: GetOptions): Promise<GetOutcome | null>;
  /** Deletes the key (a tombstone keeps its version). Deleting an absent key still succeeds. */
  delete(key: string): Promise<WriteOutcome>;
}
