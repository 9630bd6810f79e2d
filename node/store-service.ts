/**
 * The store's shell (DESIGN §3): one ReplicaCore per shard this peer holds, driven by timers,
 * libp2p streams and the shard storage, serving operations on this peer's replicas. Its other
 * concerns live in modules of their own and are wired up here: client operations validated and
 * routed to the shard's primary (store-router.ts), lease renewals (lease-client.ts), snapshots
 * received (snapshot-receiver.ts) and sent (snapshot-sender.ts), and, on the coordinator, the
 * lease table and the ShardController that turns membership, leases and progress into shard
 * assignments (shard-control-service.ts).
 *
 * Order of effects for each replica Ready (the core's contract, protocols/replication/replica.ts):
 * answer clients → persist (one LevelDB batch) → send messages and snapshots, queue coordinator
 * requests → advance. Each shard's Readys and snapshot installs run one at a time. After every
 * input the primary's appends and the answers are taken out at once (pipelining: sent while the
 * primary's own write runs, answered at commit).
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ClusterMapView } from '../protocols/cluster-map/types.js';
import { effectiveMinInSync } from '../protocols/cluster-map/cluster-map.js';
import { InvalidMessageError } from '../protocols/errors.js';
import { shardOf } from '../protocols/placement/index.js';
import { decodeReplicationMessage, encodeReplicationMessage, REPLICATION_PROTOCOL_ID } from '../protocols/replication/codec.js';
import { MAX_KEY_BYTES, MAX_VALUE_BYTES, type ReplicationConfig } from '../protocols/replication/config.js';
import { ReplicaCore } from '../protocols/replication/replica.js';
import { keyProblem } from '../protocols/replication/versions.js';
import type {
  LoggedOp,
  ReplicationMessage,
  ReplicationReady,
  SnapshotMeta,
  WriteOp,
  WriteResult,
} from '../protocols/replication/types.js';
import type { CatchUpReport } from '../protocols/shard-control/index.js';
import type { KvStore } from '../storage/kv-store.js';
import { InvalidShardInputError, ShardStore, type ShardEntry, type ShardSnapshotWriter } from '../storage/shard-store.js';
import { crc32 } from '../storage/checksum.js';
import type { TransferProgress } from '../protocols/rebalance/index.js';
import type { Coordinator } from './coordinator.js';
import type { Host } from './host.js';
import type { Logger } from './log.js';
import { RpcEndpoint } from './rpc.js';
import { WriteWaiters } from './write-waiters.js';
import { SNAPSHOT_CHUNK_BYTES, SnapshotSender } from './snapshot-sender.js';
import { decodeKvRequest, encodeOpReply, type KvRequest, type OpReply } from './kv-frames.js';
import { ShardControlService } from './shard-control-service.js';
import { LeaseClient, LEASE_RENEW_MS } from './lease-client.js';
import { SnapshotReceiver } from './snapshot-receiver.js';
import { StoreRouter } from './store-router.js';
import {
  StoreError,
  type GetOptions,
  type GetOutcome,
  type KvApi,
  type PutOptions,
  type ReadConsistency,
  type ReadPolicy,
  type ShardInfo,
  type ShardSummary,
  type StoreLimits,
  type WriteOutcome,
} from './store-api.js';
import {
  arr,
  decodeFrame,
  encodeFrame,
  FrameKind,
  int,
  LEASE_PROTOCOL_ID,
  obj,
  optInt,
  str,
  STORE_BULK_PROTOCOL_ID,
  STORE_PROTOCOL_ID,
  type Frame,
} from './store-wire.js';
import { ReplicationOutbox, splitBatch } from './replication-outbox.js';
import { groupBytes } from '../protocols/replication/log.js';
import { StreamChannel } from './stream-channel.js';
import type { PeerMetrics, StoreMetrics } from './metrics.js';

/** Where a drain of this peer stands (GET /v1/drain). */
export interface DrainStatus {
  /** This peer asked to be drained. */
  wanted: boolean;
  /** Its status in the committed map (active, draining, ...), null before it is a member. */
  status: string | null;
  /** Shard replicas (and primaries) the map still gives it. */
  replicas: number;
  primaries: number;
  /** Replicas being filled anywhere in the cluster. */
  movesInFlight: number;
  /** Active members other than this peer: with none, a drain cannot move anything. */
  activePeersLeft: number;
  /** Draining and holding no replica: it may leave without any data moving after it. */
  done: boolean;
}

/** A replica being filled (GET /v1/moves). */
export interface MoveInfo {
  shard: number;
  /** The peer receiving the replica. */
  to: string;
  /** The shard's primary, which sends it (null while the shard has none). */
  from: string | null;
  epoch: number;
  /** Coordinator only: how long it has been catching up, its log position and the primary's. */
  forMs: number | null;
  /** Snapshot bytes received so far and an estimate of the total (storage's size of the data), null while no snapshot is streaming (a log catch-up, or not known here). */
  bytesDone: number | null;
  bytesTotal: number | null;
  /** Bytes per second of the snapshot stream, and the time left at that rate, ms. */
  rateBps: number | null;
  etaMs: number | null;
  /** Times the stream broke and went on from the last acknowledged chunk. */
  resumes: number | null;
  seq: number | null;
  primarySeq: number | null;
}

export interface StoreServiceOptions {
  host: Host;
  coordinator: Coordinator;
  /** Root store of the data dir; shards live in the `shards` sublevel. */
  store: KvStore;
  log: Logger;
  /** fsync every group commit (survives power loss); default off: OS buffers (survives a process crash). */
  sync: boolean;
  /** This peer's relative capacity, reported to the coordinator. */
  capacity: number;
  readPolicy: ReadPolicy;
  /** Lease length granted by this peer when it is the coordinator, ms. */
  leaseMs: number;
  limits: StoreLimits;
  /** How long a client operation waits for a serving primary before answering `unavailable`, ms. */
  requestTimeoutMs: number;
  replication?: Partial<ReplicationConfig>;
  /** Bytes per second all snapshot transfers of this peer share (--rebalance-rate); null or absent: unlimited. */
  rebalanceRateBps?: number | null;
  /** Histograms of this peer's registry (write and move durations); absent: not observed. */
  metrics?: Pick<PeerMetrics, 'replicationWriteDuration' | 'moveDuration'>;
}

