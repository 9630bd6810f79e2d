/**
 * CRC-32 (IEEE) of stored records (issue 9, storage integrity). LevelDB checks its own log
 * blocks, but it drops a torn log tail silently and reads table blocks without verifying them by
 * default; a checksum inside each record we store lets a peer tell a damaged record from a good
 * one at the moment it reads it, and never act on it.
 *
 * Node ≥ 20.15 has a native `zlib.crc32`; older Node 20 releases use the table below.
 */
import * as zlib from 'node:zlib';

const native = (zlib as unknown as { crc32?: (data: Uint8Array, value?: number) => number }).crc32;

let table: Uint32Array | null = null;
function crcTable(): Uint32Array {
  if (table !== null) return table;
  table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
}

/** CRC-32 of `data` (the zlib / PNG / Ethernet polynomial), as an unsigned 32-bit integer. */
export function crc32(data: Uint8Array): number {
  return native !== undefined ? native(data) >>> 0 : crc32Portable(data);
}

/** The table implementation, exposed so tests can check both agree. */
export function crc32Portable(data: Uint8Array): number {
  const t = crcTable();
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = (t[(c ^ (data[i] as number)) & 0xff] as number) ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
