import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { multiaddr } from '@multiformats/multiaddr';
import type { MemberView } from '../protocols/membership/types.js';
import { validateMembershipConfig } from '../protocols/membership/config.js';
import type { KvStore } from '../storage/kv-store.js';
import { openDiskStore } from '../storage/level-store.js';
import { validatePeerOptions, type PeerOptions } from './config.js';
import { createHost, fullAddrs, type Host } from './host.js';
import { DEFAULT_HTTP_SERVER_LIMITS, HttpError, startHttpServer, type HttpServer } from './http/server.js';
import { PeerMetrics, type PeerCounters, type StoreMetrics } from './metrics.js';
import { loadOrCreatePrivateKey, nextIncarnation } from './identity.js';
import { LoadSampler } from './load-sampler.js';
import { createLogger, type Logger } from './log.js';
import { MembershipService } from './membership-service.js';
import { Coordinator, type CoordinatorStatus } from './coordinator.js';
import type { ClusterCommand } from '../protocols/cluster-map/types.js';
import { PeerStartError } from './errors.js';
import { publishJoinToken, resolveClusterKey } from './cluster-key.js';
import { isValidHttpToken } from './http/request-guard.js';
import { StoreService, type DrainStatus } from './store-service.js';
import { AutoscaleService } from './autoscale-service.js';
import { RESERVED_KEY_PREFIX, TaskError, TaskService, type TaskHandler, type TaskRecord } from './task-service.js';
import { isFinishedState, type TaskState } from '../protocols/scheduler/index.js';

/** What `peer.submit` takes (see parseTaskSubmission for the fields and defaults). */
export interface TaskInput {
  type: string;
  payload?: unknown;
  priority?: number;
  resources?: { cpu?: number; memMb?: number };
  idempotencyKey?: string;
  timeoutMs?: number;
  maxAttempts?: number;
}

export interface TaskHandle {
  id: string;
  /** Waits (polling, bounded by timeoutMs) until the task has finished; resolves with its record. */
  result(timeoutMs?: number): Promise<TaskRecord>;
}

/** Keys under `_shoal/` hold the cluster's own records (tasks): refused to clients. */
function checkUserKey(key: string): Promise<never> | null {
  if (typeof key === 'string' && key.startsWith(RESERVED_KEY_PREFIX)) {
    return Promise.reject(new StoreError('invalid_key', `keys starting with ${JSON.stringify(RESERVED_KEY_PREFIX)} are reserved for the cluster's own records`));
  }
  return null;
}

async function waitForTask(tasks: TaskService, id: string, timeoutMs: number): Promise<TaskRecord> {
  const deadline = Date.now() + timeoutMs;
  for (let i = 0; Date.now() < deadline; i++) {
    const rec = await tasks.get(id).catch(() => null);
    if (rec !== null && isFinishedState(rec.state)) return rec;
    await new Promise((r) => setTimeout(r, Math.min(500, 20 * (i + 1))));
  }
  throw new TaskError('unavailable', `task ${id} did not finish within ${timeoutMs} ms`);
}

/** /healthz reports a peer that has known no coordinator this long (elections take 1-2 s). */
const HEALTH_NO_COORDINATOR_MS = 5000;
/** /healthz reports a shard the map gives this peer that has had no open replica this long. */
const HEALTH_SHARD_MISSING_MS = 10_000;
import { StoreError, type GetOptions, type GetOutcome, type KvApi, type PutOptions, type ShardSummary, type WriteOutcome } from './store-api.js';

export interface PeerStatus extends CoordinatorStatus {
  peerId: string;
  addrs: string[];
  incarnation: number;
  members: MemberView[];
  /** Shards per peer and how many are writable; null before the cluster is bootstrapped. */
  shards: ShardSummary | null;
}

