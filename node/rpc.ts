import type { Libp2p, Stream, StreamHandler } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { pushable, type Pushable } from 'it-pushable';
import * as lp from 'it-length-prefixed';
import { coalesceFrames } from './coalesce.js';
import { pipe } from 'it-pipe';
import { InvalidMessageError } from '../protocols/errors.js';
import { ConfigError } from './errors.js';
import type { Logger } from './log.js';
import {
  decodeRpcFrame,
  encodeErrorFrame,
  encodeOkFrame,
  encodeRequestFrame,
  isValidErrorCode,
  MAX_REQUEST_ID,
  REQUEST_HEADER_BYTES,
  RESPONSE_HEADER_BYTES,
  type RpcFrame,
} from './rpc-codec.js';
import { RpcOverloadedError, RpcRemoteError, RpcTimeoutError, RpcTooLargeError, RpcUnavailableError } from './rpc-errors.js';

export { RpcOverloadedError, RpcRemoteError, RpcTimeoutError, RpcTooLargeError, RpcUnavailableError } from './rpc-errors.js';

/**
 * Request/response RPC over long-lived libp2p streams.
 *
 * Each endpoint keeps one outbound stream per peer for its protocol. Requests
 * go out on it as length-prefixed frames with a 32-bit id; the peer answers on
 * the same stream (its write half), in any order, and answers are matched by
 * id. Opening a stream per request costs about 7× the latency here, hence the
 * long-lived stream. Frame format: see rpc-codec.ts.
 *
 * Failure model:
 * - every request has a deadline (timeoutMs and/or an AbortSignal) →
 *   RpcTimeoutError; the deadline travels in the frame so the peer aborts its
 *   handler's signal at the same time; an answer that arrives after is dropped
 *   and counted (`lateResponses`);
 * - the handler threw → RpcRemoteError with the error's `code` (`internal`
 *   when it had none);
 * - the stream failed (peer stopped, connection reset, bad frame) → every
 *   request pending on it rejects at once with RpcUnavailableError and the
 *   next request opens a new stream. A request that failed this way may or
 *   may not have run: callers retry only idempotent work or deduplicate;
 * - limits → RpcOverloadedError (`where`: local or remote), RpcTooLargeError.
 *
 * There is no cancel frame: a caller that aborts early (its signal) leaves
 * the remote handler running until the deadline it was sent. A request that
 * timed out may have run. Requests to this host's own peer id call the local
 * handler directly, with the same deadline and error mapping.
 *
 * Ids on a stream are strictly increasing; after `maxRequestsPerStream`
 * requests a stream is rotated: it takes no new requests, half-closes, and
 * ends once the peer has answered what is in flight.
 *
 * A peer that sends anything malformed (undecodable or oversized frame, a
 * frame of the wrong kind for the direction, an id not above the previous
 * one, an answer to an id never sent) gets that stream reset; it is counted
 * in `streamsReset` and never reaches the handler.
 */

/** Longest delay setTimeout honours (2^31 - 1 ms, about 24.8 days); longer ones fire at once. */
const MAX_TIMER_MS = 2_147_483_647;

