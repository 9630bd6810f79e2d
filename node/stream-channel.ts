import type { Stream, StreamHandler } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { pushable, type Pushable } from 'it-pushable';
import * as lp from 'it-length-prefixed';
import { pipe } from 'it-pipe';
import { coalesceFrames } from './coalesce.js';
import type { Host } from './host.js';
import type { Logger } from './log.js';

/**
 * The largest frame a StreamChannel sends or accepts, bytes: the one limit both the encoder and
 * the decoder use. A sender refuses a larger frame by itself (see `send`), so a frame never
 * tears down a stream for its size. 16 MiB: well above the largest message a core makes (a Raft
 * snapshot chunk, a replication append of one maximal group, about 1.4 MiB encoded).
 */
export const MAX_FRAME_BYTES = 16 * 1024 * 1024;

/**
 * Bytes of inbound frames handed to `onFrame` in one turn of the event loop before the reader
 * yields (setImmediate): timers (lease renewals, Raft and replication heartbeats) keep their
 * timing while megabytes arrive.
 */
export const INBOUND_BYTES_PER_TURN = 1024 * 1024;

export interface ChannelCounters {
  framesSent: number;
  framesReceived: number;
  /** Frames dropped because the peer's queue was full or its stream could not be opened. */
  framesDropped: number;
  /** Frames refused by `send` because they exceed the frame limit (the stream is untouched). */
  framesRefused: number;
  /** Inbound streams reset for a bad frame (too large, undecodable, forged). */
  streamsReset: number;
}

/** What `send` did with a frame. */
export type SendResult = 'queued' | 'too-large' | 'queue-full' | 'stopped';

export interface StreamChannelOptions {
  host: Host;
  /** Versioned protocol id, e.g. `/shoal/raft/1.0.0`. */
  protocol: string;
  /** Called for each inbound frame with the authenticated sender; throw to reset the stream. */
  onFrame: (from: string, frame: Uint8Array) => void;
  /** Largest frame accepted or sent, bytes. Default MAX_FRAME_BYTES. */
  maxFrameBytes?: number;
  /** Frames queued per peer before new ones are dropped. */
  maxQueuedFrames: number;
  /** Bytes queued per peer (not yet taken by the stream) before new frames are dropped. Default 4 × maxFrameBytes. */
  maxQueuedBytes?: number;
  /** Bound on opening a stream, ms. */
  dialTimeoutMs: number;
  log: Logger;
}

interface Outbound {
  queue: Pushable<Uint8Array>;
  queued: number;
  queuedBytes: number;
}

/**
 * One long-lived, length-prefixed outbound stream per peer for a protocol, and
 * a handler for inbound ones. Opening a stream per message costs about 7× the
 * throughput here, so streams stay open until they fail; then the next `send`
 * opens a new one. Delivery is best effort (in order while a stream lives):
 * the protocols on top (Raft) retry on their own.
 */
export class StreamChannel {
  readonly counters: ChannelCounters = { framesSent: 0, framesReceived: 0, framesDropped: 0, framesRefused: 0, streamsReset: 0 };
  readonly maxFrameBytes: number;
  private readonly maxQueuedBytes: number;
  private readonly outbound = new Map<string, Outbound>();
  private readonly inbound = new Set<Stream>();
  private stopped = false;

  constructor(private readonly opts: StreamChannelOptions) {
    this.maxFrameBytes = opts.maxFrameBytes ?? MAX_FRAME_BYTES;
    this.maxQueuedBytes = opts.maxQueuedBytes ?? 4 * this.maxFrameBytes;
    if (!Number.isSafeInteger(this.maxFrameBytes) || this.maxFrameBytes < 1) throw new RangeError(`maxFrameBytes: must be a positive integer, got ${this.maxFrameBytes}`);
    if (!(this.maxQueuedBytes >= this.maxFrameBytes)) throw new RangeError(`maxQueuedBytes: must be at least maxFrameBytes (${this.maxFrameBytes})`);
  }