/** Largest frame on the bulk protocol (forwarded large writes, snapshot chunks). */
const BULK_FRAME_BYTES = 8 * 1024 * 1024;
/**
 * A removed replica's data stays on disk this long before it is deleted, ms (the reReplicateAfterMs
 * of a dead peer, for the same reason): a move that is undone, or a replica added back, starts
 * from the old copy instead of a full snapshot.
 */
const REMOVED_COPY_GRACE_MS = 30_000;

/** Tick of the replica cores, ms (well under their heartbeat). */
const TICK_MS = 20;
/**
 * Replication heartbeat of each primary to each backup while there is something to repair or
 * tell, ms. The core's default is 50; with 64 shards × 2 backups that is 2,560 heartbeats and as
 * many acks a second per peer. 100 still repairs a lost append within the 500 ms ack timeout. A
 * backup with nothing to learn gets one every idleHeartbeatIntervalMs (1 s) instead: measured side
 * by side, an idle peer went from ~0.17 to ~0.13 cores and from ~190 to ~90-160 socket writes a second.
 */
const REPLICATION_HEARTBEAT_MS = 100;
/** How often the coordinator runs the shard controller, ms. */
const CONTROL_MS = 50;
/** Bound on a client write waiting for its group to commit, ms; then `indeterminate`. */
const WRITE_ANSWER_TIMEOUT_MS = 10_000;
/**
 * Most bytes of replication messages batched into one frame to a peer. Batching exists for the
 * many small messages of a turn (acks, heartbeats, small appends); 1 MiB is far below the frame
 * limit (MAX_FRAME_BYTES), and a message larger than this travels in a frame of its own.
 */
const REPLICATION_BATCH_BYTES = 1024 * 1024;
/** Most bytes of replication messages encoded per turn of the event loop (see ReplicationOutbox). */
const REPLICATION_BYTES_PER_TURN = 1024 * 1024;
/** Most replication messages waiting per peer: every shard's window and heartbeats, with room. */
const REPLICATION_QUEUED_PER_PEER = 16_384;
/** Longest a replication message of a newer epoch waits for the local map to catch up, ms. */
const PARK_MS = 300;
/** Most such messages held per shard. */
const MAX_PARKED = 256;

interface ShardSlot {
  shard: number;
  core: ReplicaCore;
  /** Serializes Readys and snapshot installs of this shard. */
  mutex: Promise<void>;
  draining: boolean;
  again: boolean;
  removed: boolean;
  /** Messages of a newer epoch than the local map, held for the map to catch up (see onReplicationFrame). */
  parked: Array<{ m: ReplicationMessage; atMs: number }>;
}

export class StoreService implements KvApi {
  private readonly self: string;
  private readonly slots = new Map<number, ShardSlot>();
  private readonly opening = new Map<number, Promise<ShardSlot | null>>();
  private readonly waiters: WriteWaiters;
  /** Client operations: validated, routed to the primary (node/store-router.ts). */
  private readonly router: StoreRouter;
  private nextRequestId = 1;
  /** Snapshots other peers send here (node/snapshot-receiver.ts). */
  private readonly receiver: SnapshotReceiver;
  /** Snapshots being sent, by `shard:to`, and broken ones held for a resume. */
  private readonly snapshots: SnapshotSender;
  /** Copies of removed replicas waiting out REMOVED_COPY_GRACE_MS before they are deleted. */
  private readonly pendingDeletes = new Map<number, NodeJS.Timeout>();
  /** Shared by every snapshot this peer sends (--rebalance-rate). */
  /** Small forwarded operations (STORE_PROTOCOL_ID). */
  private readonly rpc: RpcEndpoint;
  /** Large forwarded writes and snapshots (STORE_BULK_PROTOCOL_ID). */
  private readonly bulkRpc: RpcEndpoint;
  /** Leases (LEASE_PROTOCOL_ID). */
  private readonly leaseRpc: RpcEndpoint;
  private readonly channel: StreamChannel;
  private readonly outbox: ReplicationOutbox;
  /** When each peer last sent us replication traffic (any shard): a slow backup is not a gone one (ReplicaCore.tick). */
  private readonly heardAt = new Map<string, number>();
  private view: ClusterMapView;
  private timers: NodeJS.Timeout[] = [];
  private stopped = false;
  /** This peer's side of the primary lease (node/lease-client.ts). */
  private readonly lease: LeaseClient;
  /** The coordinator's side of leases and shard control (idle unless this peer leads). */
  private readonly control: ShardControlService;
  readonly counters = {
    served: 0,
    /** Copies of removed replicas deleted after the grace period. */
    copiesDeleted: 0,
    catchUpBytesReceived: 0,
    /** Replication messages dropped for exceeding the frame limit (should stay 0). */
    replicationRefused: 0,
    /** Replication messages the committed map does not back (sender not a replica or not the primary, epoch never reached). */
    replicationRejected: 0,
    /** Store and lease requests and snapshot transfers refused for the sender's role in the map. */
    requestsRejected: 0,
  };