/** A running Shoal peer: its key-value operations (`put`, `get`, `delete`) go to any shard's primary. */
export interface Peer extends KvApi {
  readonly peerId: string;
  /** Full multiaddrs others can join, each with `/p2p/<peer id>`. */
  readonly addrs: string[];
  /** HOST:PORT of the HTTP API, or null when it is off. */
  readonly httpAddress: string | null;
  /**
   * The join token (`SHOAL-1-...`): the cluster key and this peer's addresses; another peer
   * joins with `--join TOKEN`. A secret. Null with `insecure` (no key).
   */
  readonly joinToken: string | null;
  status(): PeerStatus;
  /**
   * Ask the coordinator to move every replica this peer holds to the other active peers (true),
   * or to give it its share again (false). Writes keep working throughout.
   */
  setDraining(on: boolean): void;
  /** Where a drain stands: replicas still held, moves in flight, whether it is done. */
  drainStatus(): DrainStatus;
  /**
   * Submits a task (run by some peer that handles its type; see README "Tasks"). The handle's
   * `result()` resolves with the finished record (succeeded, failed or cancelled).
   */
  submit(task: TaskInput): Promise<TaskHandle>;
  /** Makes this peer a worker for `type`: `fn(payload, { id, attempt, signal })` returns the result. */
  handle(type: string, fn: TaskHandler): void;
  task(id: string): Promise<TaskRecord | null>;
  listTasks(state?: TaskState): Promise<TaskRecord[]>;
  /** Cancels a queued or running task; false when it had finished already. */
  cancelTask(id: string): Promise<boolean>;
  /**
   * Leave gracefully: hand over the coordinator role if this peer holds it, announce `left`,
   * wait (up to 3 s) to be removed from the Raft configuration, then stop libp2p and HTTP and
   * close the database. Idempotent.
   */
  stop(): Promise<void>;
  /** Resolves once the peer has stopped, whoever asked (stop(), or POST /v1/leave). */
  readonly stopped: Promise<void>;
}

/**
 * Start a peer: open the data dir, load or create its identity, start libp2p,
 * join through `join` (retrying with backoff), gossip membership and serve HTTP.
 * Throws ConfigError for bad options and PeerStartError (with `code`) when the
 * peer cannot start (data dir locked or unwritable, address in use, bad swarm key).
 */
