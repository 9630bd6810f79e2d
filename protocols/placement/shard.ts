/**
 * Key → shard.
 */
import { hashKey } from './hash.js';
import { validateShardCount } from './config.js';

/**
 * The shard of `key`: MurmurHash3 x86_32 (seed 0) of its UTF-8 bytes, or of the bytes
 * themselves, modulo `shardCount`. The same string and its UTF-8 encoding land on the same shard.
 * `shardCount` is a power of two, so the modulo keeps the hash's low bits, which MurmurHash3's
 * final avalanche makes as uniform as the high ones.
 * @throws ConfigError('shardCount') unless it is a power of two in [8, 1024].
 */
export function shardOf(key: string | Uint8Array, shardCount: number): number {
  validateShardCount(shardCount);
  return hashKey(key) & (shardCount - 1);
}
