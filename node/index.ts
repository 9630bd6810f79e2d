// Library entry point. The polyfill must come first (see ../shared/STACK.md: Node 20).
import './polyfill.js';

export { createPeer, type Peer, type PeerStatus } from './peer.js';
export { DEFAULT_PEER_OPTIONS, validatePeerOptions, type PeerOptions } from './config.js';
export { ConfigError, PeerStartError } from './errors.js';
export type { MemberState, MemberView } from '../protocols/membership/types.js';
