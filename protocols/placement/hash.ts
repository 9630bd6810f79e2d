/**
 * MurmurHash3 x86_32 (Austin Appleby, public domain), written from the algorithm's description.
 *
 * Why this hash: it is fast on short keys, its final avalanche step ("fmix") mixes every input bit
 * into every output bit — so `hash mod 2^k`, which keeps only the low bits, is still uniform
 * (32-bit FNV-1a is not) — and its output is pinned by widely published test vectors, so every
 * peer, in any language, computes the same shard for a key. It is not cryptographic: a client that
 * wants to crowd one shard can, which is acceptable for placement inside a trusted cluster.
 */

const C1 = 0xcc9e2d51;
const C2 = 0x1b873593;

function rotl32(x: number, r: number): number {
  return (x << r) | (x >>> (32 - r));
}

/** Scramble one 32-bit block before it is folded into the state. */
function scramble(k: number): number {
  return Math.imul(rotl32(Math.imul(k, C1), 15), C2);
}

/** Final avalanche: every input bit affects every output bit with probability close to 1/2. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * MurmurHash3 x86_32 of `bytes` with `seed` (default 0), as an unsigned 32-bit integer.
 * Blocks are read little-endian regardless of the host, so the result is the same everywhere.
 */
export function murmur3x86_32(bytes: Uint8Array, seed = 0): number {
  return murmur3Prefix(bytes, bytes.length, seed);
}

/** murmur3x86_32 of the first `length` bytes, without allocating a subarray view. */
export function murmur3Prefix(bytes: Uint8Array, length: number, seed: number): number {
  const blockEnd = length - (length & 3);
  let h = seed >>> 0;
  for (let i = 0; i < blockEnd; i += 4) {
    const k = bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24);
    h ^= scramble(k);
    h = rotl32(h, 13);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  const tail = length & 3;
  if (tail > 0) {
    let k = 0;
    if (tail === 3) k ^= bytes[blockEnd + 2]! << 16;
    if (tail >= 2) k ^= bytes[blockEnd + 1]! << 8;
    k ^= bytes[blockEnd]!;
    h ^= scramble(k);
  }
  // The reference mixes in the length as a 32-bit integer; keys here are far shorter than 4 GiB.
  h ^= length;
  return fmix32(h);
}

const utf8 = new TextEncoder();

/**
 * MurmurHash3 x86_32 of a string's UTF-8 bytes, or of the bytes themselves.
 * Lone UTF-16 surrogates encode as U+FFFD (TextEncoder's rule), so such strings can collide.
 */
export function hashKey(key: string | Uint8Array, seed = 0): number {
  return murmur3x86_32(typeof key === 'string' ? utf8.encode(key) : key, seed);
}