/** Limits of one endpoint; `validateRpcLimits` fills defaults and checks them. */
export interface RpcLimits {
  /** Largest frame sent or accepted, header included, bytes. Default 2 MiB: a 1 MiB value plus key and batch overhead fits, and a peer cannot make us buffer more per frame. */
  maxFrameBytes: number;
  /** Requests awaiting an answer from one peer (outbound). Default 1024; beyond it `request` rejects with RpcOverloadedError('local'). Bounds pending timers and queued bytes. */
  maxInFlightPerPeer: number;
  /** Request bytes queued to one peer and not yet taken by its stream. Default 16 MiB (8 maximal frames); beyond it `request` rejects with RpcOverloadedError('local'), so a peer that stopped reading (frozen, or partitioned while the connection still looks up) cannot make us buffer without bound as its requests time out. At least maxFrameBytes. */
  maxQueuedBytesPerPeer: number;
  /** Requests one inbound stream may have in flight (running handlers plus unsent answers). Default 1024, the sender's own limit; beyond it the request is answered `rpc.overloaded` without running the handler. */
  maxInFlightPerStream: number;
  /** Inbound streams open at once on this protocol, all peers together. Default 256: one per peer of a cluster of tens, with room for rotation and reconnects. */
  maxInboundStreams: number;
  /** Inbound (and outbound) streams of this protocol on one connection, enforced by libp2p. Default 8: a peer normally holds one, briefly two while rotating or reconnecting. */
  maxStreamsPerConnection: number;
  /** Timeout of a request that names none, ms. Default 5000: far above a LAN round trip, short enough that a stuck peer does not stall its callers for long. */
  defaultTimeoutMs: number;
  /** Longest a handler may run whatever deadline the caller sent, ms. Default 30 000; past it the caller gets `rpc.deadline` and the slot is freed. */
  maxHandlerMs: number;
  /** Bound on opening a stream, ms. Default 5000. */
  dialTimeoutMs: number;
  /** Requests sent on one outbound stream before it is rotated. Default 2^32 - 1, the id space. */
  maxRequestsPerStream: number;
}

export const DEFAULT_RPC_LIMITS: Readonly<RpcLimits> = Object.freeze({
  maxFrameBytes: 2 * 1024 * 1024,
  maxInFlightPerPeer: 1024,
  maxQueuedBytesPerPeer: 16 * 1024 * 1024,
  maxInFlightPerStream: 1024,
  maxInboundStreams: 256,
  maxStreamsPerConnection: 8,
  defaultTimeoutMs: 5000,
  maxHandlerMs: 30_000,
  dialTimeoutMs: 5000,
  maxRequestsPerStream: MAX_REQUEST_ID,
});

/** Merge with defaults and validate; throws ConfigError naming the first bad field. */
export function validateRpcLimits(partial: Partial<RpcLimits> = {}): RpcLimits {
  const l: RpcLimits = { ...DEFAULT_RPC_LIMITS, ...partial };
  const int = (field: keyof RpcLimits, min: number, max: number): void => {
    const v = l[field];
    if (!Number.isInteger(v) || v < min || v > max) throw new ConfigError(field, `must be an integer in ${min}..${max}, got ${String(v)}`);
  };
  int('maxFrameBytes', 1024, 64 * 1024 * 1024);
  int('maxInFlightPerPeer', 1, 1_000_000);
  int('maxQueuedBytesPerPeer', l.maxFrameBytes, 4 * 1024 * 1024 * 1024);
  int('maxInFlightPerStream', 1, 1_000_000);
  int('maxInboundStreams', 1, 1_000_000);
  int('maxStreamsPerConnection', 2, 1024);
  int('defaultTimeoutMs', 1, MAX_TIMER_MS);
  int('maxHandlerMs', 1, MAX_TIMER_MS);
  int('dialTimeoutMs', 1, 600_000);
  int('maxRequestsPerStream', 1, MAX_REQUEST_ID);
  return l;
}

/**
 * Serves one request. `from` is the authenticated peer id. Resolve with the
 * answer, or throw an error with a string `code` (`[A-Za-z0-9_.-]{1,64}`, not
 * starting with `rpc.`) to have the caller get RpcRemoteError with that code
 * and message; any other error goes out as `internal` (logged here, message
 * not sent). `signal` fires when the caller's deadline passes, the stream
 * fails or the endpoint stops: honour it.
 */
export type RpcHandler = (from: string, body: Uint8Array, signal: AbortSignal) => Promise<Uint8Array>;

/** The part of the libp2p host an endpoint uses. */
export type RpcHost = Pick<Libp2p, 'peerId' | 'handle' | 'unhandle' | 'dialProtocol'>;

export interface RpcEndpointOptions {
  host: RpcHost;
  /** Versioned protocol id, e.g. `/shoal/kv/1.0.0`. */
  protocol: string;
  handler: RpcHandler;
  limits?: Partial<RpcLimits>;
  log: Logger;
}

