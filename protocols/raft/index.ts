/** Public surface of the Raft core. */
export * from './types.js';
export * from './config.js';
export * from './errors.js';
export * from './conf-change.js';
export * from './codec.js';
export * from './admission.js';
export { RaftNode, bootstrapStorage, emptyStorage, MAX_COMMITTED_PER_READY, type Ready, type RaftNodeOptions } from './raft.js';
export { RaftInvariantError } from './log.js';
