import { generateKey } from '@libp2p/pnet';
import { PeerStartError } from './errors.js';

/** The first lines of a swarm key file; 64 hex digits follow. */
export const SWARM_KEY_HEADER = '/key/swarm/psk/1.0.0/\n/base16/\n';
/** Length of a swarm key file as `generateKey` writes it: header plus 64 hex digits. */
export const SWARM_KEY_BYTES = SWARM_KEY_HEADER.length + 64;

/** A fresh private-network key in the go-ipfs/libp2p swarm.key format. */
export function newSwarmKey(): Uint8Array {
  const bytes = new Uint8Array(SWARM_KEY_BYTES);
  generateKey(bytes);
  return bytes;
}

/** Check a swarm key file's shape before libp2p sees it (libp2p's own error is opaque). */
export function validateSwarmKey(bytes: Uint8Array, path: string): Uint8Array {
  const text = new TextDecoder().decode(bytes).replace(/\r\n/g, '\n').trimEnd();
  const m = /^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n([0-9a-fA-F]{64})$/.exec(text);
  if (m === null) {
    throw new PeerStartError('SWARM_KEY', `${path} is not a swarm key (expected the format 'shoal keygen' writes)`);
  }
  return new TextEncoder().encode(SWARM_KEY_HEADER + (m[1] as string).toLowerCase());
}