export async function createPeer(options: Partial<PeerOptions> = {}, deps: { log?: Logger } = {}): Promise<Peer> {
  const opts = validatePeerOptions(options);
  const membershipConfig = validateMembershipConfig(opts.membership);
  const httpToken = opts.httpTokenFile === null ? null : await readHttpToken(opts.httpTokenFile);
  // Whether this data dir held a database before this start (a first start creates it below).
  const hadData = existsSync(join(opts.dataDir, 'db'));

  let store: KvStore;
  try {
    store = await openDiskStore(opts.dataDir);
  } catch (err) {
    const e = err as Error & { code?: string };
    throw new PeerStartError(e.code === 'LOCKED' ? 'DATA_DIR_LOCKED' : 'DATA_DIR', e.message);
  }

  const cleanup: Array<() => Promise<void> | void> = [() => store.close()];
  const undo = async (): Promise<void> => {
    for (const f of cleanup.reverse()) await Promise.resolve().then(f).catch(() => {});
  };
  try {
    // After the store is open, so the data dir's lock guards the key file too.
    const keyPlan = await resolveClusterKey({ dataDir: opts.dataDir, join: opts.join, swarmKeyFile: opts.swarmKeyFile, insecure: opts.insecure, hadData });
    const swarmKey = keyPlan.swarmKey;
    const meta = store.sublevel('meta');
    const { key } = await loadOrCreatePrivateKey(meta);
    const incarnation = await nextIncarnation(meta);
    const host = await createHost({ privateKey: key, listen: opts.listen, swarmKey });
    const peerId = host.peerId.toString();
    const base = (deps.log ?? createLogger(opts.logLevel)).child({ peer: peerId });
    // Every service's lines name it; the peer's own (start, leave, stop) say `peer`.
    const log = base.child({ component: 'peer' });
    try {
      await host.start();
    } catch (err) {
      await Promise.resolve()
        .then(() => host.stop())
        .catch(() => {});
      // libp2p's message spans several lines with a stack; keep one line for the operator.
      const msg = (err as Error).message;
      const inUse = /EADDRINUSE|address already in use/i.test(msg);
      const reason = inUse ? 'address already in use' : (/Error: ([^\n]+)/.exec(msg)?.[1] ?? msg.split('\n')[0]);
      throw new PeerStartError(inUse ? 'ADDRESS_IN_USE' : 'LISTEN', `cannot listen on ${opts.listen.join(', ')}: ${reason}`);
    }
    cleanup.push(() => host.stop());

    // This peer's registry (/metrics) and the histograms the services observe into.
    const metrics = new PeerMetrics();
    // Bind the HTTP port before anything is written for the cluster, so a port in use fails fast.
    let peer: PeerImpl | null = null;
    let http: HttpServer | null = null;
    if (opts.http !== 'off') {
      http = await startHttpServer(
        opts.http,
        {
          status: () => peer?.status() ?? null,
          health: () => peer?.healthProblems() ?? null,
          counters: () => peer?.counters ?? null,
          clusterMap: () => peer?.coordinator.mapView() ?? null,
          leave: () => {
            if (peer === null) throw new HttpError(503, 'starting', 'the peer is starting', { 'retry-after': '1' });
            void peer.stop().catch((err: unknown) => log.error('leave failed', { err }));
          },
          kv: () => peer?.kv ?? null,
          limits: () => ({ maxKeyBytes: opts.maxKeyBytes, maxValueBytes: opts.maxValueBytes }),
          drain: (on) => {
            if (peer === null) return null;
            peer.kv.setDraining(on);
            return peer.kv.drainStatus();
          },
          drainStatus: () => peer?.kv.drainStatus() ?? null,
          setCapacity: (capacity) => {
            if (peer === null) return null;
            peer.kv.setCapacity(capacity);
            return true;
          },
          moves: () => peer?.kv.moves() ?? null,
          tasks: () => peer?.tasks ?? null,
          autoscaler: () => peer?.autoscale?.status() ?? null,
          updateMember: async (peerId, change) => {
            if (peer === null) throw new HttpError(503, 'starting', 'the peer is starting', { 'retry-after': '1' });
            return proposeOverHttp(peer.coordinator, { type: 'update-member', peerId, capacity: change.capacity });
          },
        },
        base.child({ component: 'http' }),
        { allowedHosts: opts.httpAllowedHosts, bearerToken: httpToken },
        DEFAULT_HTTP_SERVER_LIMITS,
        metrics,
      ).catch((err: Error & { code?: string }) => {
        const inUse = err.code === 'EADDRINUSE';
        throw new PeerStartError(inUse ? 'ADDRESS_IN_USE' : 'HTTP', `cannot serve HTTP on ${opts.http}: ${err.message}`);
      });
      const h = http;
      cleanup.push(() => h.close());
    }

    const load = new LoadSampler();
    cleanup.push(() => load.stop());
    const membership = new MembershipService({
      host,
      meta,
      incarnation,
      config: membershipConfig,
      tickIntervalMs: membershipConfig.tickIntervalMs,
      load,
      log: base.child({ component: 'membership' }),
    });
    membership.start();
    cleanup.push(() => membership.stop());

    const coordinator = await Coordinator.open({
      host,
      store,
      membership,
      bootstrap: keyPlan.joinAddrs.length === 0,
      voters: opts.voters,
      replaceVoterAfterMs: opts.replaceVoterAfterMs,
      raft: opts.raft,
      sync: true,
      clusterSettings: opts.cluster,
      log: base.child({ component: 'coordinator' }),
    });
    await coordinator.start();
    cleanup.push(() => coordinator.stop());

    const kv = await StoreService.open({
      host,
      coordinator,
      store,
      log: base.child({ component: 'store' }),
      sync: opts.sync,
      capacity: opts.capacity,
      readPolicy: opts.readPolicy,
      leaseMs: opts.leaseMs,
      requestTimeoutMs: opts.requestTimeoutMs,
      limits: { maxKeyBytes: opts.maxKeyBytes, maxValueBytes: opts.maxValueBytes },
      rebalanceRateBps: opts.rebalanceRate,
      replication: { logRetainGroups: opts.logRetainGroups },
      metrics,
    });
    await kv.start();
    cleanup.push(() => kv.stop());
    const taskRes = TaskService.defaults();
    const tasks = new TaskService({ host, coordinator, kv, log: base.child({ component: 'tasks' }), slotsPerCapacity: opts.taskSlots ?? taskRes.slotsPerCapacity, memMb: taskRes.memMb });
    await tasks.start();
    cleanup.push(() => tasks.stop());
    let joinTokenNow: string | null = null;
    const autoscale = new AutoscaleService(
      {
        mode: opts.autoscale.mode,
        policy: {
          minPeers: opts.autoscale.minPeers,
          maxPeers: opts.autoscale.maxPeers,
          targetUtilization: opts.autoscale.targetUtilization,
          ...(opts.autoscale.scaleUpWindowMs !== undefined ? { scaleUpWindowMs: opts.autoscale.scaleUpWindowMs } : {}),
          ...(opts.autoscale.scaleDownWindowMs !== undefined ? { scaleDownWindowMs: opts.autoscale.scaleDownWindowMs } : {}),
          ...(opts.autoscale.cooldownMs !== undefined ? { cooldownMs: opts.autoscale.cooldownMs } : {}),
        },
        execCommand: opts.autoscale.execCommand,
        dir: opts.autoscale.dir ?? join(opts.dataDir, 'autoscaled'),
        sampleMs: 2000,
      },
      { coordinator, membership, tasks, log: base.child({ component: 'autoscaler' }), joinToken: () => joinTokenNow },
    );
    autoscale.start();
    cleanup.push(async () => autoscale.stop());

    const self = host.peerId.toString();
    const mapAddrs = (): string[] =>
      Object.entries(coordinator.mapView().members)
        .filter(([id, m]) => id !== self && m.status !== 'left')
        .flatMap(([, m]) => m.addrs);
    const joiner = new Joiner(host, keyPlan.joinAddrs, mapAddrs, opts.joinBackoffMaxMs, base.child({ component: 'join' }));
    joiner.start();
    cleanup.push(() => joiner.stop());

    peer = new PeerImpl(host, membership, coordinator, kv, tasks, log, undo);
    peer.http = http;
    if (keyPlan.keyHex !== null) peer.joinToken = await publishJoinToken(opts.dataDir, keyPlan.keyHex, peer.addrs);
    else log.warn('insecure: open network without a cluster key; any host that reaches the listen address can connect');
    joinTokenNow = peer.joinToken ?? peer.addrs[0] ?? null;
    peer.autoscale = autoscale;
    log.info('peer started', { addrs: peer.addrs, incarnation, http: peer.httpAddress, clusterKey: keyPlan.source });
    return peer;
  } catch (err) {
    await undo();
    throw err;
  }
}

