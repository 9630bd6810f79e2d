/** Public surface of the cluster map state machine. */
export * from './types.js';
export * from './commands.js';
export { ClusterMap, effectiveMinInSync } from './cluster-map.js';
