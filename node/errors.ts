export { ConfigError } from '../protocols/errors.js';

export type PeerStartErrorCode = 'DATA_DIR' | 'DATA_DIR_LOCKED' | 'ADDRESS_IN_USE' | 'LISTEN' | 'HTTP' | 'SWARM_KEY' | 'CLUSTER_KEY' | 'HTTP_TOKEN';

/** The peer could not start for a reason outside its options (a runtime failure: CLI exit 1). */
export class PeerStartError extends Error {
  override readonly name = 'PeerStartError';
  constructor(readonly code: PeerStartErrorCode, message: string) {
    super(message);
  }
}
