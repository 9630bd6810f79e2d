/** Public surface of the cluster map state machine. */
export * from './types.js';
export * from './commands.js';
export { ClusterMap } from './cluster-map.js';
