/**
 * Client operations on any peer (the KvApi's put, get and delete): validate them, send each to
 * its shard's primary (or, for `consistency=any` reads, to an in-sync replica picked by
 * --read-policy), here or over the store RPC, and retry while the shard has no serving primary,
 * up to --request-timeout-ms.
 *
 * A write forwarded to a primary that the map then replaces (it froze or was cut off) is given
 * SUPERSEDED_GRACE_MS to answer, then reported `indeterminate`; a read is simply retried.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { ClusterMapView, ShardAssignment } from '../protocols/cluster-map/types.js';
import { shardOf } from '../protocols/placement/index.js';
import { HANDED_OVER_OUTCOME_MS } from '../protocols/replication/replica.js';
import { keyProblem } from '../protocols/replication/versions.js';
import { decodeOpReply, encodeKvRequest, type KvRequest, type OpReply } from './kv-frames.js';
import { ReadTargets } from './read-targets.js';
import { RpcUnavailableError } from './rpc.js';
import {
  RETRYABLE_STORE_ERRORS,
  StoreError,
  type GetOptions,
  type GetOutcome,
  type PutOptions,
  type ReadPolicy,
  type StoreErrorCode,
  type StoreLimits,
  type WriteOutcome,
} from './store-api.js';
import { BULK_VALUE_BYTES } from './store-wire.js';

/**
 * After the map names a new primary for a shard, a request still waiting on the old one gets
 * this long to answer: a demoted primary answers its in-flight writes once the new primary's log
 * tells their outcome (within HANDED_OVER_OUTCOME_MS); a frozen or cut-off one never does, and
 * the write is then `indeterminate`.
 */
const SUPERSEDED_GRACE_MS = HANDED_OVER_OUTCOME_MS + 250;
/** Timeout of one forwarded request, ms. */
const FORWARD_TIMEOUT_MS = 5_000;

/** A request forwarded to a shard's primary, aborted if the map names another primary. */
interface ForwardWatch {
  shard: number;
  target: string;
  ac: AbortController;
  timer: NodeJS.Timeout | null;
}

export interface StoreRouterOptions {
  self: string;
  limits: StoreLimits;
  requestTimeoutMs: number;
  readPolicy: ReadPolicy;
  now: () => number;
  view: () => ClusterMapView;
  stopped: () => boolean;
  /** Serves an operation on this peer's replica. */
  serveLocal: (req: KvRequest) => Promise<OpReply>;
  /** Sends an encoded operation to `to` (over the bulk protocol when `bulk`) and resolves with its answer. */
  forward: (to: string, frame: Uint8Array, opts: { bulk: boolean; timeoutMs: number; signal?: AbortSignal }) => Promise<Uint8Array>;
}

const textEncoder = new TextEncoder();

export class StoreRouter {
  readonly counters = { forwarded: 0 };
  private readonly forwards = new Set<ForwardWatch>();
  private readonly readTargets: ReadTargets;

  constructor(private readonly opts: StoreRouterOptions) {
    this.readTargets = new ReadTargets(opts.readPolicy);
  }

  /** The map changed: requests waiting on a replaced primary get SUPERSEDED_GRACE_MS more. */
  onMapChange(view: ClusterMapView): void {
    for (const w of this.forwards) {
      if (w.timer === null && view.shards[w.shard] !== undefined && view.shards[w.shard]!.primary !== w.target) {
        w.timer = setTimeout(() => w.ac.abort(), SUPERSEDED_GRACE_MS);
      }
    }
  }

  /** `key` if it is a valid key (StoreError `invalid_key` naming the problem otherwise). */
  validateKey(key: unknown): string {
    const problem = keyProblem(key, this.opts.limits.maxKeyBytes);
    if (problem !== null) throw new StoreError('invalid_key', problem);
    return key as string;
  }

  async put(key: string, value: Uint8Array | string, options: PutOptions = {}): Promise<WriteOutcome> {
    this.validateKey(key);
    const bytes = typeof value === 'string' ? textEncoder.encode(value) : value;
    if (!(bytes instanceof Uint8Array)) throw new StoreError('invalid_request', 'the value must be a Uint8Array or a string');
    if (bytes.length > this.opts.limits.maxValueBytes) {
      throw new StoreError('value_too_large', `the value is ${bytes.length} bytes; the limit is ${this.opts.limits.maxValueBytes}`);
    }
    const ifVersion = options.ifVersion;
    if (ifVersion !== undefined && (!Number.isSafeInteger(ifVersion) || ifVersion < 0)) {
      throw new StoreError('invalid_request', `ifVersion must be a non-negative integer, got ${String(ifVersion)}`);
    }
    const req: KvRequest = { op: 'put', key, value: bytes };
    if (ifVersion !== undefined) req.ifVersion = ifVersion;
    const r = await this.route(req);
    return { version: r.version };
  }

