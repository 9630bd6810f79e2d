/**
 * Length-prefixed framing that coalesces: every frame already queued when the writer asks for
 * more goes out as one chunk. On a libp2p stream each chunk costs a Yamux frame, a Noise seal and
 * a socket write, so under load (many requests or answers queued at once) this turns N of each
 * into one. The prefix is the unsigned varint of it-length-prefixed, so `lp.decode` reads it.
 */
import type { Pushable } from 'it-pushable';

/** Unsigned LEB128 varint of `n` (a frame length). */
export function encodeVarint(n: number): Uint8Array {
  const out: number[] = [];
  let v = n;
  while (v >= 0x80) {
    out.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return Uint8Array.from(out);
}

/**
 * Read `source` and yield length-prefixed frames, batching those already buffered (up to about
 * `maxChunkBytes` per chunk). `toBytes` maps a queued item to its frame, or null to skip it.
 */
export async function* coalesceFrames<T>(
  source: Pushable<T>,
  toBytes: (item: T) => Uint8Array | null,
  maxChunkBytes = 256 * 1024,
): AsyncGenerator<Uint8Array> {
  const parts: Uint8Array[] = [];
  let bytes = 0;
  const add = (item: T): void => {
    const frame = toBytes(item);
    if (frame === null) return;
    const prefix = encodeVarint(frame.length);
    parts.push(prefix, frame);
    bytes += prefix.length + frame.length;
  };
  for (;;) {
    const first = await source.next();
    if (first.done === true) return;
    add(first.value);
    let ended = false;
    while (source.readableLength > 0 && bytes < maxChunkBytes) {
      const next = await source.next();
      if (next.done === true) {
        ended = true;
        break;
      }
      add(next.value);
    }
    if (parts.length > 0) {
      const chunk = Buffer.concat(parts, bytes);
      parts.length = 0;
      bytes = 0;
      yield chunk;
    }
    if (ended) return;
  }
}
