/**
 * The store's outgoing replication messages, batched per peer and encoded a bounded number of
 * bytes per turn of the event loop.
 *
 * Batching: messages to one peer produced in one turn (every shard's appends, acks, heartbeats)
 * travel as one frame. A frame per message cost a socket write, a Noise seal and a Yamux frame
 * each, which dominated the CPU of an idle cluster (64 shards × 2 backups × 10 heartbeats/s).
 * Frame: repeated [u32 length][encoded message], at most `batchBytes`; a message as large as a
 * batch travels in a frame of its own; one over the frame limit is dropped alone (counted).
 *
 * Pacing: encoding a megabyte append takes milliseconds; dozens of shards catching up at once
 * would otherwise hold the event loop for seconds, and leases and heartbeats would miss their
 * timing. So at most `bytesPerTurn` are encoded per turn (at least one message); the rest waits
 * for the next turn (setImmediate), peers taking turns. Order per peer is kept.
 */
import { InvalidMessageError } from '../protocols/errors.js';
import type { ReplicationMessage } from '../protocols/replication/types.js';
import type { SendResult } from './stream-channel.js';

/** Bytes of a batch's length prefix per message. */
export const BATCH_PREFIX_BYTES = 4;

export interface ReplicationOutboxOptions {
  encode: (m: ReplicationMessage) => Uint8Array;
  send: (to: string, frame: Uint8Array) => SendResult;
  /** The channel's frame limit. */
  maxFrameBytes: number;
  /** Most bytes batched into one frame. */
  batchBytes: number;
  /** Most bytes encoded per turn of the event loop (at least one message is). */
  bytesPerTurn: number;
  /** Most messages waiting per peer; beyond it the oldest are dropped (like a lossy link). */
  maxQueuedPerPeer: number;
  /** A message that cannot fit in a frame (dropped). */
  onRefused: (m: ReplicationMessage, bytes: number) => void;
}

/** The messages of a received batch frame (untrusted: a bad length throws InvalidMessageError). */
export function* splitBatch(frame: Uint8Array): Generator<Uint8Array> {
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  for (let offset = 0; offset < frame.length; ) {
    if (offset + BATCH_PREFIX_BYTES > frame.length) throw new InvalidMessageError('replication frame: truncated length prefix');
    const length = view.getUint32(offset);
    const start = offset + BATCH_PREFIX_BYTES;
    if (start + length > frame.length) throw new InvalidMessageError('replication frame: message runs past the frame');
    yield frame.subarray(start, start + length);
    offset = start + length;
  }
}

interface PeerQueue {
  items: ReplicationMessage[];
  head: number;
}

export class ReplicationOutbox {
  readonly counters = { messagesQueued: 0, messagesDroppedQueueFull: 0, deferredTurns: 0 };
  private readonly queues = new Map<string, PeerQueue>();
  private scheduled = false;
  private closed = false;

  constructor(private readonly opts: ReplicationOutboxOptions) {}

  push(m: ReplicationMessage): void {
    if (this.closed) return;
    let q = this.queues.get(m.to);
    if (q === undefined) this.queues.set(m.to, (q = { items: [], head: 0 }));
    if (q.items.length - q.head >= this.opts.maxQueuedPerPeer) {
      q.head++;
      this.counters.messagesDroppedQueueFull++;
    }
    q.items.push(m);
    this.counters.messagesQueued++;
    this.schedule();
  }

  /** Messages waiting for `to` (not yet encoded). */
  pending(to: string): number {
    const q = this.queues.get(to);
    return q === undefined ? 0 : q.items.length - q.head;
  }

  close(): void {
    this.closed = true;
    this.queues.clear();
  }

  private schedule(): void {
    if (this.scheduled || this.closed) return;
    this.scheduled = true;
    setImmediate(() => this.flush());
  }

  /** Encodes and sends up to bytesPerTurn; reschedules itself while messages remain. */
  flush(): void {
    this.scheduled = false;
    if (this.closed) return;
    let budget = this.opts.bytesPerTurn;
    for (const [to, q] of [...this.queues]) {
      if (budget <= 0) break;
      let parts: Uint8Array[] = [];
      let bytes = 0;
      while (q.head < q.items.length && budget > 0) {
        const m = q.items[q.head++]!;
        const encoded = this.opts.encode(m);
        budget -= encoded.length;
        const size = encoded.length + BATCH_PREFIX_BYTES;
        if (size > this.opts.maxFrameBytes) {
          this.opts.onRefused(m, size);
          continue;
        }
        if (bytes + size > this.opts.batchBytes && parts.length > 0) {
          this.emit(to, parts, bytes);
          parts = [];
          bytes = 0;
        }
        parts.push(encoded);
        bytes += size;
      }
      if (parts.length > 0) this.emit(to, parts, bytes);
      // Peers take turns: one left with messages goes to the back.
      this.queues.delete(to);
      if (q.head < q.items.length) {
        q.items = q.items.slice(q.head);
        q.head = 0;
        this.queues.set(to, q);
      }
    }
    if (this.queues.size > 0) {
      this.counters.deferredTurns++;
      this.schedule();
    }
  }

  private emit(to: string, parts: Uint8Array[], bytes: number): void {
    const frame = new Uint8Array(bytes);
    const view = new DataView(frame.buffer);
    let offset = 0;
    for (const part of parts) {
      view.setUint32(offset, part.length);
      frame.set(part, offset + BATCH_PREFIX_BYTES);
      offset += BATCH_PREFIX_BYTES + part.length;
    }
    this.opts.send(to, frame);
  }
}