/** Read and check the HTTP bearer token file: 16 to 4096 visible ASCII characters (surrounding white space ignored). */
async function readHttpToken(path: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new PeerStartError('HTTP_TOKEN', `cannot read the HTTP token file ${path}: ${(err as Error).message}`);
  }
  const token = text.trim();
  if (!isValidHttpToken(token)) {
    throw new PeerStartError('HTTP_TOKEN', `${path} must hold one token of 16 to 4096 visible ASCII characters (e.g. from 'openssl rand -hex 32')`);
  }
  return token;
}

class PeerImpl implements Peer {
  http: HttpServer | null = null;
  joinToken: string | null = null;
  autoscale: AutoscaleService | null = null;
  private stopping: Promise<void> | null = null;
  private markStopped!: () => void;
  readonly stopped = new Promise<void>((resolve) => {
    this.markStopped = resolve;
  });

  constructor(
    private readonly host: Host,
    private readonly membership: MembershipService,
    readonly coordinator: Coordinator,
    readonly kv: StoreService,
    readonly tasks: TaskService,
    private readonly log: Logger,
    private readonly undo: () => Promise<void>,
  ) {}

  get peerId(): string {
    return this.host.peerId.toString();
  }

  setDraining(on: boolean): void {
    this.kv.setDraining(on);
  }

  drainStatus(): DrainStatus {
    return this.kv.drainStatus();
  }

  /** Why this peer is not healthy (/healthz): its coordinator's and its store's problems; empty when healthy. */
  healthProblems(): string[] {
    return [...this.coordinator.healthProblems(HEALTH_NO_COORDINATOR_MS), ...this.kv.healthProblems(HEALTH_SHARD_MISSING_MS)];
  }

  get counters(): PeerCounters & { store: StoreMetrics } {
    return {
      membership: this.membership.counters,
      raft: { ...this.coordinator.channelCounters, ...this.coordinator.counters },
      store: this.kv.metrics(),
      libp2pConnections: this.host.getConnections().length,
    };
  }

  get addrs(): string[] {
    return fullAddrs(this.host);
  }

  get httpAddress(): string | null {
    return this.http?.address ?? null;
  }

  status(): PeerStatus {
    return {
      peerId: this.peerId,
      addrs: this.addrs,
      incarnation: this.membership.core.incarnation,
      ...this.coordinator.status(),
      members: this.membership.members(),
      shards: this.kv.summary(),
    };
  }

  put(key: string, value: Uint8Array | string, options?: PutOptions): Promise<WriteOutcome> {
    return checkUserKey(key) ?? this.kv.put(key, value, options);
  }

  get(key: string, options?: GetOptions): Promise<GetOutcome | null> {
    return checkUserKey(key) ?? this.kv.get(key, options);
  }

  delete(key: string): Promise<WriteOutcome> {
    return checkUserKey(key) ?? this.kv.delete(key);
  }

  async submit(task: TaskInput): Promise<TaskHandle> {
    const id = await this.tasks.submit(task);
    return { id, result: (timeoutMs?: number) => waitForTask(this.tasks, id, timeoutMs ?? 600_000) };
  }