  private constructor(
    private readonly opts: StoreServiceOptions,
    private readonly shardStore: ShardStore,
  ) {
    this.self = opts.host.peerId.toString();
    this.router = new StoreRouter({
      self: this.self,
      limits: opts.limits,
      requestTimeoutMs: opts.requestTimeoutMs,
      readPolicy: opts.readPolicy,
      now: () => this.now(),
      view: () => this.view,
      stopped: () => this.stopped,
      serveLocal: (req) => this.serveLocal(req),
      forward: (to, frame, { bulk, timeoutMs, signal }) => (bulk ? this.bulkRpc : this.rpc).request(to, frame, { timeoutMs, ...(signal === undefined ? {} : { signal }) }),
    });
    this.view = opts.coordinator.mapView();
    const writeDuration = opts.metrics?.replicationWriteDuration;
    this.waiters = new WriteWaiters(
      WRITE_ANSWER_TIMEOUT_MS,
      writeDuration === undefined ? null : { now: () => this.now(), applied: (ms) => writeDuration.observe(ms / 1000) },
    );
    this.snapshots = new SnapshotSender({
      self: this.self,
      shardStore,
      request: (to, frame, timeoutMs) => this.bulkRpc.request(to, frame, { timeoutMs }),
      rateBps: opts.rebalanceRateBps ?? null,
      log: opts.log.child({ component: 'snapshots' }),
      now: () => this.now(),
      stopped: () => this.stopped,
      onMoveDone: (seconds) => opts.metrics?.moveDuration.observe(seconds),
    });
    this.control = new ShardControlService({
      coordinator: opts.coordinator,
      leaseMs: opts.leaseMs,
      log: opts.log.child({ component: 'shard-control' }),
      now: () => this.now(),
      view: () => this.view,
    });
    this.receiver = new SnapshotReceiver({
      self: this.self,
      shardStore,
      view: () => this.view,
      hold: async (shard) => (this.slots.get(shard) ?? (await this.openShard(shard))) != null,
      install: (shard, meta, writer) => this.installSnapshot(shard, meta, writer),
      onRejected: () => this.counters.requestsRejected++,
      log: opts.log,
    });
    this.lease = new LeaseClient({
      self: this.self,
      leaseMs: opts.leaseMs,
      capacity: opts.capacity,
      now: () => this.now(),
      view: () => this.view,
      coordinator: () => opts.coordinator.status().coordinator,
      grantLocal: (header) => this.control.grantLease(this.self, header),
      request: (to, frame, timeoutMs) => this.leaseRpc.request(to, frame, { timeoutMs }),
      progress: () => [...this.slots.values()].filter((s) => !s.removed).map((s) => s.core.progress()),
      transfers: () => this.transfers(),
      apply: (until) => {
        const now = this.now();
        for (const slot of this.slots.values()) {
          slot.core.setLease(now, until);
          this.afterInput(slot);
        }
      },
      stopped: () => this.stopped,
      log: opts.log,
    });
    this.rpc = new RpcEndpoint({
      host: opts.host,
      protocol: STORE_PROTOCOL_ID,
      handler: (from, body) => this.handleRpc(from, body, 'store'),
      log: opts.log,
    });
    this.bulkRpc = new RpcEndpoint({
      host: opts.host,
      protocol: STORE_BULK_PROTOCOL_ID,
      handler: (from, body) => this.handleRpc(from, body, 'bulk'),
      // A snapshot chunk: about SNAPSHOT_CHUNK_BYTES, plus at most one more entry (a batch is cut
      // after the entry that reaches the size) and its index: under 8 MiB.
      limits: { maxFrameBytes: BULK_FRAME_BYTES, maxQueuedBytesPerPeer: 4 * BULK_FRAME_BYTES },
      log: opts.log,
    });
    this.leaseRpc = new RpcEndpoint({
      host: opts.host,
      protocol: LEASE_PROTOCOL_ID,
      handler: (from, body) => this.handleRpc(from, body, 'lease'),
      log: opts.log,
    });
    this.channel = new StreamChannel({
      host: opts.host,
      protocol: REPLICATION_PROTOCOL_ID,
      onFrame: (from, frame) => this.onReplicationFrame(from, frame),
      maxQueuedFrames: 4096,
      maxQueuedBytes: 64 * 1024 * 1024,
      dialTimeoutMs: 2000,
      log: opts.log,
    });
    this.outbox = new ReplicationOutbox({
      encode: encodeReplicationMessage,
      send: (to, frame) => this.channel.send(to, frame),
      maxFrameBytes: this.channel.maxFrameBytes,
      batchBytes: REPLICATION_BATCH_BYTES,
      bytesPerTurn: REPLICATION_BYTES_PER_TURN,
      maxQueuedPerPeer: REPLICATION_QUEUED_PER_PEER,
      onRefused: (m, bytes) => {
        // Cannot happen within the core's limits (one group is at most ~1.4 MiB encoded); if it
        // does, this message alone is lost (the core resends, or reports the replica late).
        this.counters.replicationRefused++;
        this.opts.log.error('replication message over the frame limit dropped', { to: m.to, shard: m.shard, bytes, maxFrameBytes: this.channel.maxFrameBytes });
      },
    });
  }

  static async open(opts: StoreServiceOptions): Promise<StoreService> {
    const shardStore = await ShardStore.open(opts.store.sublevel('shards'), { snapshotBatchBytes: SNAPSHOT_CHUNK_BYTES });
    return new StoreService(opts, shardStore);
  }

  private now(): number {
    return performance.now();
  }