  async get(key: string, options: GetOptions = {}): Promise<GetOutcome | null> {
    this.validateKey(key);
    const consistency = options.consistency ?? 'strong';
    if (consistency !== 'strong' && consistency !== 'any') throw new StoreError('invalid_request', `consistency must be strong or any, got ${String(consistency)}`);
    const r = await this.route({ op: 'get', key, consistency });
    return r.present && r.value !== null ? { value: r.value, version: r.version } : null;
  }

  async delete(key: string): Promise<WriteOutcome> {
    this.validateKey(key);
    const r = await this.route({ op: 'delete', key });
    return { version: r.version };
  }

  private async route(req: KvRequest): Promise<{ version: number; present: boolean; value: Uint8Array | null }> {
    if (this.opts.stopped()) throw new StoreError('stopping', 'this peer is stopping', undefined, 1);
    const deadline = this.opts.now() + this.opts.requestTimeoutMs;
    let last: OpReply = { ok: false, code: 'unavailable', message: 'no coordinator has assigned the shards yet' };
    for (let attempt = 0; attempt < 10_000; attempt++) {
      if (attempt > 0) {
        const wait = Math.min(50, 5 * attempt);
        if (this.opts.now() + wait > deadline || this.opts.stopped()) break;
        await sleep(wait);
      }
      const picked = this.pickTarget(req);
      if (picked === null || picked.target === null) continue;
      const { shard, target } = picked;
      let reply: OpReply;
      const started = this.opts.now();
      if (target === this.opts.self) {
        reply = await this.opts.serveLocal(req);
      } else {
        this.counters.forwarded++;
        // Sent to a primary: if the map names another primary meanwhile (this one froze or was
        // cut off), stop waiting for it after a grace period instead of FORWARD_TIMEOUT_MS.
        const watch: ForwardWatch | null =
          req.consistency === 'any' && req.op === 'get' ? null : { shard, target, ac: new AbortController(), timer: null };
        if (watch !== null) this.forwards.add(watch);
        try {
          const bytes = await this.opts.forward(target, encodeKvRequest(req), {
            bulk: req.value !== undefined && req.value.length >= BULK_VALUE_BYTES,
            timeoutMs: FORWARD_TIMEOUT_MS,
            ...(watch === null ? {} : { signal: watch.ac.signal }),
          });
          reply = decodeOpReply(bytes);
        } catch (err) {
          const notSent = err instanceof RpcUnavailableError && err.notSent;
          const superseded = watch?.ac.signal.aborted === true;
          if (req.op === 'get' || notSent) {
            last = { ok: false, code: 'unavailable', message: superseded ? `${target} is no longer the primary` : `cannot reach ${target}: ${(err as Error).message}` };
            continue;
          }
          if (superseded) {
            throw new StoreError('indeterminate', `the primary ${target} was replaced while the write was in flight; it may or may not have been applied`);
          }
          throw new StoreError('indeterminate', `lost contact with the primary ${target} (${(err as Error).message}); the write may or may not have been applied`);
        } finally {
          if (watch !== null) {
            this.forwards.delete(watch);
            if (watch.timer !== null) clearTimeout(watch.timer);
          }
        }
      }
      this.readTargets.observe(target, this.opts.now() - started);
      if (reply.ok) return reply;
      last = reply;
      if (reply.code === 'not_primary' || reply.code === 'unavailable' || reply.code === 'stopping') continue;
      if (reply.code === 'not_enough_replicas' && this.opts.now() + 100 < deadline) continue;
      break;
    }
    if (last.ok) throw new Error('unreachable');
    const code: StoreErrorCode = last.code === 'not_primary' ? 'unavailable' : last.code;
    const message = last.code === 'not_primary' ? `no serving primary for the key's shard within ${this.opts.requestTimeoutMs} ms (${last.message})` : last.message;
    throw new StoreError(code, message, last.current, RETRYABLE_STORE_ERRORS.has(code) ? 1 : undefined);
  }

  /** The key's shard and the peer to send `req` to, or null before the shards are assigned. */
  private pickTarget(req: KvRequest): { shard: number; target: string | null } | null {
    const view = this.opts.view();
    const settings = view.settings;
    if (settings === null || view.shards.length === 0) return null;
    const shard = shardOf(req.key, settings.shardCount);
    const a: ShardAssignment | undefined = view.shards[shard];
    if (a === undefined) return null;
    return { shard, target: this.readTargets.pick(a, view.members, req.op === 'get' && req.consistency === 'any') };
  }
}