export interface RpcRequestOptions {
  /** Deadline, ms (default `limits.defaultTimeoutMs`). */
  timeoutMs?: number;
  /** Abort early; the request rejects with RpcTimeoutError('aborted'). */
  signal?: AbortSignal;
}

/** Monotonic counters, for /metrics. */
export interface RpcCounters {
  /** Requests handed to a stream (or to the local handler for requests to self). */
  requestsSent: number;
  /** Requests answered ok. */
  requestsSucceeded: number;
  /** Requests that rejected, for any reason (the ones below and more). */
  requestsFailed: number;
  /** Rejected with RpcTimeoutError('timeout'). */
  timeouts: number;
  /** Rejected with RpcTimeoutError('aborted'). */
  aborted: number;
  /** Rejected with RpcRemoteError (or RpcOverloadedError('remote')). */
  remoteErrors: number;
  /** Rejected with RpcUnavailableError. */
  unavailable: number;
  /** Rejected with RpcOverloadedError('local'). */
  overloadedLocal: number;
  /** Answers that came after their request had timed out or been aborted; dropped. */
  lateResponses: number;
  /** Inbound requests whose handler answered ok. */
  requestsServed: number;
  /** Inbound requests whose handler threw. */
  handlerErrors: number;
  /** Inbound requests answered `rpc.deadline` because the handler outran the deadline. */
  handlerDeadlines: number;
  /** Inbound requests answered `rpc.overloaded`. */
  inboundOverloaded: number;
  /** Outbound streams opened. */
  streamsOpened: number;
  /** Outbound streams that failed (dial failed, peer gone, connection reset). */
  streamsFailed: number;
  /** Streams (either direction) reset because the peer sent something malformed. */
  streamsReset: number;
  /** Inbound streams refused at `maxInboundStreams`. */
  inboundStreamsRefused: number;
}

interface Pending {
  readonly id: number;
  readonly out: Outbound;
  readonly peer: string;
  readonly resolve: (body: Uint8Array) => void;
  readonly reject: (err: Error) => void;
  timer?: NodeJS.Timeout;
  signal?: AbortSignal;
  onAbort?: () => void;
}

interface QueuedFrame {
  readonly id: number;
  readonly bytes: Uint8Array;
}

interface Outbound {
  readonly peer: string;
  readonly queue: Pushable<QueuedFrame>;
  /** Bytes pushed to `queue` and not yet taken by the writer. */
  queuedBytes: number;
  readonly pending: Map<number, Pending>;
  /** Highest id sent on this stream. */
  lastId: number;
  stream?: Stream;
  /** Takes no new requests; drains and ends. */
  retiring: boolean;
  closed: boolean;
}

interface Serving {
  readonly ac: AbortController;
  timer?: NodeJS.Timeout;
}

interface Inbound {
  readonly stream: Stream;
  readonly from: string;
  readonly out: Pushable<Uint8Array>;
  readonly running: Map<number, Serving>;
  /** Answers pushed and not yet taken by the writer. */
  queued: number;
  /** Highest id seen; the next must be above it. */
  lastId: number;
  readDone: boolean;
  closed: boolean;
}

/** Errors that mean "the peer sent bad bytes", as opposed to "the stream or connection died". */
const BAD_INPUT_ERRORS = new Set([
  'InvalidMessageError',
  'InvalidDataLengthError',
  'InvalidDataLengthLengthError',
  'InvalidMessageLengthError',
  'UnexpectedEOFError',
]);

function isBadInput(err: unknown): boolean {
  return err instanceof Error && BAD_INPUT_ERRORS.has(err.name);
}

const OVERLOADED_CODE = 'rpc.overloaded';

