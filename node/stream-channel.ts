import type { Stream, StreamHandler } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { pushable, type Pushable } from 'it-pushable';
import * as lp from 'it-length-prefixed';
import { pipe } from 'it-pipe';
import type { Host } from './host.js';
import type { Logger } from './log.js';

export interface ChannelCounters {
  framesSent: number;
  framesReceived: number;
  /** Frames dropped because the peer's queue was full or its stream could not be opened. */
  framesDropped: number;
  /** Inbound streams reset for a bad frame (too large, undecodable, forged). */
  streamsReset: number;
}

export interface StreamChannelOptions {
  host: Host;
  /** Versioned protocol id, e.g. `/shoal/raft/1.0.0`. */
  protocol: string;
  /** Called for each inbound frame with the authenticated sender; throw to reset the stream. */
  onFrame: (from: string, frame: Uint8Array) => void;
  /** Largest frame accepted or sent, bytes. */
  maxFrameBytes: number;
  /** Frames queued per peer before new ones are dropped. */
  maxQueuedFrames: number;
  /** Bound on opening a stream, ms. */
  dialTimeoutMs: number;
  log: Logger;
}

interface Outbound {
  queue: Pushable<Uint8Array>;
  queued: number;
}

/**
 * One long-lived, length-prefixed outbound stream per peer for a protocol, and
 * a handler for inbound ones. Opening a stream per message costs about 7× the
 * throughput here, so streams stay open until they fail; then the next `send`
 * opens a new one. Delivery is best effort (in order while a stream lives):
 * the protocols on top (Raft) retry on their own.
 */
export class StreamChannel {
  readonly counters: ChannelCounters = { framesSent: 0, framesReceived: 0, framesDropped: 0, streamsReset: 0 };
  private readonly outbound = new Map<string, Outbound>();
  private readonly inbound = new Set<Stream>();
  private stopped = false;

  constructor(private readonly opts: StreamChannelOptions) {}

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

  /** Queue a frame for `to`; false when it was dropped (queue full, too large, stopped). */
  send(to: string, frame: Uint8Array): boolean {
    if (this.stopped || frame.length > this.opts.maxFrameBytes) {
      this.counters.framesDropped++;
      return false;
    }
    let out = this.outbound.get(to);
    if (out === undefined) {
      out = this.openOutbound(to);
    }
    if (out.queued >= this.opts.maxQueuedFrames) {
      this.counters.framesDropped++;
      return false;
    }
    out.queued++;
    out.queue.push(frame);
    return true;
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
    const out: Outbound = { queue: pushable<Uint8Array>(), queued: 0 };
    this.outbound.set(to, out);
    const counted = async function* (this: StreamChannel, source: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
      for await (const f of source) {
        out.queued--;
        this.counters.framesSent++;
        yield f;
      }
    }.bind(this);
    void (async () => {
      let stream: Stream | undefined;
      try {
        stream = await this.opts.host.dialProtocol(peerIdFromString(to), this.opts.protocol, {
          signal: AbortSignal.timeout(this.opts.dialTimeoutMs),
        });
        await pipe(out.queue, counted, (src) => lp.encode(src), stream.sink);
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
      await pipe(stream.source, (src) => lp.decode(src, { maxDataLength: this.opts.maxFrameBytes }), async (frames) => {
        for await (const f of frames) {
          this.counters.framesReceived++;
          this.opts.onFrame(from, f.subarray());
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