  handle(type: string, fn: TaskHandler): void {
    this.tasks.handle(type, fn);
  }

  task(id: string): Promise<TaskRecord | null> {
    return this.tasks.get(id);
  }

  listTasks(state?: TaskState): Promise<TaskRecord[]> {
    return this.tasks.list(state);
  }

  cancelTask(id: string): Promise<boolean> {
    return this.tasks.cancel(id);
  }

  stop(): Promise<void> {
    if (this.stopping === null) {
      this.stopping = (async () => {
        this.log.info('leaving');
        // Hand over the coordinator role first, so the cluster does not wait out an election.
        await this.coordinator.transferLeadershipAway().catch(() => {});
        // Then give up the primary lease, so the shards this peer leads move at once.
        await this.kv.releaseLease().catch(() => {});
        await this.membership.leave().catch(() => {});
        // The coordinator removes a peer that left; wait (bounded) for that while others remain.
        const st = this.coordinator.status();
        const others = [...st.voters, ...st.learners].filter((id) => id !== this.peerId);
        if (others.length > 0 && st.coordinator !== null && st.coordinator !== this.peerId) {
          await this.coordinator.waitRemoved(3000);
        }
        await this.membership.flush();
        await this.undo();
        this.log.info('stopped');
        this.markStopped();
      })();
    }
    return this.stopping;
  }
}

/**
 * Dials the `--join` addresses with exponential backoff until one answers; afterwards,
 * whenever the peer finds itself with no connection at all, it joins again, through the
 * `--join` addresses and the addresses of the members in its copy of the cluster map (so
 * a restarted peer whose only seed died still finds the others).
 */
class Joiner {
  private timer: NodeJS.Timeout | null = null;
  private watch: NodeJS.Timeout | null = null;
  private attempt = 0;
  private stopped = false;
  private joining = false;

  constructor(
    private readonly host: Host,
    private readonly joinAddrs: string[],
    private readonly knownAddrs: () => string[],
    private readonly backoffMaxMs: number,
    private readonly log: Logger,
  ) {}

  private get addrs(): string[] {
    return [...new Set([...this.joinAddrs, ...this.knownAddrs()])];
  }

  start(): void {
    if (this.addrs.length > 0) void this.tryOnce();
    this.watch = setInterval(() => {
      if (!this.joining && this.host.getConnections().length === 0 && this.addrs.length > 0) {
        this.log.warn('no connections left; joining again');
        this.attempt = 0;
        void this.tryOnce();
      }
    }, 5000);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    if (this.watch !== null) clearInterval(this.watch);
  }

  private async tryOnce(): Promise<void> {
    this.joining = true;
    this.attempt++;
    for (const a of this.addrs) {
      if (this.stopped) return;
      try {
        await this.host.dial(multiaddr(a), { signal: AbortSignal.timeout(2000) });
        this.log.info('joined', { via: a, attempt: this.attempt });
        this.joining = false;
        return;
      } catch (err) {
        this.log.warn('join attempt failed', { via: a, attempt: this.attempt, err });
      }
    }
    if (this.stopped) return;
    const delayMs = Math.min(this.backoffMaxMs, 250 * 2 ** Math.min(this.attempt - 1, 10));
    this.timer = setTimeout(() => void this.tryOnce(), delayMs);
  }
}
/** Propose a map command on this peer (it must be the coordinator) and map failures to HTTP answers. */
async function proposeOverHttp(coordinator: Coordinator, cmd: ClusterCommand): Promise<number> {
  try {
    await coordinator.propose(cmd);
    return coordinator.status().clusterMapVersion;
  } catch (err) {
    const e = err as Error & { leader?: string | null; reason?: string };
    switch (e.name) {
      case 'NotLeaderError':
        throw new HttpError(
          503,
          'not_coordinator',
          e.leader ? `this peer is not the coordinator; send the request to ${e.leader}` : 'no coordinator is elected yet',
          { 'retry-after': '1', ...(e.leader ? { 'x-shoal-coordinator': e.leader } : {}) },
        );
      case 'CommandRejectedError':
        if (e.reason === 'unknown-member') throw new HttpError(404, 'not_found', e.message);
        if (e.reason === 'invalid-member') throw new HttpError(400, 'bad_request', e.message);
        throw new HttpError(409, 'rejected', e.message);
      case 'ProposalDroppedError':
      case 'ProposalTimeoutError':
        throw new HttpError(503, 'unavailable', e.message, { 'retry-after': '1' });
      default:
        throw err;
    }
  }
}
