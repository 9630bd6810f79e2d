/**
 * Join tokens (issue 9, "secure by default"). A new cluster's first peer generates the cluster
 * key; every peer prints a token that carries that key and its own addresses, so a joiner needs
 * one string: `shoal start --join SHOAL-1-...` (like `docker swarm join --token`).
 *
 * Format: `SHOAL-1-` + base64url (no padding) of the UTF-8 JSON `{"k": <64 hex digits>, "a":
 * [<full multiaddr with /p2p/<peer id>>, ...]}`. The key is the 32-byte libp2p private-network
 * key (the same bytes a `shoal keygen` file holds). Anyone holding a token can join, so it is a
 * secret: it is printed on the peer's stdout and kept in `<data dir>/join-token` (mode 0600).
 *
 * The decoder is strict and bounded: it is fed whatever a user pastes.
 */
import { ConfigError } from '../protocols/errors.js';
import { validateJoinAddr } from './config.js';

export const JOIN_TOKEN_PREFIX = 'SHOAL-1-';
/** Longest token accepted: 16 addresses of a few hundred characters fit comfortably. */
export const MAX_JOIN_TOKEN_CHARS = 8192;
/** Most addresses a token carries. */
export const MAX_JOIN_TOKEN_ADDRS = 16;

export interface JoinToken {
  /** The cluster key as 64 lower-case hex digits. */
  keyHex: string;
  /** Full multiaddrs (each ending in /p2p/<peer id>) of the peer that printed the token. */
  addrs: string[];
}

/** True when `value` looks like a token rather than a multiaddr (decides which parser names the error). */
export function looksLikeJoinToken(value: string): boolean {
  return value.startsWith('SHOAL-');
}

export function encodeJoinToken(token: JoinToken): string {
  if (!/^[0-9a-f]{64}$/.test(token.keyHex)) throw new ConfigError('joinToken', 'key must be 64 lower-case hex digits');
  if (token.addrs.length === 0 || token.addrs.length > MAX_JOIN_TOKEN_ADDRS) {
    throw new ConfigError('joinToken', `needs 1 to ${MAX_JOIN_TOKEN_ADDRS} addresses`);
  }
  const json = JSON.stringify({ k: token.keyHex, a: token.addrs });
  return JOIN_TOKEN_PREFIX + Buffer.from(json, 'utf8').toString('base64url');
}

/** Decode a token; throws ConfigError naming `field` and what was wrong. */
export function decodeJoinToken(value: string, field = 'join'): JoinToken {
  const bad = (why: string): ConfigError => new ConfigError(field, `not a valid join token (${why}); copy the whole 'join token:' line a running peer printed, or run 'shoal token --data-dir DIR' on a member`);
  if (typeof value !== 'string') throw bad('not a string');
  const v = value.trim();
  if (v.length > MAX_JOIN_TOKEN_CHARS) throw bad(`longer than ${MAX_JOIN_TOKEN_CHARS} characters`);
  if (!v.startsWith(JOIN_TOKEN_PREFIX)) {
    throw bad(looksLikeJoinToken(v) ? 'unknown version; this shoal reads SHOAL-1 tokens' : `must start with ${JOIN_TOKEN_PREFIX}`);
  }
  const body = v.slice(JOIN_TOKEN_PREFIX.length);
  if (body.length === 0 || !/^[A-Za-z0-9_-]+$/.test(body)) throw bad('the part after SHOAL-1- must be base64url');
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(body, 'base64url').toString('utf8'));
  } catch {
    throw bad('cut short or mistyped');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw bad('cut short or mistyped');
  const keys = Object.keys(parsed);
  if (keys.length !== 2 || !keys.includes('k') || !keys.includes('a')) throw bad('cut short or mistyped');
  const { k, a } = parsed as { k: unknown; a: unknown };
  if (typeof k !== 'string' || !/^[0-9a-f]{64}$/.test(k)) throw bad('its key is not 64 hex digits');
  if (!Array.isArray(a) || a.length === 0 || a.length > MAX_JOIN_TOKEN_ADDRS) throw bad(`it must carry 1 to ${MAX_JOIN_TOKEN_ADDRS} addresses`);
  const addrs: string[] = [];
  for (const addr of a) {
    if (typeof addr !== 'string' || addr.length > 512) throw bad('an address is not a string of at most 512 characters');
    try {
      validateJoinAddr(addr, field);
    } catch (err) {
      throw bad(`address ${JSON.stringify(addr.slice(0, 80))}: ${(err as Error).message}`);
    }
    addrs.push(addr);
  }
  return { keyHex: k, addrs };
}