  async start(): Promise<void> {
    await this.rpc.start();
    await this.bulkRpc.start();
    await this.leaseRpc.start();
    await this.channel.start();
    this.opts.coordinator.onMapChange(() => this.onMapChange());
    this.onMapChange();
    this.timers.push(setInterval(() => this.tick(), TICK_MS));
    this.timers.push(setInterval(() => void this.lease.renew(), LEASE_RENEW_MS));
    this.timers.push(setInterval(() => this.control.control(), CONTROL_MS));
    // Copies left on disk by replicas removed before the last stop: deleted after the grace
    // period unless the map lists this peer for them again by then.
    for (const shard of this.shardStore.shards()) if (!this.slots.has(shard)) this.scheduleDelete(shard);
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.control.stop();
    for (const t of this.timers) clearInterval(t);
    for (const t of this.pendingDeletes.values()) clearTimeout(t);
    this.pendingDeletes.clear();
    this.waiters.rejectAll('the peer stopped before the write was acknowledged; it may or may not have been applied');
    this.outbox.close();
    await this.rpc.stop();
    await this.bulkRpc.stop();
    await this.leaseRpc.stop();
    await this.channel.stop();
    // Let Readys in progress finish before the database closes (bounded).
    for (let i = 0; i < 200 && [...this.slots.values()].some((s) => s.draining); i++) await sleep(10);
    await this.receiver.dropAll();
  }

  // -------------------------------------------------------------------------------------------
  // Map changes: create, update and remove replica cores.

  private onMapChange(): void {
    if (this.stopped) return;
    this.view = this.opts.coordinator.mapView();
    const now = this.now();
    for (const id of this.heardAt.keys()) if (!Object.hasOwn(this.view.members, id)) this.heardAt.delete(id);
    this.control.observe(now, this.view);
    const minInSync = effectiveMinInSync(this.view);
    this.view.shards.forEach((a, shard) => {
      const slot = this.slots.get(shard);
      if (slot !== undefined) {
        slot.core.setAssignment(now, a);
        slot.core.setMinInSync(now, Math.min(minInSync, slot.core.config.minInSync));
        this.unpark(slot, now, false);
        this.afterInput(slot);
      } else if (a.replicas.includes(this.self)) {
        void this.openShard(shard);
      }
    });
    this.router.onMapChange(this.view);
    this.lease.onMapChange(this.view);
  }

  private openShard(shard: number): Promise<ShardSlot | null> {
    const existing = this.opening.get(shard);
    if (existing !== undefined) return existing;
    const pending = this.pendingDeletes.get(shard);
    if (pending !== undefined) {
      // Listed again within the grace period: the old copy is where this replica starts from.
      clearTimeout(pending);
      this.pendingDeletes.delete(shard);
    }
    const p = (async (): Promise<ShardSlot | null> => {
      try {
        const recovered = await this.shardStore.recover(shard);
        const repair = this.shardStore.takeRepair(shard);
        if (repair !== null) {
          this.opts.log.warn('shard log: damaged records found at open were removed', { shard, ...repair });
          if (repair.kind === 'tail') this.repairedShards.set(shard, { untilSeq: repair.seq + repair.dropped - 1, repair });
        }
        if (this.stopped) return null;
        const settings = this.view.settings;
        const core = new ReplicaCore({
          shard,
          id: this.self,
          config: { heartbeatIntervalMs: REPLICATION_HEARTBEAT_MS, ...this.opts.replication, minInSync: settings?.minInSync ?? 2 },
          recovered,
        });
        const slot: ShardSlot = { shard, core, mutex: Promise.resolve(), draining: false, again: false, removed: false, parked: [] };
        this.slots.set(shard, slot);
        const now = this.now();
        const a = this.view.shards[shard];
        if (a !== undefined) core.setAssignment(now, a);
        core.setMinInSync(now, Math.min(effectiveMinInSync(this.view), core.config.minInSync));
        core.setLease(now, this.lease.leaseUntil);
        this.afterInput(slot);
        this.opts.log.debug('shard opened', { shard, appliedSeq: recovered.appliedSeq, log: recovered.log.length, epoch: recovered.epoch });
        this.failedShards.delete(shard);
        return slot;
      } catch (err) {
        this.opts.log.error('cannot open shard', { shard, err });
        this.failedShards.set(shard, `cannot open: ${(err as Error).message ?? String(err)}`);
        return null;
      } finally {
        this.opening.delete(shard);
      }
    })();
    this.opening.set(shard, p);
    return p;
  }

  // -------------------------------------------------------------------------------------------
  // The Ready loop.

  private afterInput(slot: ShardSlot): void {
    this.takeUnblocked(slot);
    if (slot.core.hasReady() || slot.core.role === 'removed') this.kick(slot);
  }

  /**
   * The primary's appends go out in parallel with its own write, and answers at commit
   * (ReplicaCore.takeEarlyMessages, takeAnswers): neither waits for the shard's Ready in progress.
   * Called after every input and after every advance (which commits and seals groups too).
   */
  private takeUnblocked(slot: ShardSlot): void {
    if (this.stopped || slot.removed) return;
    for (const m of slot.core.takeEarlyMessages()) this.outbox.push(m);
    const answers = slot.core.takeAnswers();
    if (answers.length > 0) this.waiters.deliver(answers);
  }


  private kick(slot: ShardSlot): void {
    if (this.stopped || slot.removed) return;
    if (slot.draining) {
      slot.again = true;
      return;
    }
    slot.draining = true;
    void this.drain(slot).finally(() => {
      slot.draining = false;
    });
  }

  private exclusive<T>(slot: ShardSlot, fn: () => Promise<T>): Promise<T> {
    const run = slot.mutex.then(fn);
    slot.mutex = run.then(
      () => {},
      () => {},
    );
    return run;
  }

  private async drain(slot: ShardSlot): Promise<void> {
    for (let rounds = 0; rounds < 100_000 && !this.stopped; rounds++) {
      slot.again = false;
      if (slot.core.role === 'removed' && !slot.core.hasReady()) {
        await this.removeShard(slot);
        return;
      }
      if (!slot.core.hasReady()) {
        if (slot.again) continue;
        return;
      }
      try {
        await this.exclusive(slot, () => this.handleReady(slot));
      } catch (err) {
        // Losing the disk under a replica breaks its promises: stop this replica rather than lie.
        this.opts.log.error('shard persistence failed; dropping the replica until restart', { shard: slot.shard, err });
        this.failedShards.set(slot.shard, (err as Error).message ?? String(err));
        slot.removed = true;
        this.slots.delete(slot.shard);
        return;
      }
    }
  }

