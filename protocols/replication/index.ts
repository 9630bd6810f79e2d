/** Public surface of the per-shard primary-backup replication core (see replica.ts for the shell contract). */
export * from './types.js';
export * from './config.js';
export * from './errors.js';
export * from './codec.js';
export { casMatches, versionAfter, ABSENT, VersionOverlay } from './versions.js';
export { ReplicaCore, type ReplicaCoreOptions } from './replica.js';