export class RpcEndpoint {
  readonly counters: RpcCounters = {
    requestsSent: 0,
    requestsSucceeded: 0,
    requestsFailed: 0,
    timeouts: 0,
    aborted: 0,
    remoteErrors: 0,
    unavailable: 0,
    overloadedLocal: 0,
    lateResponses: 0,
    requestsServed: 0,
    handlerErrors: 0,
    handlerDeadlines: 0,
    inboundOverloaded: 0,
    streamsOpened: 0,
    streamsFailed: 0,
    streamsReset: 0,
    inboundStreamsRefused: 0,
  };
  readonly limits: RpcLimits;
  readonly protocol: string;
  private readonly host: RpcHost;
  private readonly handler: RpcHandler;
  private readonly log: Logger;
  private readonly selfId: string;
  /** The stream new requests to a peer go on. */
  private readonly outbound = new Map<string, Outbound>();
  /** Every live outbound stream, rotating ones included. */
  private readonly allOutbound = new Set<Outbound>();
  private readonly inbound = new Set<Inbound>();
  private readonly inFlightByPeer = new Map<string, number>();
  private readonly stopController = new AbortController();
  private started = false;
  private stopped = false;

  constructor(opts: RpcEndpointOptions) {
    if (typeof opts.protocol !== 'string' || !/^\/\S+\/\d+\.\d+\.\d+$/.test(opts.protocol)) {
      throw new ConfigError('protocol', `expected a versioned protocol id like /shoal/kv/1.0.0, got ${JSON.stringify(opts.protocol)}`);
    }
    this.limits = validateRpcLimits(opts.limits);
    this.protocol = opts.protocol;
    this.host = opts.host;
    this.handler = opts.handler;
    this.log = opts.log.child({ component: 'rpc', protocol: opts.protocol });
    this.selfId = opts.host.peerId.toString();
  }

  /** Register the protocol handler. Requests may be made after this. */
  async start(): Promise<void> {
    if (this.started) return;
    if (this.stopped) throw new Error('assertion: RpcEndpoint cannot start again after stop');
    const handler: StreamHandler = ({ stream, connection }) => this.acceptInbound(stream, connection.remotePeer.toString());
    await this.host.handle(this.protocol, handler, {
      maxInboundStreams: this.limits.maxStreamsPerConnection,
      maxOutboundStreams: this.limits.maxStreamsPerConnection,
    });
    this.started = true;
  }

  /** Unregister; every pending request rejects with RpcUnavailableError; handlers' signals fire. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const out of [...this.allOutbound]) this.closeOutbound(out, 'stopped', new RpcUnavailableError('rpc endpoint stopped'));
    for (const st of [...this.inbound]) this.closeInbound(st, 'stopped', new Error('rpc endpoint stopped'));
    this.stopController.abort(new RpcUnavailableError('rpc endpoint stopped'));
    if (this.started) await this.host.unhandle(this.protocol).catch(() => {});
  }

  /**
   * Stop using the stream to `peer` (e.g. it left the cluster map): requests
   * in flight still get their answers, then the stream closes. A later
   * request opens a new one.
   */
  closePeer(peer: string): void {
    const out = this.outbound.get(peer);
    if (out !== undefined) this.retireOutbound(out);
  }

  /** Requests currently awaiting an answer from `peer`. */
  inFlight(peer: string): number {
    return this.inFlightByPeer.get(peer) ?? 0;
  }