  private async handleReady(slot: ShardSlot): Promise<void> {
    const core = slot.core;
    const rd: ReplicationReady = core.ready();
    // Answers are about committed groups (or writes that never happened): they need nothing of
    // this Ready on disk.
    this.waiters.deliver(rd.answers);
    const logChange = rd.appendLog.length > 0 || rd.truncateLogAfterSeq !== undefined;
    const durable = logChange || rd.apply.length > 0 || rd.hardState !== undefined || rd.trimLogThroughSeq !== undefined;
    if (durable) {
      const sync = rd.hardState !== undefined || (this.opts.sync && (logChange || rd.apply.length > 0));
      await this.shardStore.persistReady(slot.shard, rd, { sync });
    }
    for (const m of rd.messages) this.outbox.push(m);
    for (const s of rd.snapshots) void this.snapshots.send(s.shard, s.to, s.epoch);
    this.lease.request(rd.coordinatorRequests);
    core.advance(this.now(), rd);
    this.takeUnblocked(slot);
  }

  private async removeShard(slot: ShardSlot): Promise<void> {
    slot.removed = true;
    this.slots.delete(slot.shard);
    await this.receiver.drop(slot.shard);
    // The old copy stays on disk for REMOVED_COPY_GRACE_MS: a move undone or a replica added
    // back meanwhile starts from it (a catch-up, not a full copy).
    await slot.mutex.catch(() => {});
    this.scheduleDelete(slot.shard);
    this.opts.log.info('shard replica removed', { shard: slot.shard, deleteAfterMs: REMOVED_COPY_GRACE_MS });
    // The map may list us again already.
    if (this.view.shards[slot.shard]?.replicas.includes(this.self)) void this.openShard(slot.shard);
  }

  private scheduleDelete(shard: number): void {
    if (this.pendingDeletes.has(shard) || this.stopped) return;
    const timer = setTimeout(() => {
      this.pendingDeletes.delete(shard);
      void this.deleteIfUnused(shard);
    }, REMOVED_COPY_GRACE_MS);
    timer.unref();
    this.pendingDeletes.set(shard, timer);
  }

  /** Deletes a removed replica's copy, unless the shard is held (or listed for this peer) again. */
  private async deleteIfUnused(shard: number): Promise<void> {
    if (this.stopped || this.slots.has(shard) || this.opening.has(shard) || this.view.shards[shard]?.replicas.includes(this.self)) return;
    const staged = this.shardStore.stagedSnapshot(shard);
    if (this.shardStore.appliedSeq(shard) === 0 && this.shardStore.logBounds(shard).lastSeq === 0 && staged === null) return;
    try {
      await this.shardStore.deleteShard(shard, { sync: false });
      this.counters.copiesDeleted++;
      this.opts.log.info('old shard copy deleted', { shard });
    } catch (err) {
      this.opts.log.warn('cannot delete shard data', { shard, err });
    }
  }

  /**
   * Parked messages, checked again: after a map change all of them (those the map now backs are
   * stepped, those still ahead of it wait on), else those held PARK_MS (dropped if the map has
   * still not reached their epoch).
   */
  private unpark(slot: ShardSlot, now: number, onlyExpired: boolean): void {
    if (slot.parked.length === 0) return;
    const due = onlyExpired ? slot.parked.filter((p) => now - p.atMs >= PARK_MS) : slot.parked;
    if (due.length === 0) return;
    slot.parked = onlyExpired ? slot.parked.filter((p) => now - p.atMs < PARK_MS) : [];
    for (const p of due) {
      const verdict = this.admitReplication(p.m);
      if (verdict === null) slot.core.step(now, p.m);
      else if (verdict === 'park' && now - p.atMs < PARK_MS) slot.parked.push(p);
      else this.refuseReplication(p.m, verdict === 'park' ? `epoch ${p.m.epoch} still ahead of the map after ${PARK_MS} ms` : verdict);
    }
  }

  /**
   * Whether the committed map backs a replication message (DESIGN §4a): null to step it, 'park'
   * while the map has not reached its epoch yet (it lags Raft by milliseconds), or why it is
   * refused. The sender must hold a replica of the shard, and an append at the map's epoch must
   * come from the shard's primary; a core never adopts an epoch the map does not have.
   */
  private admitReplication(m: ReplicationMessage): 'park' | string | null {
    const a = this.view.shards[m.shard];
    if (a === undefined) return 'the shard is not assigned';
    if (m.epoch > a.epoch) return 'park';
    if (!a.replicas.includes(m.from)) return `${m.from} holds no replica of shard ${m.shard} at epoch ${a.epoch}`;
    if (m.type === 'append' && m.epoch === a.epoch && m.from !== a.primary) return `${m.from} is not the primary of shard ${m.shard} at epoch ${a.epoch}`;
    return null;
  }

  private refuseReplication(m: ReplicationMessage, why: string): void {
    this.counters.replicationRejected++;
    this.opts.log.debug('replication message refused', { shard: m.shard, type: m.type, from: m.from, epoch: m.epoch, why });
  }

