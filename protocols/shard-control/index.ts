/** Public surface of the shard controller: the coordinator's pure planner of shard assignments. */
export { ShardController, type CatchUpReport, type ShardPlan } from './controller.js';
export {
  DEFAULT_SHARD_CONTROLLER_OPTIONS,
  validateShardControllerOptions,
  type ResolvedShardControllerOptions,
  type ShardControllerOptions,
} from './config.js';