  /**
   * Send `body` to `to` and await its answer. Rejects with RpcTimeoutError,
   * RpcRemoteError, RpcUnavailableError, RpcOverloadedError or RpcTooLargeError
   * (ConfigError for a timeoutMs out of range). Never hangs past the deadline.
   */
  request(to: string, body: Uint8Array, opts: RpcRequestOptions = {}): Promise<Uint8Array> {
    const timeoutMs = opts.timeoutMs ?? this.limits.defaultTimeoutMs;
    if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > MAX_TIMER_MS) {
      return this.failEarly(new ConfigError('timeoutMs', `must be an integer in 1..${MAX_TIMER_MS}, got ${String(timeoutMs)}`));
    }
    if (!this.started || this.stopped) {
      this.counters.unavailable++;
      return this.failEarly(new RpcUnavailableError(this.stopped ? 'rpc endpoint stopped' : 'rpc endpoint not started', true));
    }
    if (REQUEST_HEADER_BYTES + body.length > this.limits.maxFrameBytes) {
      return this.failEarly(new RpcTooLargeError(`request of ${body.length} bytes exceeds maxFrameBytes ${this.limits.maxFrameBytes}`));
    }
    if (opts.signal?.aborted === true) {
      this.counters.aborted++;
      return this.failEarly(new RpcTimeoutError('aborted', 'request aborted before it was sent'));
    }
    if (this.inFlight(to) >= this.limits.maxInFlightPerPeer) {
      this.counters.overloadedLocal++;
      return this.failEarly(new RpcOverloadedError('local', `${this.limits.maxInFlightPerPeer} requests already in flight to ${to}`));
    }
    if (to === this.selfId) return this.requestSelf(body, timeoutMs, opts.signal);
    let out = this.outbound.get(to);
    if (out !== undefined && out.queuedBytes + REQUEST_HEADER_BYTES + body.length > this.limits.maxQueuedBytesPerPeer) {
      this.counters.overloadedLocal++;
      return this.failEarly(new RpcOverloadedError('local', `${out.queuedBytes} bytes already queued to ${to}`));
    }
    if (out === undefined) {
      let peerId;
      try {
        peerId = peerIdFromString(to);
      } catch {
        this.counters.unavailable++;
        return this.failEarly(new RpcUnavailableError(`not a peer id: ${JSON.stringify(to)}`, true));
      }
      out = this.openOutbound(to, peerId);
    }
    const stream = out;
    const id = ++stream.lastId;
    const bytes = encodeRequestFrame(id, timeoutMs, body);
    const promise = new Promise<Uint8Array>((resolve, reject) => {
      const p: Pending = { id, out: stream, peer: to, resolve, reject };
      p.timer = setTimeout(() => {
        this.counters.timeouts++;
        this.settle(p, new RpcTimeoutError('timeout', `no answer from ${to} within ${timeoutMs} ms`));
      }, timeoutMs);
      if (opts.signal !== undefined) {
        p.signal = opts.signal;
        p.onAbort = () => {
          this.counters.aborted++;
          this.settle(p, new RpcTimeoutError('aborted', 'request aborted'));
        };
        opts.signal.addEventListener('abort', p.onAbort, { once: true });
      }
      stream.pending.set(id, p);
      this.inFlightByPeer.set(to, this.inFlight(to) + 1);
      this.counters.requestsSent++;
      stream.queuedBytes += bytes.length;
      stream.queue.push({ id, bytes });
    });
    if (stream.lastId >= this.limits.maxRequestsPerStream) this.retireOutbound(stream);
    return promise;
  }

  private failEarly(err: Error): Promise<never> {
    this.counters.requestsFailed++;
    return Promise.reject(err);
  }

  /** Settle a pending request once; later calls for it do nothing. */
  private settle(p: Pending, err: Error | null, body?: Uint8Array): void {
    if (p.out.pending.get(p.id) !== p) return;
    p.out.pending.delete(p.id);
    clearTimeout(p.timer);
    if (p.onAbort !== undefined) p.signal?.removeEventListener('abort', p.onAbort);
    const left = this.inFlight(p.peer) - 1;
    if (left > 0) this.inFlightByPeer.set(p.peer, left);
    else this.inFlightByPeer.delete(p.peer);
    if (err !== null) {
      this.counters.requestsFailed++;
      p.reject(err);
    } else {
      this.counters.requestsSucceeded++;
      p.resolve(body as Uint8Array);
    }
  }

  private openOutbound(to: string, peerId: ReturnType<typeof peerIdFromString>): Outbound {
    const out: Outbound = { peer: to, queue: pushable<QueuedFrame>({ objectMode: true }), queuedBytes: 0, pending: new Map(), lastId: 0, retiring: false, closed: false };
    this.outbound.set(to, out);
    this.allOutbound.add(out);
    void this.runOutbound(out, peerId);
    return out;
  }

  private async runOutbound(out: Outbound, peerId: ReturnType<typeof peerIdFromString>): Promise<void> {
    let stream: Stream;
    try {
      stream = await this.host.dialProtocol(peerId, this.protocol, {
        signal: AbortSignal.any([AbortSignal.timeout(this.limits.dialTimeoutMs), this.stopController.signal]),
      });
    } catch (err) {
      this.closeOutbound(out, 'failed', new RpcUnavailableError(`cannot open ${this.protocol} stream to ${out.peer}: ${(err as Error).message}`, true), err);
      return;
    }
    if (out.closed) {
      stream.abort(new Error('rpc stream no longer needed'));
      return;
    }
    out.stream = stream;
    this.counters.streamsOpened++;
    // Frames of requests that timed out or were aborted before they left are not sent at all.
    const live = (f: QueuedFrame): Uint8Array | null => {
      out.queuedBytes -= f.bytes.length;
      return out.pending.has(f.id) ? f.bytes : null;
    };
    pipe(coalesceFrames(out.queue, live), stream.sink).catch((err: unknown) => {
      this.closeOutbound(out, 'failed', new RpcUnavailableError(`stream to ${out.peer} failed while writing: ${(err as Error).message}`), err);
    });
    try {
      await pipe(
        stream.source,
        (src) => lp.decode(src, { maxDataLength: this.limits.maxFrameBytes }),
        async (frames) => {
          for await (const f of frames) this.onResponseFrame(out, f.subarray());
        },
      );
      // The peer ended its side: normal after we rotated the stream, a failure otherwise.
      this.closeOutbound(out, out.retiring ? 'done' : 'failed', new RpcUnavailableError(`${out.peer} closed the stream`));
    } catch (err) {
      const bad = isBadInput(err);
      this.closeOutbound(
        out,
        bad ? 'reset' : 'failed',
        new RpcUnavailableError(bad ? `bad answer from ${out.peer}: ${(err as Error).message}` : `stream to ${out.peer} failed: ${(err as Error).message}`),
        err,
      );
    }
  }

  private onResponseFrame(out: Outbound, bytes: Uint8Array): void {
    const f = decodeRpcFrame(bytes);
    if (f.type === 'request') throw new InvalidMessageError('request frame on an answer stream');
    if (f.id > out.lastId) throw new InvalidMessageError(`answer to id ${f.id}, never sent (last ${out.lastId})`);
    const p = out.pending.get(f.id);
    if (p === undefined) {
      this.counters.lateResponses++;
      return;
    }
    if (f.type === 'ok') {
      this.settle(p, null, f.body);
      return;
    }
    this.counters.remoteErrors++;
    this.settle(p, f.code === OVERLOADED_CODE ? new RpcOverloadedError('remote', f.message) : new RpcRemoteError(f.code, f.message));
  }

  /** Stop taking requests on `out`; it half-closes and ends when the peer has answered the rest. */
  private retireOutbound(out: Outbound): void {
    if (out.retiring || out.closed) return;
    out.retiring = true;
    if (this.outbound.get(out.peer) === out) this.outbound.delete(out.peer);
    out.queue.end();
  }

  private closeOutbound(out: Outbound, kind: 'done' | 'failed' | 'reset' | 'stopped', err: RpcUnavailableError, cause?: unknown): void {
    if (out.closed) return;
    out.closed = true;
    if (this.outbound.get(out.peer) === out) this.outbound.delete(out.peer);
    this.allOutbound.delete(out);
    out.queue.end();
    if (kind === 'reset') {
      this.counters.streamsReset++;
      this.log.warn('rpc answer stream reset: bad frame', { remote: out.peer, err: cause });
    } else if (kind === 'failed') {
      this.counters.streamsFailed++;
      this.log.debug('rpc stream failed', { remote: out.peer, pending: out.pending.size, err: cause ?? err });
    }
    if (kind !== 'done') out.stream?.abort(err);
    for (const p of [...out.pending.values()]) {
      this.counters.unavailable++;
      this.settle(p, err);
    }
  }

  private requestSelf(body: Uint8Array, timeoutMs: number, signal: AbortSignal | undefined): Promise<Uint8Array> {
    const peer = this.selfId;
    this.counters.requestsSent++;
    this.inFlightByPeer.set(peer, this.inFlight(peer) + 1);
    const ac = new AbortController();
    return new Promise<Uint8Array>((resolve, reject) => {
      let done = false;
      const finish = (err: Error | null, value?: Uint8Array): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        const left = this.inFlight(peer) - 1;
        if (left > 0) this.inFlightByPeer.set(peer, left);
        else this.inFlightByPeer.delete(peer);
        if (err !== null) {
          ac.abort(err);
          this.counters.requestsFailed++;
          reject(err);
        } else {
          this.counters.requestsSucceeded++;
          resolve(value as Uint8Array);
        }
      };
      const timer = setTimeout(() => {
        this.counters.timeouts++;
        finish(new RpcTimeoutError('timeout', `local handler did not answer within ${timeoutMs} ms`));
      }, timeoutMs);
      const onAbort = (): void => {
        this.counters.aborted++;
        finish(new RpcTimeoutError('aborted', 'request aborted'));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      Promise.resolve()
        .then(() => this.handler(peer, body.slice(), ac.signal))
        .then(
          (answer) => {
            if (done) return;
            this.counters.requestsServed++;
            finish(null, answer.slice());
          },
          (err: unknown) => {
            if (done) return;
            this.counters.handlerErrors++;
            this.counters.remoteErrors++;
            const w = this.toWireError(err, peer);
            finish(new RpcRemoteError(w.code, w.message));
          },
        );
    });
  }

  // ---- serving ----

  private acceptInbound(stream: Stream, from: string): void {
    if (this.stopped) {
      stream.abort(new Error('rpc endpoint stopped'));
      return;
    }
    if (this.inbound.size >= this.limits.maxInboundStreams) {
      this.counters.inboundStreamsRefused++;
      this.log.warn('rpc inbound stream refused: too many', { from, limit: this.limits.maxInboundStreams });
      stream.abort(new Error('too many inbound rpc streams'));
      return;
    }
    const st: Inbound = { stream, from, out: pushable<Uint8Array>(), running: new Map(), queued: 0, lastId: 0, readDone: false, closed: false };
    this.inbound.add(st);
    const counted = (f: Uint8Array): Uint8Array => {
      st.queued--;
      return f;
    };
    pipe(coalesceFrames(st.out, counted), stream.sink).then(
      () => this.closeInbound(st, 'done'),
      (err: unknown) => this.closeInbound(st, 'failed', err),
    );
    pipe(
      stream.source,
      (src) => lp.decode(src, { maxDataLength: this.limits.maxFrameBytes }),
      async (frames) => {
        for await (const f of frames) {
          if (st.closed) return;
          this.onRequestFrame(st, f.subarray());
        }
      },
    ).then(
      () => {
        st.readDone = true;
        this.maybeEndInbound(st);
      },
      (err: unknown) => this.closeInbound(st, isBadInput(err) ? 'reset' : 'failed', err),
    );
  }

  private onRequestFrame(st: Inbound, bytes: Uint8Array): void {
    const f = decodeRpcFrame(bytes);
    if (f.type !== 'request') throw new InvalidMessageError(`${f.type} frame on a request stream`);
    if (f.id <= st.lastId) throw new InvalidMessageError(`request id ${f.id} not above the previous ${st.lastId} (duplicate or reused)`);
    st.lastId = f.id;
    const limit = this.limits.maxInFlightPerStream;
    if (st.running.size + st.queued >= limit) {
      // Answers we queue are bounded too: a peer that keeps sending but never reads is cut off.
      if (st.queued >= 2 * limit) throw new InvalidMessageError('peer does not read its answers');
      this.counters.inboundOverloaded++;
      this.pushAnswer(st, encodeErrorFrame(f.id, OVERLOADED_CODE, `${limit} requests already in flight on this stream`));
      return;
    }
    this.serve(st, f);
  }

  private serve(st: Inbound, f: Extract<RpcFrame, { type: 'request' }>): void {
    const entry: Serving = { ac: new AbortController() };
    const deadlineMs = Math.min(f.timeoutMs, this.limits.maxHandlerMs);
    entry.timer = setTimeout(() => {
      if (st.running.get(f.id) !== entry) return;
      this.counters.handlerDeadlines++;
      entry.ac.abort(new RpcTimeoutError('timeout', `deadline of ${deadlineMs} ms passed`));
      this.finishServing(st, f.id, encodeErrorFrame(f.id, 'rpc.deadline', `handler did not answer within ${deadlineMs} ms`));
    }, deadlineMs);
    st.running.set(f.id, entry);
    Promise.resolve()
      .then(() => this.handler(st.from, f.body, entry.ac.signal))
      .then(
        (answer) => {
          if (st.running.get(f.id) !== entry) return;
          if (!(answer instanceof Uint8Array)) {
            this.counters.handlerErrors++;
            this.log.error('rpc handler resolved with a non-Uint8Array', { from: st.from });
            this.finishServing(st, f.id, encodeErrorFrame(f.id, 'internal', 'internal error'));
          } else if (RESPONSE_HEADER_BYTES + answer.length > this.limits.maxFrameBytes) {
            this.counters.handlerErrors++;
            this.finishServing(st, f.id, encodeErrorFrame(f.id, 'rpc.too_large', `answer of ${answer.length} bytes exceeds maxFrameBytes`));
          } else {
            this.counters.requestsServed++;
            this.finishServing(st, f.id, encodeOkFrame(f.id, answer));
          }
        },
        (err: unknown) => {
          if (st.running.get(f.id) !== entry) return;
          this.counters.handlerErrors++;
          const w = this.toWireError(err, st.from);
          this.finishServing(st, f.id, encodeErrorFrame(f.id, w.code, w.message));
        },
      );
  }

  private toWireError(err: unknown, from: string): { code: string; message: string } {
    const code = (err as { code?: unknown } | null)?.code;
    if (isValidErrorCode(code) && !code.startsWith('rpc.')) {
      const message = (err as { message?: unknown }).message;
      return { code, message: typeof message === 'string' ? message : '' };
    }
    this.log.warn('rpc handler failed without an error code', { from, err });
    return { code: 'internal', message: 'internal error' };
  }

  private finishServing(st: Inbound, id: number, frame: Uint8Array): void {
    const entry = st.running.get(id);
    if (entry === undefined) return;
    st.running.delete(id);
    clearTimeout(entry.timer);
    if (st.closed) return;
    this.pushAnswer(st, frame);
    this.maybeEndInbound(st);
  }

  private pushAnswer(st: Inbound, frame: Uint8Array): void {
    st.queued++;
    st.out.push(frame);
  }

  /** The peer closed its side and every request is answered: close ours. */
  private maybeEndInbound(st: Inbound): void {
    if (st.readDone && st.running.size === 0 && !st.closed) st.out.end();
  }

  private closeInbound(st: Inbound, kind: 'done' | 'failed' | 'reset' | 'stopped', cause?: unknown): void {
    if (st.closed) return;
    st.closed = true;
    this.inbound.delete(st);
    for (const entry of st.running.values()) {
      clearTimeout(entry.timer);
      entry.ac.abort(new RpcUnavailableError('rpc stream closed'));
    }
    st.running.clear();
    st.out.end();
    if (kind === 'done') return;
    if (kind === 'reset') {
      this.counters.streamsReset++;
      this.log.warn('rpc request stream reset: bad frame', { from: st.from, err: cause });
    } else if (kind === 'failed' && !this.stopped) {
      this.log.debug('rpc request stream failed', { from: st.from, err: cause });
    }
    st.stream.abort(cause instanceof Error ? cause : new Error(String(cause)));
  }
}