  private tick(): void {
    if (this.stopped) return;
    const now = this.now();
    this.waiters.expire(now);
    for (const slot of this.slots.values()) {
      this.unpark(slot, now, true);
      slot.core.tick(now, this.heardAt);
      this.afterInput(slot);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Replication messages: out through the outbox (node/replication-outbox.ts), in as frames of
  // repeated [u32 length][encoded message].

  private onReplicationFrame(from: string, frame: Uint8Array): void {
    if (this.stopped) return;
    // Only members of the committed map replicate. A stranger's frame is dropped and counted; the
    // stream is not reset, because a peer that joined a moment ago may not be in our copy of the
    // map yet (its traffic is retried).
    if (!Object.hasOwn(this.view.members, from)) {
      this.counters.replicationRejected++;
      this.opts.log.debug('replication frame from a peer outside the cluster map dropped', { from });
      return;
    }
    const now = this.now();
    const touched = new Set<ShardSlot>();
    for (const bytes of splitBatch(frame)) {
      const m = decodeReplicationMessage(bytes);
      if (m.from !== from) throw new InvalidMessageError(`replication message claims to be from ${m.from} but came from ${from}`);
      if (m.to !== this.self) throw new InvalidMessageError(`replication message for ${m.to} reached ${this.self}`);
      const slot = this.slots.get(m.shard);
      // Not ours (yet): opening it is the map's business; the sender retries.
      if (slot === undefined) continue;
      // A message of an epoch our map has not reached yet: its sender applied a map change a
      // moment before we did. It waits until our map has the epoch (Raft applies it here within
      // milliseconds), at most PARK_MS: delaying a message is always safe, like a slow network,
      // and a core never adopts an epoch the map does not back (a forged epoch would otherwise
      // replace a backup's data). Were a primary to adopt it, it would also step down until its
      // map caught up and answer its in-flight writes `indeterminate`.
      const verdict = this.admitReplication(m);
      if (verdict === 'park') {
        if (slot.parked.length < MAX_PARKED) slot.parked.push({ m, atMs: now });
        else this.refuseReplication(m, 'too many messages waiting for the map');
        continue;
      }
      if (verdict !== null) {
        this.refuseReplication(m, verdict);
        continue;
      }
      if (m.type === 'append' && m.groups.length > 0) {
        // Data reaching a replica that is not in sync yet: a replica being filled (a move).
        const a = this.view.shards[m.shard];
        if (a !== undefined && !a.inSync.includes(this.self)) {
          for (const g of m.groups) this.counters.catchUpBytesReceived += groupBytes(g);
        }
      }
      slot.core.step(now, m);
      touched.add(slot);
    }
    this.heardAt.set(from, now);
    for (const slot of touched) this.afterInput(slot);
  }

  // -------------------------------------------------------------------------------------------
  // Snapshots: primary → replica over the bulk RPC, in numbered, checksummed chunks, one in
  // flight (the acknowledgement is the flow control), resumable (protocols/rebalance/transfer.ts).

  /** Snapshot transfers this peer is sending (or holding for a resume), for `/v1/moves`. */
  transfers(): TransferProgress[] {
    return this.snapshots.transfers();
  }

  private async installSnapshot(shard: number, meta: SnapshotMeta, writer: ShardSnapshotWriter): Promise<boolean | null> {
    const slot = this.slots.get(shard);
    if (slot === undefined) return null;
    const installed = await this.exclusive(slot, async () => {
      if (!slot.core.installSnapshot(this.now(), meta)) {
        await writer.abort();
        return false;
      }
      await writer.commit({ seq: meta.seq, epoch: meta.seqEpoch }, { sync: true });
      return true;
    });
    this.afterInput(slot);
    return installed;
  }

  /**
   * Before a graceful stop: stop serving as primary at once and tell the coordinator, which can
   * then promote other replicas without waiting out the lease (see LeaseClient.release).
   */
  releaseLease(timeoutMs = 1000): Promise<void> {
    return this.lease.release(timeoutMs);
  }

  // -------------------------------------------------------------------------------------------
  // Drains, capacity and moves.

  /** Ask the coordinator to drain this peer (move every replica it holds to others), or to stop. */
  setDraining(on: boolean): void {
    this.lease.setDraining(on);
  }

  /** Change the capacity this peer reports; the coordinator applies it to the map (its share of replicas follows). */
  setCapacity(capacity: number): void {
    this.lease.setCapacity(capacity);
  }

  /** Where a drain of this peer stands. */
  drainStatus(): DrainStatus {
    const member = this.view.members[this.self];
    let replicas = 0;
    let primaries = 0;
    for (const a of this.view.shards) {
      if (a.replicas.includes(this.self)) replicas++;
      if (a.primary === this.self) primaries++;
    }
    const others = Object.entries(this.view.members).filter(([id, m]) => id !== this.self && m.status === 'active').length;
    const status = member?.status ?? null;
    return {
      wanted: this.lease.draining,
      status,
      replicas,
      primaries,
      movesInFlight: this.movesInFlight(),
      activePeersLeft: others,
      done: status === 'draining' && replicas === 0,
    };
  }

  /** How many replicas are being filled, cluster-wide (see moves). */
  private movesInFlight(): number {
    return this.view.shards.reduce((n, a) => n + a.replicas.filter((id) => !a.inSync.includes(id)).length, 0);
  }

  /**
   * Replicas being filled: every replica not (yet) in its shard's in-sync set, from the map; with
   * the catch-up progress the coordinator sees when this peer is the coordinator.
   */
  moves(): MoveInfo[] {
    const report = this.catchUps();
    const watch = new Map((report?.active ?? []).map((w) => [`${w.shard}:${w.peer}`, w]));
    const out: MoveInfo[] = [];
    this.view.shards.forEach((a, shard) => {
      for (const to of a.replicas) {
        if (a.inSync.includes(to)) continue;
        const w = watch.get(`${shard}:${to}`);
        // Bytes of a snapshot in flight: from the primary's renewal (coordinator), or our own transfer.
        const rep = this.snapshots.progressOf(shard, to) ?? this.control.reportedTransfer(shard, to);
        const bytes =
          rep === undefined
            ? { bytesDone: null, bytesTotal: null, rateBps: null, etaMs: null, resumes: null }
            : {
                bytesDone: rep.bytesDone,
                bytesTotal: rep.bytesTotal,
                rateBps: rep.rateBps,
                etaMs: rep.bytesTotal === null || rep.rateBps <= 0 ? null : Math.round((Math.max(0, rep.bytesTotal - rep.bytesDone) / rep.rateBps) * 1000),
                resumes: rep.resumes,
              };
        out.push({
          ...bytes,
          shard,
          to,
          from: a.primary,
          epoch: a.epoch,
          forMs: w?.forMs ?? null,
          seq: w === undefined || w.lastSeq < 0 ? null : w.lastSeq,
          primarySeq: w?.primarySeq ?? null,
        });
      }
    });
    return out;
  }

  // -------------------------------------------------------------------------------------------
  // The store RPC: requests from other peers.

  private async handleRpc(from: string, body: Uint8Array, via: 'store' | 'bulk' | 'lease'): Promise<Uint8Array> {
    if (this.stopped) throw Object.assign(new Error('stopping'), { code: 'stopping' });
    const f: Frame = decodeFrame(body);
    // Only members of the committed map forward operations, renew leases or send snapshots. A
    // peer that joined a moment ago may not be in our copy of the map yet: its operation gets a
    // retryable `unavailable`.
    if (!Object.hasOwn(this.view.members, from)) {
      this.counters.requestsRejected++;
      if (f.kind === FrameKind.kv) return encodeOpReply({ ok: false, code: 'unavailable', message: `${from} is not a member of the cluster map here` });
      throw new InvalidMessageError(`${from} is not a member of the cluster map`);
    }
    // Each kind on its own protocol: leases alone; snapshots only with the bulk traffic.
    const allowed = via === 'lease' ? f.kind === FrameKind.lease : via === 'store' ? f.kind === FrameKind.kv : f.kind !== FrameKind.lease;
    if (!allowed) throw new InvalidMessageError(`frame.kind: ${f.kind} is not accepted on the ${via} protocol`);
    switch (f.kind) {
      case FrameKind.lease:
        return encodeFrame(FrameKind.reply, this.control.grantLease(from, f.header));
      case FrameKind.kv: {
        // A peer's request is checked against the protocol's limit; ours were checked by validateKey.
        const req = decodeKvRequest(f);
        const problem = keyProblem(req.key, MAX_KEY_BYTES);
        if (problem !== null) return encodeOpReply({ ok: false, code: 'invalid_key', message: problem });
        return encodeOpReply(await this.serveLocal(req));
      }
      case FrameKind.snapBegin:
        return this.receiver.begin(from, f.header);
      case FrameKind.snapChunk:
        return this.receiver.chunk(from, f.header, f.payload);
      case FrameKind.snapEnd:
        return this.receiver.end(from, f.header);
      default:
        throw new InvalidMessageError(`frame.kind: ${f.kind} is not a request`);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Serving an operation on this peer's replica.

  private async serveLocal(req: KvRequest): Promise<OpReply> {
    const settings = this.view.settings;
    if (settings === null || this.view.shards.length === 0) return { ok: false, code: 'unavailable', message: 'the shards are not assigned yet' };
    const shard = shardOf(req.key, settings.shardCount);
    const slot = this.slots.get(shard);
    if (slot === undefined || slot.removed) return { ok: false, code: 'not_primary', message: `no replica of shard ${shard} here` };
    this.counters.served++;
    if (req.op === 'get') {
      let pending: LoggedOp | null;
      try {
        pending = slot.core.read(this.now(), req.key, req.consistency ?? 'strong');
      } catch (err) {
        return this.replyForError(err);
      }
      if (pending !== null) {
        // Committed, answered, not yet applied here.
        return pending.kind === 'put'
          ? { ok: true, version: pending.version, present: true, value: pending.value.slice() } // the log's bytes stay the log's
          : { ok: true, version: pending.version, present: false, value: null };
      }
      const r = await this.shardStore.readValue(shard, req.key);
      return { ok: true, version: r.version, present: r.present, value: r.value };
    }
    const op: WriteOp =
      req.op === 'delete'
        ? { kind: 'delete', key: req.key }
        : req.ifVersion !== undefined
          ? { kind: 'cas', key: req.key, expectVersion: req.ifVersion, value: req.value ?? new Uint8Array(0) }
          : { kind: 'put', key: req.key, value: req.value ?? new Uint8Array(0) };
    try {
      const result = await this.writeLocal(slot, op);
      if (result.applied) return { ok: true, version: result.version, present: op.kind !== 'delete', value: null };
      return {
        ok: false,
        code: 'version_mismatch',
        message: `key ${JSON.stringify(req.key)} is at version ${result.current.version}${result.current.present ? '' : ' (absent)'}, not ${req.ifVersion}`,
        current: { version: result.current.version, present: result.current.present },
      };
    } catch (err) {
      return this.replyForError(err);
    }
  }

  private async writeLocal(slot: ShardSlot, op: WriteOp): Promise<WriteResult> {
    for (let attempt = 0; ; attempt++) {
      const r = await this.shardStore.readVersion(slot.shard, op.key);
      const requestId = this.nextRequestId++;
      const now = this.now();
      try {
        slot.core.write(now, { requestId, op, durable: { version: r.version, present: r.present }, durableAtSeq: r.durableAtSeq });
      } catch (err) {
        if ((err as Error).name === 'StaleVersionError' && attempt < 5) continue;
        throw err;
      }
      // The core answers later (takeAnswers or a Ready), never inside write().
      const answer = this.waiters.wait(requestId, now);
      this.afterInput(slot);
      return answer;
    }
  }

  private replyForError(err: unknown): OpReply {
    const e = err as Error;
    switch (e.name) {
      case 'NotPrimaryError':
      case 'NotInSyncError':
        return { ok: false, code: 'not_primary', message: e.message };
      case 'NotEnoughReplicasError':
        return { ok: false, code: 'not_enough_replicas', message: `writes refused: ${e.message}` };
      case 'OverloadedError':
        return { ok: false, code: 'overloaded', message: e.message };
      case 'IndeterminateWriteError':
        return { ok: false, code: 'indeterminate', message: `${e.message}; the write may or may not have been applied` };
      case 'InvalidRequestError':
        return { ok: false, code: 'invalid_request', message: e.message };
      case 'StoreError':
        return { ok: false, code: (e as StoreError).code, message: e.message };
      default:
        this.opts.log.error('store operation failed', { err });
        return { ok: false, code: 'indeterminate', message: `internal error: ${e.message}` };
    }
  }

  // -------------------------------------------------------------------------------------------
  // Client operations (any peer): see StoreRouter.

  put(key: string, value: Uint8Array | string, options: PutOptions = {}): Promise<WriteOutcome> {
    return this.router.put(key, value, options);
  }

  get(key: string, options: GetOptions = {}): Promise<GetOutcome | null> {
    return this.router.get(key, options);
  }

  delete(key: string): Promise<WriteOutcome> {
    return this.router.delete(key);
  }


  // -------------------------------------------------------------------------------------------
  // Status.

  shards(): ShardInfo[] {
    return this.view.shards.map((a, shard) => {
      const slot = this.slots.get(shard);
      return { shard, ...a, seq: slot === undefined ? null : slot.core.progress().lastSeq };
    });
  }

  /** Shards whose storage failed here (open or persist), with the error: not served until restart. */
  private readonly failedShards = new Map<number, string>();
  /** Shards whose log lost a damaged tail at open: unhealthy until the log reaches `untilSeq` again (or the replica goes). */
  private readonly repairedShards = new Map<number, { untilSeq: number; repair: { seq: number; problem: string; dropped: number } }>();
  /** Since when (local ms) each shard the map gives this peer has had no open replica. */
  private readonly missingSince = new Map<number, number>();

  /**
   * What keeps this peer from serving its shards, for /healthz: a shard whose storage failed, or
   * one the map gives this peer that has had no open replica for `missingMs`.
   */
  healthProblems(missingMs: number): string[] {
    const problems: string[] = [];
    for (const [shard, why] of this.failedShards) problems.push(`shard ${shard} storage failed: ${why}`);
    for (const [shard, r] of this.repairedShards) {
      const slot = this.slots.get(shard);
      if (slot === undefined || slot.removed || slot.core.progress().lastSeq >= r.untilSeq) {
        if (slot !== undefined) this.repairedShards.delete(shard);
        continue;
      }
      problems.push(`shard ${shard} log was damaged (${r.repair.problem} at group ${r.repair.seq}); ${r.repair.dropped} groups removed, catching up at ${slot.core.progress().lastSeq} of ${r.untilSeq}`);
    }
    const now = this.now();
    this.view.shards.forEach((a, shard) => {
      if (!a.replicas.includes(this.self) || this.slots.has(shard) || this.failedShards.has(shard)) {
        this.missingSince.delete(shard);
        return;
      }
      const since = this.missingSince.get(shard) ?? now;
      this.missingSince.set(shard, since);
      if (now - since >= missingMs) problems.push(`shard ${shard} is assigned here but not open for ${Math.round(now - since)} ms`);
    });
    return problems.slice(0, 32);
  }

  /** Catch-ups under way and abandoned ones, as the shard controller sees them; null unless this peer is the coordinator. */
  catchUps(): CatchUpReport | null {
    return this.control.catchUps();
  }

  summary(): ShardSummary | null {
    const s = this.view.settings;
    if (s === null) return null;
    const perPeer: ShardSummary['perPeer'] = {};
    let writable = 0;
    const need = effectiveMinInSync(this.view);
    for (const a of this.view.shards) {
      if (a.primary !== null && a.inSync.length >= need) writable++;
      for (const id of a.replicas) {
        const p = (perPeer[id] ??= { primaries: 0, replicas: 0 });
        p.replicas++;
        if (id === a.primary) p.primaries++;
      }
    }
    const draining = Object.entries(this.view.members)
      .filter(([, m]) => m.status === 'draining')
      .map(([id]) => id);
    return { shardCount: s.shardCount, replicationFactor: s.replicationFactor, minInSync: s.minInSync, effectiveMinInSync: need, writableShards: writable, movesInFlight: this.movesInFlight(), draining, perPeer };
  }

  /** This peer's applied copy of `key`, whatever its role (for tests and debugging); null when absent or the shard is not held here. */
  async localValue(key: string): Promise<GetOutcome | null> {
    const settings = this.view.settings;
    if (settings === null) return null;
    const shard = shardOf(this.router.validateKey(key), settings.shardCount);
    if (!this.slots.has(shard)) return null;
    const r = await this.shardStore.readValue(shard, key);
    return r.present && r.value !== null ? { value: r.value, version: r.version } : null;
  }

  /** Counters and gauges for /metrics. */
  metrics(): StoreMetrics {
    const now = this.now();
    let primaries = 0;
    let serving = 0;
    for (const slot of this.slots.values()) {
      if (slot.core.role === 'primary') primaries++;
      if (slot.core.isServing(now)) serving++;
    }
    const catchUps = this.catchUps();
    return {
      counters: { ...this.counters, ...this.router.counters, ...this.lease.counters, ...this.receiver.counters, ...this.snapshots.counters, ...this.control.counters },
      catchUps: catchUps === null ? null : { active: catchUps.active.length, abandoned: catchUps.abandoned.length, abandonedTotal: catchUps.abandonedTotal },
      movesInFlight: this.movesInFlight(),
      leaseValid: now < this.lease.leaseUntil,
      primaries,
      replicas: this.slots.size,
      serving,
      replication: { ...this.channel.counters },
    };
  }
}

