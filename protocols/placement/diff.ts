/**
 * The difference between two replica assignments, shard by shard.
 */
import { ConfigError } from '../errors.js';

export interface ShardReplicaChange {
  shard: number;
  /** Peers holding the shard after but not before, in `after`'s order. */
  added: string[];
  /** Peers holding the shard before but not after, in `before`'s order. */
  removed: string[];
}

/**
 * The replica changes from `before` to `after` (each `assignment[shard]` a list of peer ids),
 * one entry per shard whose replica set changed, in shard order. A reordering of the same peers
 * (a new preferred primary) is not a replica change and is not listed. An empty `before` (no
 * assignment yet) or `after` (all gone) counts as every shard having no replicas.
 * @throws ConfigError('shardCount') when both are non-empty and differ in length: the shard count
 *   is fixed at bootstrap, so that is a caller's bug.
 */
export function diffAssignments(before: readonly (readonly string[])[], after: readonly (readonly string[])[]): ShardReplicaChange[] {
  if (before.length > 0 && after.length > 0 && before.length !== after.length) {
    throw new ConfigError('shardCount', `assignments differ in shard count: ${before.length} before, ${after.length} after`);
  }
  const shardCount = Math.max(before.length, after.length);
  const changes: ShardReplicaChange[] = [];
  for (let shard = 0; shard < shardCount; shard++) {
    const was = before[shard] ?? [];
    const now = after[shard] ?? [];
    const added = now.filter((p) => !was.includes(p));
    const removed = was.filter((p) => !now.includes(p));
    if (added.length > 0 || removed.length > 0) changes.push({ shard, added, removed });
  }
  return changes;
}