  async start(): Promise<void> {
    const handler: StreamHandler = ({ stream, connection }) => {
      void this.readInbound(stream, connection.remotePeer.toString());
    };
    await this.opts.host.handle(this.opts.protocol, handler, { maxInboundStreams: 64, maxOutboundStreams: 64 });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.opts.host.unhandle(this.opts.protocol).catch(() => {});
    for (const o of this.outbound.values()) o.queue.end();
    this.outbound.clear();
    for (const s of this.inbound) s.abort(new Error('stopping'));
    this.inbound.clear();
  }

  /**
   * Queue a frame for `to`. A frame over the limit is refused here, alone: the stream and the
   * frames queued on it are untouched (the encoder would otherwise fail the whole stream).
   */
  send(to: string, frame: Uint8Array): SendResult {
    if (this.stopped) {
      this.counters.framesDropped++;
      return 'stopped';
    }
    if (frame.length > this.maxFrameBytes) {
      this.counters.framesRefused++;
      this.opts.log.warn('frame over the limit refused', { protocol: this.opts.protocol, to, bytes: frame.length, maxFrameBytes: this.maxFrameBytes });
      return 'too-large';
    }
    let out = this.outbound.get(to);
    if (out === undefined) {
      out = this.openOutbound(to);
    }
    if (out.queued >= this.opts.maxQueuedFrames || (out.queuedBytes > 0 && out.queuedBytes + frame.length > this.maxQueuedBytes)) {
      this.counters.framesDropped++;
      return 'queue-full';
    }
    out.queued++;
    out.queuedBytes += frame.length;
    out.queue.push(frame);
    return 'queued';
  }

  /** Bytes queued for `to` and not yet taken by its stream. */
  queuedBytes(to: string): number {
    return this.outbound.get(to)?.queuedBytes ?? 0;
  }

  /** Drop the stream to `to` (e.g. the peer was removed); a later send reopens it. */
  close(to: string): void {
    const out = this.outbound.get(to);
    if (out !== undefined) {
      out.queue.end();
      this.outbound.delete(to);
    }
  }

  private openOutbound(to: string): Outbound {
    const out: Outbound = { queue: pushable<Uint8Array>(), queued: 0, queuedBytes: 0 };
    this.outbound.set(to, out);
    // One chunk per frame, prefix included, and every frame already queued in the same chunk
    // (coalesceFrames): it-length-prefixed's encoder yields the prefix and the frame as two
    // chunks, and each chunk costs a Yamux frame, a Noise message and a socket write of its own.
    const taken = (f: Uint8Array): Uint8Array => {
      out.queued--;
      out.queuedBytes -= f.length;
      this.counters.framesSent++;
      return f;
    };
    void (async () => {
      let stream: Stream | undefined;
      try {
        stream = await this.opts.host.dialProtocol(peerIdFromString(to), this.opts.protocol, {
          signal: AbortSignal.timeout(this.opts.dialTimeoutMs),
        });
        await pipe(coalesceFrames(out.queue, taken), stream.sink);
      } catch (err) {
        if (!this.stopped) this.opts.log.debug('outbound stream ended', { protocol: this.opts.protocol, to, err });
        stream?.abort(err as Error);
      } finally {
        if (this.outbound.get(to) === out) this.outbound.delete(to);
        this.counters.framesDropped += out.queued;
        out.queue.end();
      }
    })();
    return out;
  }

  private async readInbound(stream: Stream, from: string): Promise<void> {
    this.inbound.add(stream);
    try {
      await pipe(stream.source, (src) => lp.decode(src, { maxDataLength: this.maxFrameBytes }), async (frames) => {
        let bytesThisTurn = 0;
        for await (const f of frames) {
          this.counters.framesReceived++;
          this.opts.onFrame(from, f.subarray());
          bytesThisTurn += f.byteLength;
          if (bytesThisTurn >= INBOUND_BYTES_PER_TURN) {
            bytesThisTurn = 0;
            await new Promise<void>((resolve) => setImmediate(resolve));
          }
        }
      });
      await stream.close().catch(() => {});
    } catch (err) {
      if (!this.stopped) {
        this.counters.streamsReset++;
        this.opts.log.warn('inbound stream reset', { protocol: this.opts.protocol, from, err });
      }
      stream.abort(err as Error);
    } finally {
      this.inbound.delete(stream);
    }
  }
}
