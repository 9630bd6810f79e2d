/** Public surface of placement: key → shard, shard → replicas, and the moves between two assignments. */
export { murmur3x86_32, hashKey } from './hash.js';
export {
  DEFAULT_PLACEMENT_OPTIONS,
  PLACEMENT_LIMITS,
  validatePlacementOptions,
  type PlacementMember,
  type PlacementOptions,
} from './config.js';
export { shardOf } from './shard.js';
export { Ring, buildRing, shardPoint, vnodePoint, type RingOptions } from './ring.js';
export { assignReplicas, fairShares, loadCaps } from './assign.js';
export { diffAssignments, type ShardReplicaChange } from './diff.js';
