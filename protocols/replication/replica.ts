/**
 * One replica of one shard as a pure state machine: PacificA / Kafka-ISR primary-backup with
 * epochs and leases (DESIGN §3), in the etcd-raft `Ready` style. It never reads a clock, touches
 * a disk or a socket: the shell calls it with inputs and carries out its output.
 *
 * ## Shell contract
 *
 * One `ReplicaCore` per (shard, local peer) for every shard the peer holds a replica of.
 *
 * Start: read the shard's durable state (`RecoveredReplicaState`: the hard-state epoch, the op log,
 * the applied sequence number and its epoch stored with the data) and construct the core. Then
 * feed the shard's committed assignment from the local cluster map (`setAssignment`); the core
 * starts with no lease.
 *
 * Inputs (each takes `nowMs`, a monotonic local clock):
 * - `setAssignment(nowMs, a)`: every committed cluster-map change of this shard (replicas,
 *   primary, in-sync set, epoch). Older epochs are ignored.
 * - `setLease(nowMs, leaseValidUntilMs)`: the peer's coordinator lease, already discounted for
 *   clock drift (measure from when the renewal was *sent*). Apply the assignment that came with a
 *   renewal before the lease, so a peer never extends a lease for a primaryship it has lost.
 * - `step(nowMs, message)`: a decoded, validated `ReplicationMessage` (see codec.ts) addressed to
 *   this replica. `snapshot` headers do not go here (see below).
 * - `tick(nowMs)`: every ~10 ms (well under `heartbeatIntervalMs`); drives heartbeats,
 *   retransmission, ack timeouts, catch-up and coordinator retries.
 * - `write(nowMs, request)`: a client write at the primary. The shell first reads the key's
 *   version from its durable data and passes it with `durableAtSeq` (see WriteRequest and
 *   versions.ts). Throws NotPrimaryError, NotEnoughReplicasError, OverloadedError,
 *   StaleVersionError (read again, retry) or InvalidRequestError; otherwise the answer comes later
 *   (`takeAnswers()` or `Ready.answers`), once the write is committed.
 * - `read(nowMs, key, consistency)`: authorizes a read (throws NotPrimaryError or NotInSyncError)
 *   and returns the key's newest op among the committed groups not yet applied, if any; otherwise
 *   the shell reads its durable data.
 * - `installSnapshot(nowMs, meta)`: a fully received snapshot stream (header + data). If it
 *   returns true the shell must replace the shard's data with the snapshot, empty its op log and
 *   store `appliedSeq = meta.seq, appliedEpoch = meta.seqEpoch`, atomically and durably, before
 *   handling the next Ready; if false, discard the snapshot.
 *
 * Output: when `hasReady()`, take `ready()` and do, in this order:
 * 1. Persist `hardState` (the highest accepted epoch), then the op-log changes
 *    (`truncateLogAfterSeq`: delete groups after it; then append `appendLog`), and apply `apply`
 *    to the data together with the new applied seq and epoch. All durable (fsync) — may be one
 *    storage batch. Applying is idempotent (each op carries the version it sets; a delete writes a
 *    tombstone with its version).
 * 2. Then send `messages` (protocol `/shoal/replication/1.0.0`, encodeReplicationMessage), and
 *    for each of `snapshots`, stream a consistent snapshot of this replica's *applied* data with
 *    a header `{ seq: appliedSeq, seqEpoch: appliedEpoch }`. Never send these before step 1 is
 *    durable: an acknowledgement promises the data is on disk. (The primary's appends may leave
 *    earlier, through `takeEarlyMessages()`: pipelining, see there.)
 * 3. Deliver `answers` to waiting clients (they may be delivered before step 1, or taken earlier
 *    with `takeAnswers()`: every answer is about committed groups) and forward
 *    `coordinatorRequests` to the coordinator (best effort; the core repeats what it still
 *    needs). The coordinator must apply a request only if the shard is still at its `epoch` and
 *    `from` is the primary, then bump the epoch; it must never add a replica to the in-sync set
 *    except on such a request (a replica may be added to `replicas` as catching-up at any time).
 * 4. Optionally delete op-log groups up to `trimLogThroughSeq`.
 * 5. Call `advance(nowMs, ready)`. `ready()` must not be called again before `advance`; inputs may
 *    be given in between.
 *
 * When `role` becomes `removed` (the assignment no longer lists this peer) the core ignores
 * everything but a newer assignment or epoch; the shell may delete the shard's data.
 *
 * Lease renewals should carry `progress()` (epoch, lastSeq): the coordinator promotes the in-sync
 * replica with the highest lastSeq, and only after the old primary's lease has expired on its own
 * clock; it then bumps the epoch (and normally drops the old primary from the in-sync set).
 *
 * Pipelining: a primary sends groups to its backups in parallel with persisting them itself
 * (`takeEarlyMessages`) and answers at commit, before the apply (`takeAnswers`); strong reads see
 * committed groups not yet applied (`read`). A primary that crashes may therefore have sent
 * groups it never persisted: after a restart it does not sequence, send or serve at the epoch it
 * recovered, and asks the coordinator for a fresh one (`renew-epoch`); the new epoch's
 * reconciliation drops those groups from the backups (never committed: a commit needs the
 * primary's own persist). One content per (seq, epoch) holds.
 *
 * ## Algorithm notes
 *
 * - Group commit: a write is resolved at once against the versions (cas decided, version
 *   assigned) and queued; queued writes are sealed into one group with the next sequence number
 *   as soon as fewer than `maxGroupsInFlight` groups are uncommitted. A group commits when the
 *   primary (durably, via `advance`) and every replica of the in-sync set — plus any replica it has
 *   asked to add — hold it, and at least `minInSync` replicas count. Data is applied at commit on
 *   every replica, so a truncated tail never needs undoing.
 * - Fencing: every message carries the sender's epoch; a replica persists the highest epoch it
 *   has seen and drops older messages. Log matching as in Raft: (seq, epoch) names a group, an
 *   append names the (seq, epoch) it follows, and a replica accepts it only where that matches.
 * - Reconciliation: a new primary marks its last sequence; it serves once every in-sync replica
 *   has matched its log up to there. Appends carry `epochStartSeq`, so replicas drop groups of
 *   older epochs that the primary never had (never acknowledged), and conflicting groups are
 *   replaced.
 * - Slow backup: past `ackTimeoutMs` the primary asks the coordinator to shrink the in-sync set
 *   and keeps waiting; the groups commit once the new assignment (without it) arrives. A backup
 *   whose peer is still heard from (`tick`'s `peersHeardAtMs`) is given `slowAckTimeoutMs`.
 * - Catch-up: the primary tracks every replica of `replicas`; a replica behind is sent groups
 *   from the log window, or a snapshot when they were trimmed. Once a replica matches up to the
 *   commit point the primary counts it for commits and asks for it to be added to the in-sync set.
 */
import type { ShardAssignment } from '../cluster-map/types.js';
import { resolveReplicationConfig, type ReplicationConfig, MAX_VALUE_BYTES } from './config.js';
import {
  assertReplication,
  IndeterminateWriteError,
  InvalidRequestError,
  NotEnoughReplicasError,
  NotInSyncError,
  NotPrimaryError,
  OverloadedError,
  StaleVersionError,
  type NotPrimaryReason,
} from './errors.js';
import { groupBytes, opBytes, ReplicaLog } from './log.js';
import type {
  AppendAckMessage,
  AppendMessage,
  CatchUpMessage,
  InSyncChangeRequest,
  KeyVersion,
  LogGroup,
  LoggedOp,
  ReadConsistency,
  RecoveredReplicaState,
  ReplicaId,
  ReplicaProgress,
  ReplicaRole,
  ReplicaStatus,
  ReplicationMessage,
  ReplicationReady,
  SnapshotMeta,
  SnapshotToSend,
  WriteAnswer,
  WriteRequest,
} from './types.js';
import { casMatches, keyBytes, versionAfter, VersionOverlay } from './versions.js';

export interface ReplicaCoreOptions {
  shard: number;
  id: ReplicaId;
  /** Overrides of DEFAULT_REPLICATION_CONFIG; validated (throws ConfigError). */
  config?: Partial<ReplicationConfig>;
  /** What the shell recovered from disk; omit for a brand-new replica. */
  recovered?: RecoveredReplicaState;
}

/** The primary's view of one other replica. */
interface FollowerProgress {
  id: ReplicaId;
  /** Its log matches ours, durably, up to here (acknowledged at this primaryship). */
  matchSeq: number;
  /** Next group to send. */
  nextSeq: number;
  /** Not yet known where its log matches: one probe per heartbeat, no pipelining. */
  probing: boolean;
  lastSentAtMs: number;
  lastAckAtMs: number;
  snapshotSentAtMs: number;
  /**
   * Applied seq when it was first asked to get a snapshot, until it acknowledges that far: the
   * log keeps the groups after it (within snapshotPinBytes) so the snapshot can be followed by
   * the log, however long the stream takes. Null when no snapshot is pending.
   */
  snapshotFloor: number | null;
  /** When groups (not an empty heartbeat) were last sent to it. */
  lastDataSentAtMs: number;
  /** The first group of the last probe that carried groups (a repeat waits retransmitTimeoutMs). */
  probeDataSeq: number;
  /**
   * Since when the groups in flight (after matchSeq, before nextSeq) have gone without progress:
   * set when data leaves with nothing in flight and whenever an ack advances matchSeq.
   */
  inflightSinceMs: number;
  /** The highest commit point it acknowledged knowing (see `isIdle`). */
  knownCommitSeq: number;
}

/** A write resolved at the primary and queued for the next group. */
interface QueuedWrite {
  requestId: number;
  /** Null for a cas that failed: nothing to log, answered when what it observed is committed. */
  op: LoggedOp | null;
  current: KeyVersion;
  bytes: number;
}

interface InflightGroup {
  seq: number;
  sealedAtMs: number;
  answers: Array<{ requestId: number; result: WriteAnswer }>;
}

/** A group that was in flight when this replica stopped being primary (see resolveHandedOver). */
interface HandedOverGroup {
  seq: number;
  /** Its epoch in our log when we stepped down. */
  epoch: number;
  sinceMs: number;
  answers: Array<{ requestId: number; result: WriteAnswer }>;
}

/** How long a handed-over write waits for its outcome before it is answered `indeterminate`, ms. */
export const HANDED_OVER_OUTCOME_MS = 3000;
/** Most committed, unapplied groups a strong read looks through (see read). */
const READ_SCAN_MAX_GROUPS = 64;
/** Most handed-over groups kept waiting; beyond, `indeterminate` at once. */
const MAX_HANDED_OVER_GROUPS = 1024;

interface PrimaryState {
  /** The epoch this state was last brought up to date for. */
  epoch: number;
  /** Groups after this in our log are of the current epoch (sent in every append). */
  epochStartSeq: number;
  /** Our last sequence at promotion: serve once it is committed (reconciliation). */
  reconcileSeq: number;
  reconcileStartedAtMs: number;
  followers: Map<ReplicaId, FollowerProgress>;
  queue: QueuedWrite[];
  /** Version of each key after the queued writes (they precede the overlay). */
  queueVersions: Map<string, KeyVersion>;
  /** Sealed, uncommitted groups, ascending. */
  inflight: InflightGroup[];
  /** Last time each still-wanted coordinator request was emitted, by `kind:replica`. */
  requestSentAtMs: Map<string, number>;
  /**
   * False while primary at an epoch this replica held before its last restart: it may have sent
   * groups at that epoch that it never persisted, so it neither sequences, sends, nor serves until
   * the coordinator bumps the epoch (`renew-epoch`). One content per (seq, epoch) depends on it.
   */
  fresh: boolean;
}

export class ReplicaCore {
  readonly shard: number;
  readonly id: ReplicaId;
  readonly config: Readonly<ReplicationConfig>;
  /** Writes need this many in-sync replicas (≤ config.minInSync; see setMinInSync). */
  private minInSyncValue: number;
  /** Writes in flight when this replica stopped being primary, waiting for their outcome. */
  private handedOver: HandedOverGroup[] = [];

  /** Highest epoch accepted (durable through Ready.hardState). */
  private epochValue: number;
  /**
   * Replicas this primary asked the coordinator, at `epochValue`, to add to the in-sync set:
   * counted for commits from the moment of asking until the epoch changes. Durable (hard state):
   * the coordinator may apply the request after we crash and restart at the same epoch.
   */
  private expanding = new Set<ReplicaId>();
  private hardStateDirty = false;
  private assignment: ShardAssignment | null = null;
  /** The primary at `epochValue`, as far as known. */
  private primaryHint: ReplicaId | null = null;
  private roleValue: ReplicaRole = 'backup';
  private leaseValidUntilMs = Number.NEGATIVE_INFINITY;

  private readonly log: ReplicaLog;
  private commitSeq: number;
  /** Highest group handed out in Ready.apply. */
  private applyingSeq: number;
  /** Highest group the shell confirmed applied (advance). */
  private appliedSeq: number;
  /** Highest group the shell confirmed in the op log (advance); the primary's own acknowledgement. */
  private persistedSeq: number;
  private readonly overlay: VersionOverlay;
  private primary: PrimaryState | null = null;
  /** The epoch recovered at start: this replica never sequences at it or below (see PrimaryState.fresh). */
  private readonly freshEpochFloor: number;
  /** The highest epoch known durable (recovered, or persisted through a Ready's hardState and advanced). */
  private durableEpoch: number;

  // Backup state.
  private readonly buffered = new Map<number, AppendMessage>();
  private lastProgressFromPrimaryMs = Number.NEGATIVE_INFINITY;
  private lastCatchUpSentMs = Number.NEGATIVE_INFINITY;
  private lastCatchUpAfterSeq = -1;

  // Outbox, handed out by ready() (and, for `early` and `answers`, by takeEarlyMessages() and takeAnswers()).
  private unstable: LogGroup[] = [];
  /** The primary's appends that may leave before anything is persisted (see takeEarlyMessages). */
  private early: ReplicationMessage[] = [];
  /**
   * An append is in `messages` (it must wait for persistence), or in the messages of the Ready
   * handed out and not yet advanced: later appends wait too, so they never overtake it.
   */
  private appendHeld = false;
  private readyHoldsAppend = false;
  private truncateAfterSeq: number | undefined;
  private trimThroughSeq: number | undefined;
  private messages: ReplicationMessage[] = [];
  private snapshots: SnapshotToSend[] = [];
  private answers: WriteAnswer[] = [];
  private requests: InSyncChangeRequest[] = [];
  private readyOutstanding = false;
  /** What the last tick said about when each peer was last heard from (see tick). */
  private peersHeardAtMs: ReadonlyMap<ReplicaId, number> | undefined;

  constructor(options: ReplicaCoreOptions) {
    this.shard = options.shard;
    this.id = options.id;
    this.config = resolveReplicationConfig(options.config);
    this.minInSyncValue = this.config.minInSync;
    const r = options.recovered ?? { epoch: 0, appliedSeq: 0, appliedEpoch: 0, log: [] };
    // The log window starts right after a sequence whose epoch we know.
    let groups = [...r.log];
    let trimSeq = r.appliedSeq;
    let trimEpoch = r.appliedEpoch;
    if (groups.length > 0) {
      for (let k = 1; k < groups.length; k++) {
        assertReplication(groups[k]!.seq === groups[k - 1]!.seq + 1, 'recovered log is not contiguous');
      }
      const first = groups[0]!;
      assertReplication(first.seq <= r.appliedSeq + 1, `recovered log starts at ${first.seq}, after applied ${r.appliedSeq} + 1`);
      if (first.seq === r.appliedSeq + 1) {
        trimSeq = r.appliedSeq;
      } else {
        // The epoch of first.seq - 1 is unknown: start the window at the first group instead.
        trimSeq = first.seq;
        trimEpoch = first.epoch;
        groups = groups.slice(1);
      }
    }
    this.log = new ReplicaLog(trimSeq, trimEpoch, groups);
    assertReplication(this.log.lastSeq >= r.appliedSeq, 'recovered log ends before the applied sequence');
    this.epochValue = Math.max(r.epoch, this.log.lastEpoch);
    this.freshEpochFloor = options.recovered === undefined ? 0 : this.epochValue;
    this.durableEpoch = r.epoch;
    if (this.epochValue === r.epoch) for (const id of r.expanding ?? []) this.expanding.add(id);
    this.commitSeq = r.appliedSeq;
    this.applyingSeq = r.appliedSeq;
    this.appliedSeq = r.appliedSeq;
    this.persistedSeq = this.log.lastSeq;
    this.overlay = new VersionOverlay(r.appliedSeq);
    for (let seq = r.appliedSeq + 1; seq <= this.log.lastSeq; seq++) this.overlay.add(seq, this.log.get(seq)!.ops);
  }

  // -------------------------------------------------------------------------------------------
  // Queries
  // -------------------------------------------------------------------------------------------

  get role(): ReplicaRole {
    return this.roleValue;
  }

  get epoch(): number {
    return this.epochValue;
  }

  /** Primary at the current epoch with a valid lease: may sequence writes and authorize strong reads. */
  isServing(nowMs: number): boolean {
    return this.roleValue === 'primary' && nowMs < this.leaseValidUntilMs;
  }

  /** What to piggyback on lease renewals. */
  progress(): ReplicaProgress {
    return {
      shard: this.shard,
      epoch: this.epochValue,
      lastSeq: this.log.lastSeq,
      lastEpoch: this.log.lastEpoch,
      commitSeq: this.commitSeq,
    };
  }

  /**
   * Op-log groups up to here are held by every in-sync replica (committed) and applied here: the
   * shell may delete them. The core itself keeps `logRetainGroups` more for lagging replicas and
   * reports what it dropped in `Ready.trimLogThroughSeq`.
   */
  trimPointSeq(): number {
    return Math.min(this.commitSeq, this.appliedSeq);
  }

  status(nowMs: number): ReplicaStatus {
    const ps = this.primary;
    return {
      shard: this.shard,
      id: this.id,
      role: this.roleValue,
      epoch: this.epochValue,
      primary: this.primaryHint,
      serving: this.isServing(nowMs),
      reconciled: ps !== null && ps.fresh && this.commitSeq >= ps.reconcileSeq,
      lastSeq: this.log.lastSeq,
      commitSeq: this.commitSeq,
      appliedSeq: this.appliedSeq,
      trimSeq: this.log.trimSeq,
      inSync: this.assignment === null ? [] : [...this.assignment.inSync],
      pendingWrites: ps === null ? 0 : ps.queue.length,
      groupsInFlight: ps === null ? 0 : ps.inflight.length,
    };
  }

  /**
   * The in-sync count below which writes are refused, at most `config.minInSync`. The shell
   * lowers it while the cluster has fewer peers than that (a cluster growing from one peer takes
   * writes; node/store-service.ts) and raises it back as peers join. Lowering it lets waiting
   * groups commit at once.
   */
  setMinInSync(nowMs: number, n: number): void {
    if (!Number.isSafeInteger(n) || n < 1 || n > this.config.minInSync) {
      throw new InvalidRequestError('minInSync', `must be an integer from 1 to ${this.config.minInSync}, got ${n}`);
    }
    if (n === this.minInSyncValue) return;
    const lowered = n < this.minInSyncValue;
    this.minInSyncValue = n;
    if (lowered && this.primary !== null) {
      this.advanceCommit(nowMs);
      this.sealGroups(nowMs);
    }
  }

  /** The in-sync count writes need now (see setMinInSync). */
  get minInSync(): number {
    return this.minInSyncValue;
  }

  /** The groups in this replica's in-memory log window (for tests and the simulation). */
  logGroups(): LogGroup[] {
    return this.log.length === 0 ? [] : this.log.slice(this.log.trimSeq + 1, Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
  }

  // -------------------------------------------------------------------------------------------
  // Inputs
  // -------------------------------------------------------------------------------------------

  setAssignment(nowMs: number, assignment: ShardAssignment): void {
    if (this.assignment !== null && assignment.epoch < this.assignment.epoch) return;
    this.assignment = {
      replicas: [...assignment.replicas],
      primary: assignment.primary,
      inSync: [...assignment.inSync],
      epoch: assignment.epoch,
    };
    if (assignment.epoch > this.epochValue) this.adoptEpoch(assignment.epoch, null);
    this.updateRole(nowMs);
  }

  setLease(nowMs: number, leaseValidUntilMs: number): void {
    this.leaseValidUntilMs = leaseValidUntilMs;
    if (this.primary !== null) this.sealGroups(nowMs);
  }

  /**
   * Timers. `peersHeardAtMs`: when each peer last sent this peer any replication traffic (of any
   * shard), on the same clock as `nowMs`; a backup on a peer heard within `ackTimeoutMs` is slow,
   * not gone, and is reported late only after `slowAckTimeoutMs`. Without it, every backup that
   * owes an ack past `ackTimeoutMs` is late.
   */
  tick(nowMs: number, peersHeardAtMs?: ReadonlyMap<ReplicaId, number>): void {
    this.peersHeardAtMs = peersHeardAtMs;
    if (this.roleValue === 'primary') this.tickPrimary(nowMs);
    else if (this.roleValue === 'backup') this.tickBackup(nowMs);
    this.resolveHandedOver(nowMs);
  }

  step(nowMs: number, m: ReplicationMessage): void {
    if (m.shard !== this.shard || m.to !== this.id || m.from === this.id) return;
    if (m.type === 'snapshot') return; // headers go through installSnapshot
    if (m.epoch > this.epochValue) {
      this.adoptEpoch(m.epoch, m.type === 'append' ? m.from : null);
      this.updateRole(nowMs);
    } else if (m.epoch < this.epochValue) {
      // A stale primary: tell it about the newer epoch so it stops at once.
      if (m.type === 'append' && this.roleValue !== 'removed') {
        this.send({ type: 'catch-up', shard: this.shard, epoch: this.epochValue, from: this.id, to: m.from, afterSeq: this.log.lastSeq });
      }
      return;
    }
    if (this.roleValue === 'primary') this.stepPrimary(nowMs, m);
    else if (this.roleValue === 'backup') this.stepBackup(nowMs, m);
    this.resolveHandedOver(nowMs);
  }

  write(nowMs: number, request: WriteRequest): void {
    const op = request.op;
    this.validateWrite(request);
    this.checkServing(nowMs);
    const ps = this.primary!;
    if (!ps.fresh) throw new NotPrimaryError(this.id, this.epochValue, 'restarted');
    if (this.commitSeq < ps.reconcileSeq) throw new NotPrimaryError(this.id, this.epochValue, 'reconciling');
    const inSync = this.inSyncCount();
    if (inSync < this.minInSyncValue) throw new NotEnoughReplicasError(inSync, this.minInSyncValue);
    if (ps.queue.length >= this.config.maxPendingWrites) throw new OverloadedError(this.config.maxPendingWrites);
    if (request.durableAtSeq < this.overlay.floorSeq) throw new StaleVersionError(request.durableAtSeq, this.overlay.floorSeq);
    if (request.durableAtSeq > this.log.lastSeq) {
      throw new InvalidRequestError('durableAtSeq', `${request.durableAtSeq} is beyond the last sequence ${this.log.lastSeq}`);
    }
    const current = ps.queueVersions.get(op.key) ?? this.overlay.lookup(op.key, request.durable);
    let logged: LoggedOp | null;
    switch (op.kind) {
      case 'put':
        logged = { kind: 'put', key: op.key, value: op.value, version: current.version + 1 };
        break;
      case 'delete':
        logged = { kind: 'delete', key: op.key, version: current.version + 1 };
        break;
      case 'cas':
        logged = casMatches(op.expectVersion, current) ? { kind: 'put', key: op.key, value: op.value, version: current.version + 1 } : null;
        break;
    }
    ps.queue.push({ requestId: request.requestId, op: logged, current, bytes: logged === null ? 0 : opBytes(logged) });
    if (logged !== null) ps.queueVersions.set(op.key, versionAfter(logged));
    this.sealGroups(nowMs);
  }

  /**
   * Authorizes a read. `strong`: only a serving, reconciled primary. Writes are answered once
   * committed, possibly before the shell has applied them to its data, so a strong read must see
   * committed groups not yet applied: the key's newest op among them is returned (serve it; a
   * delete means absent at its version); null means the shell's data is current for the key
   * (read it; whatever is applied meanwhile is committed too). `any`: any replica of the in-sync
   * set, from its data (possibly stale by the groups not yet applied); always null.
   */
  read(nowMs: number, key: string, consistency: ReadConsistency): LoggedOp | null {
    if (keyBytes(key) < 0) throw new InvalidRequestError('key', 'longer than the key limit');
    if (consistency === 'strong') {
      this.checkServing(nowMs);
      const ps = this.primary!;
      if (!ps.fresh) throw new NotPrimaryError(this.id, this.epochValue, 'restarted');
      if (this.commitSeq < ps.reconcileSeq) throw new NotPrimaryError(this.id, this.epochValue, 'reconciling');
      // A long unapplied tail (a new primary's reconciliation tail, a slow disk) would make every
      // read scan it: such reads wait (retry) until the applies catch up, as before pipelining.
      if (this.commitSeq - this.appliedSeq > READ_SCAN_MAX_GROUPS) throw new NotPrimaryError(this.id, this.epochValue, 'reconciling');
      for (let seq = Math.min(this.commitSeq, this.log.lastSeq); seq > this.appliedSeq; seq--) {
        const g = this.log.get(seq);
        assertReplication(g !== undefined, `committed group ${seq} is not applied and not in the log`);
        for (let k = g.ops.length - 1; k >= 0; k--) if (g.ops[k]!.key === key) return g.ops[k]!;
      }
      return null;
    }
    const a = this.assignment;
    if (this.roleValue === 'removed' || a === null || a.epoch !== this.epochValue || !a.inSync.includes(this.id)) {
      throw new NotInSyncError(this.primaryHint);
    }
    return null;
  }

  /**
   * A snapshot stream from the primary has fully arrived. Returns true if the shell must install
   * it (see the module comment); false to discard it (stale, or not needed: then the core may
   * still answer the primary through the next Ready).
   */
  installSnapshot(nowMs: number, meta: SnapshotMeta): boolean {
    assertReplication(!this.readyOutstanding, 'installSnapshot() between ready() and advance()');
    if (meta.shard !== this.shard || meta.from === this.id || meta.epoch < this.epochValue) return false;
    if (this.roleValue === 'removed') return false;
    if (meta.epoch > this.epochValue) {
      this.adoptEpoch(meta.epoch, meta.from);
      this.updateRole(nowMs);
    }
    if (this.roleValue === 'primary') return false;
    if (this.primaryHint === null) this.primaryHint = meta.from;
    if (this.primaryHint !== meta.from) return false;
    const ack = (matchSeq: number): void =>
      this.send({ type: 'append-ack', shard: this.shard, epoch: this.epochValue, from: this.id, to: meta.from, matchSeq, commitSeq: this.commitSeq });
    if (meta.seq <= this.commitSeq) {
      // Not needed: our committed prefix matches the primary's log.
      ack(this.commitSeq);
      return false;
    }
    if (this.log.epochAt(meta.seq) === meta.seqEpoch) {
      // Not needed: we hold the group at meta.seq, hence (log matching) everything before it.
      this.commitSeq = meta.seq;
      ack(meta.seq);
      return false;
    }
    assertReplication(meta.seq > this.appliedSeq && meta.seq > this.applyingSeq, 'snapshot below the applied sequence');
    this.log.reset(meta.seq, meta.seqEpoch);
    this.unstable = [];
    this.truncateAfterSeq = undefined;
    this.trimThroughSeq = undefined;
    this.commitSeq = meta.seq;
    this.applyingSeq = meta.seq;
    this.appliedSeq = meta.seq;
    this.persistedSeq = meta.seq;
    this.overlay.reset(meta.seq);
    this.buffered.clear();
    this.lastProgressFromPrimaryMs = nowMs;
    ack(meta.seq);
    return true;
  }

  // -------------------------------------------------------------------------------------------
  // Output
  // -------------------------------------------------------------------------------------------

  hasReady(): boolean {
    return (
      this.hardStateDirty ||
      this.unstable.length > 0 ||
      this.truncateAfterSeq !== undefined ||
      this.trimThroughSeq !== undefined ||
      this.messages.length > 0 ||
      this.early.length > 0 ||
      this.snapshots.length > 0 ||
      this.answers.length > 0 ||
      this.requests.length > 0 ||
      this.applyingSeq < Math.min(this.commitSeq, this.log.lastSeq)
    );
  }

  ready(): ReplicationReady {
    assertReplication(!this.readyOutstanding, 'ready() called again before advance()');
    const apply: LogGroup[] = [];
    const applyTo = Math.min(this.commitSeq, this.log.lastSeq);
    for (let seq = this.applyingSeq + 1; seq <= applyTo; seq++) {
      const g = this.log.get(seq);
      assertReplication(g !== undefined, `group ${seq} to apply is not in the log`);
      apply.push(g);
    }
    if (applyTo > this.applyingSeq) this.applyingSeq = applyTo;
    const rd: ReplicationReady = {
      appendLog: this.unstable,
      apply,
      messages: this.early.length === 0 ? this.messages : [...this.early, ...this.messages],
      snapshots: this.snapshots,
      answers: this.answers,
      coordinatorRequests: this.requests,
    };
    if (this.hardStateDirty) rd.hardState = { epoch: this.epochValue, expanding: [...this.expanding] };
    if (this.truncateAfterSeq !== undefined) rd.truncateLogAfterSeq = this.truncateAfterSeq;
    if (this.trimThroughSeq !== undefined) rd.trimLogThroughSeq = this.trimThroughSeq;
    this.hardStateDirty = false;
    this.unstable = [];
    this.truncateAfterSeq = undefined;
    this.trimThroughSeq = undefined;
    // Appends in this Ready (held, or early ones the shell did not take) leave after its persist:
    // later appends must wait for it too, or they would overtake them.
    this.readyHoldsAppend = this.appendHeld || this.early.length > 0;
    this.messages = [];
    this.early = [];
    this.appendHeld = false;
    this.snapshots = [];
    this.answers = [];
    this.requests = [];
    this.readyOutstanding = true;
    return rd;
  }

  /**
   * The primary's appends that may leave before anything is persisted; take them at any time
   * (also between `ready()` and `advance()`), or they come in the next Ready's `messages`.
   *
   * A backup acknowledges only what it has persisted, and a group commits only once the primary
   * has persisted it too (`advance`), so sending in parallel with the primary's own write loses
   * nothing. Appends become early only once the primary's epoch is durable, and a primary that
   * restarts does not sequence at the epoch it recovered (see PrimaryState.fresh): a group it
   * sent but never persisted can never be followed by a different group at that (seq, epoch).
   */
  takeEarlyMessages(): ReplicationMessage[] {
    const out = this.early;
    this.early = [];
    return out;
  }

  /**
   * Answers to deliver now; take them at any time (also between `ready()` and `advance()`), or
   * they come in the next Ready. Every answer is about committed groups (durable on the primary
   * and on every in-sync replica) or about writes that never happened: none waits for a Ready to
   * be persisted, nor for the apply to the data (strong reads see committed groups, see `read`).
   */
  takeAnswers(): WriteAnswer[] {
    const out = this.answers;
    this.answers = [];
    return out;
  }

  /** The shell has made `rd`'s log changes and applies durable. */
  advance(nowMs: number, rd: ReplicationReady): void {
    this.readyOutstanding = false;
    this.readyHoldsAppend = false;
    if (rd.hardState !== undefined) this.durableEpoch = Math.max(this.durableEpoch, rd.hardState.epoch);
    const lastAppended = rd.appendLog[rd.appendLog.length - 1];
    if (lastAppended !== undefined && this.log.epochAt(lastAppended.seq) === lastAppended.epoch) {
      this.persistedSeq = Math.max(this.persistedSeq, lastAppended.seq);
    }
    const lastApplied = rd.apply[rd.apply.length - 1];
    if (lastApplied !== undefined) this.appliedSeq = Math.max(this.appliedSeq, lastApplied.seq);
    this.overlay.raiseFloor(this.appliedSeq - this.config.versionHistoryGroups);
    this.trimLog();
    if (this.primary !== null) this.advanceCommit(nowMs);
  }

  // -------------------------------------------------------------------------------------------
  // Role changes
  // -------------------------------------------------------------------------------------------

  private adoptEpoch(epoch: number, primary: ReplicaId | null): void {
    this.epochValue = epoch;
    this.expanding.clear();
    this.hardStateDirty = true;
    this.primaryHint = primary;
    this.buffered.clear();
  }

  /** Derives the role from the assignment and the accepted epoch. */
  private updateRole(nowMs: number): void {
    const a = this.assignment;
    if (a !== null && a.epoch === this.epochValue) {
      this.primaryHint = a.primary;
      if (!a.replicas.includes(this.id)) {
        this.stepDown(nowMs, 'not-primary');
        this.roleValue = 'removed';
        return;
      }
      if (a.primary === this.id) {
        if (this.roleValue === 'primary' && this.primary !== null) this.continuePrimary(nowMs);
        else this.becomePrimary(nowMs);
        return;
      }
      this.stepDown(nowMs, 'not-primary');
      this.roleValue = 'backup';
      return;
    }
    this.stepDown(nowMs, 'stale-epoch');
    this.roleValue = 'backup';
  }

  private becomePrimary(nowMs: number): void {
    this.roleValue = 'primary';
    this.buffered.clear();
    const ps: PrimaryState = {
      epoch: this.epochValue,
      epochStartSeq: this.log.lastSeqBeforeEpoch(this.epochValue),
      reconcileSeq: this.log.lastSeq,
      reconcileStartedAtMs: nowMs,
      followers: new Map(),
      queue: [],
      queueVersions: new Map(),
      inflight: [],
      requestSentAtMs: new Map(),
      fresh: this.epochValue > this.freshEpochFloor,
    };
    this.primary = ps;
    this.syncFollowers();
    for (const f of ps.followers.values()) this.sendAppend(f, nowMs, true);
    this.advanceCommit(nowMs);
  }

  /** Still primary after an assignment change (in-sync set or replicas changed, epoch bumped). */
  private continuePrimary(nowMs: number): void {
    const ps = this.primary!;
    if (ps.epoch !== this.epochValue) {
      if (this.epochValue > ps.epoch + 1) {
        // Assignments were skipped: a replica not in sync may have been removed (its data
        // deleted) and added back in between. What it acknowledged before proves nothing now:
        // it starts over (a probe), and is proposed for the in-sync set only after it answers.
        const inSync = this.assignment!.inSync;
        for (const id of [...ps.followers.keys()]) if (!inSync.includes(id)) ps.followers.delete(id);
      }
      ps.epoch = this.epochValue;
      // Everything in our log now predates the new epoch; replicas hold nothing of ours beyond it.
      // (Groups a restarted primary sent but never persisted are beyond it: dropped, like any
      // older-epoch tail the primary does not have.)
      ps.epochStartSeq = this.log.lastSeq;
      ps.requestSentAtMs.clear();
      if (!ps.fresh && this.epochValue > this.freshEpochFloor) {
        ps.fresh = true;
        ps.reconcileSeq = this.log.lastSeq;
        ps.reconcileStartedAtMs = nowMs;
        for (const f of ps.followers.values()) this.sendAppend(f, nowMs, true);
      }
    }
    this.syncFollowers();
    this.advanceCommit(nowMs);
    this.sealGroups(nowMs);
  }

  private syncFollowers(): void {
    const ps = this.primary!;
    const replicas = this.assignment!.replicas;
    for (const id of [...ps.followers.keys()]) if (!replicas.includes(id)) ps.followers.delete(id);
    for (const id of replicas) {
      if (id === this.id || ps.followers.has(id)) continue;
      ps.followers.set(id, {
        id,
        matchSeq: 0,
        nextSeq: this.log.lastSeq + 1,
        probing: true,
        lastSentAtMs: Number.NEGATIVE_INFINITY,
        lastAckAtMs: Number.NEGATIVE_INFINITY,
        snapshotSentAtMs: Number.NEGATIVE_INFINITY,
        snapshotFloor: null,
        lastDataSentAtMs: Number.NEGATIVE_INFINITY,
        probeDataSeq: 0,
        inflightSinceMs: Number.NEGATIVE_INFINITY,
        knownCommitSeq: 0,
      });
    }
  }

  /**
   * Leaves the primary role: queued writes never happened. Sealed ones (in flight) are handed
   * over: their outcome is read from the log the next primary leaves here (resolveHandedOver),
   * so a planned hand-off (a drain, a rebalance) answers them instead of `indeterminate`.
   */
  private stepDown(nowMs: number, reason: NotPrimaryReason): void {
    const ps = this.primary;
    if (ps === null) return;
    for (const w of ps.queue) {
      this.answers.push({ requestId: w.requestId, ok: false, error: new NotPrimaryError(this.primaryHint, this.epochValue, reason) });
    }
    for (const g of ps.inflight) {
      const epoch = this.log.epochAt(g.seq);
      if (epoch === undefined || this.handedOver.length >= MAX_HANDED_OVER_GROUPS) {
        for (const a of g.answers) this.answers.push({ requestId: a.requestId, ok: false, error: new IndeterminateWriteError(g.seq) });
      } else {
        this.handedOver.push({ seq: g.seq, epoch, sinceMs: nowMs, answers: g.answers });
      }
    }
    this.primary = null;
  }

  /**
   * Answers handed-over writes once this replica's log tells their outcome. A committed group of
   * the same (seq, epoch) here is the same group (one content per (seq, epoch)): applied. Another
   * epoch at that seq means ours was truncated, which happens only to groups never committed (a
   * committed group is on every in-sync replica, hence on the next primary): it never happened,
   * and the client may retry. Trimmed away, replaced by a snapshot, removed from the shard, or
   * undecided after HANDED_OVER_OUTCOME_MS: unknown (`indeterminate`), as before.
   */
  private resolveHandedOver(nowMs: number): void {
    if (this.handedOver.length === 0) return;
    const waiting: HandedOverGroup[] = [];
    for (const h of this.handedOver) {
      const held = this.log.epochAt(h.seq);
      let outcome: 'applied' | 'not-applied' | 'unknown' | null = null;
      if (held !== undefined && held !== h.epoch) outcome = 'not-applied';
      else if (held === h.epoch && this.commitSeq >= h.seq) outcome = 'applied';
      else if (held === undefined && h.seq <= this.log.trimSeq) outcome = 'unknown';
      else if (this.roleValue === 'removed' || nowMs - h.sinceMs >= HANDED_OVER_OUTCOME_MS) outcome = 'unknown';
      if (outcome === null) {
        waiting.push(h);
        continue;
      }
      for (const a of h.answers) {
        if (outcome === 'applied') this.answers.push(a.result);
        else if (outcome === 'not-applied') this.answers.push({ requestId: a.requestId, ok: false, error: new NotPrimaryError(this.primaryHint, this.epochValue, 'not-primary') });
        else this.answers.push({ requestId: a.requestId, ok: false, error: new IndeterminateWriteError(h.seq) });
      }
    }
    this.handedOver = waiting;
  }

  private checkServing(nowMs: number): void {
    if (this.roleValue !== 'primary') {
      const a = this.assignment;
      const stale = a === null || a.epoch < this.epochValue;
      throw new NotPrimaryError(this.primaryHint, this.epochValue, stale && this.primaryHint === null ? 'stale-epoch' : 'not-primary');
    }
    if (nowMs >= this.leaseValidUntilMs) throw new NotPrimaryError(this.id, this.epochValue, 'no-lease');
  }

  private validateWrite(request: WriteRequest): void {
    const op = request.op;
    if (typeof op.key !== 'string' || keyBytes(op.key) < 0) throw new InvalidRequestError('op.key', 'must be a string of at most 1 KiB');
    if (op.kind !== 'delete') {
      if (!(op.value instanceof Uint8Array) || op.value.byteLength > MAX_VALUE_BYTES) {
        throw new InvalidRequestError('op.value', 'must be bytes, at most 1 MiB');
      }
    }
    if (op.kind === 'cas' && !(Number.isSafeInteger(op.expectVersion) && op.expectVersion >= 0)) {
      throw new InvalidRequestError('op.expectVersion', 'must be a non-negative integer');
    }
    const d = request.durable;
    if (!Number.isSafeInteger(d.version) || d.version < 0 || (d.version === 0 && d.present)) {
      throw new InvalidRequestError('durable', 'must be a version ≥ 0 (a present key has version ≥ 1)');
    }
    if (!Number.isSafeInteger(request.durableAtSeq) || request.durableAtSeq < 0) {
      throw new InvalidRequestError('durableAtSeq', 'must be a non-negative integer');
    }
  }

  // -------------------------------------------------------------------------------------------
  // Primary
  // -------------------------------------------------------------------------------------------

  private stepPrimary(nowMs: number, m: ReplicationMessage): void {
    switch (m.type) {
      case 'append-ack':
        this.handleAck(nowMs, m);
        break;
      case 'catch-up':
        this.handleCatchUp(nowMs, m);
        break;
      default:
        // An append at our own epoch from another replica cannot happen (one primary per epoch).
        break;
    }
  }

  private tickPrimary(nowMs: number): void {
    const ps = this.primary!;
    const serving = this.isServing(nowMs);
    if (!ps.fresh) {
      if (serving) {
        this.emitRequest(nowMs, 'renew', { kind: 'renew-epoch', shard: this.shard, from: this.id, replica: this.id, epoch: this.epochValue });
      }
      return;
    }
    if (!serving && ps.queue.length > 0) {
      // Not sequenced: these definitely did not happen.
      for (const w of ps.queue) {
        this.answers.push({ requestId: w.requestId, ok: false, error: new NotPrimaryError(this.id, this.epochValue, 'no-lease') });
      }
      ps.queue = [];
      ps.queueVersions.clear();
    }
    this.sealGroups(nowMs);
    for (const f of ps.followers.values()) {
      if (!f.probing && f.nextSeq - 1 > f.matchSeq && nowMs - f.inflightSinceMs >= this.config.retransmitTimeoutMs) {
        // Groups in flight went unacknowledged too long: lost (a broken stream loses what was on
        // it). Send again from the last acknowledged group. Not on every heartbeat: a slow
        // replica would then be sent the same megabytes over and over, and fall further behind.
        f.nextSeq = f.matchSeq + 1;
        f.inflightSinceMs = nowMs;
        this.sendAppend(f, nowMs, true);
        this.fillWindow(f, nowMs);
        continue;
      }
      // The cheap test first: most ticks fall within the short interval, idle or not.
      const sinceSent = nowMs - f.lastSentAtMs;
      if (sinceSent < this.config.heartbeatIntervalMs) continue;
      if (sinceSent < this.config.idleHeartbeatIntervalMs && this.isIdle(f)) continue;
      this.sendAppend(f, nowMs, true);
    }
    if (!serving) return;
    const wanted = new Map<string, InSyncChangeRequest>();
    const a = this.assignment!;
    for (const r of a.inSync) {
      if (r === this.id) continue;
      const f = ps.followers.get(r);
      if (f === undefined || this.isLate(f, nowMs)) {
        wanted.set(`shrink:${r}`, { kind: 'shrink-in-sync', shard: this.shard, from: this.id, replica: r, epoch: this.epochValue });
      }
    }
    for (const f of ps.followers.values()) this.maybeExpand(nowMs, f);
    for (const r of this.expanding) {
      wanted.set(`expand:${r}`, { kind: 'expand-in-sync', shard: this.shard, from: this.id, replica: r, epoch: this.epochValue });
    }
    for (const key of [...ps.requestSentAtMs.keys()]) if (!wanted.has(key)) ps.requestSentAtMs.delete(key);
    for (const [key, req] of wanted) this.emitRequest(nowMs, key, req);
  }

  /**
   * Nothing a heartbeat could tell `f`: it is in sync, holds our whole log (everything committed)
   * and has acknowledged knowing our commit point, and no write waits for a group. Then it is
   * heartbeated every `idleHeartbeatIntervalMs` only (Raft's and CockroachDB's quiescence, per
   * replica). The first write, or anything it lacks, ends that at the next tick.
   */
  private isIdle(f: FollowerProgress): boolean {
    const ps = this.primary!;
    return (
      !f.probing &&
      f.snapshotFloor === null &&
      f.matchSeq === this.log.lastSeq &&
      this.commitSeq === this.log.lastSeq &&
      f.knownCommitSeq >= this.commitSeq &&
      ps.queue.length === 0 &&
      this.assignment!.inSync.includes(f.id)
    );
  }

  private emitRequest(nowMs: number, key: string, req: InSyncChangeRequest): void {
    const ps = this.primary!;
    const last = ps.requestSentAtMs.get(key);
    if (last !== undefined && nowMs - last < this.config.coordinatorRetryMs) return;
    ps.requestSentAtMs.set(key, nowMs);
    this.requests.push(req);
  }

  /**
   * An in-sync replica that owes an acknowledgement older than `ackTimeoutMs` and whose peer has
   * gone quiet as long, or one that owes it longer than `slowAckTimeoutMs` whatever its peer does.
   */
  private isLate(f: FollowerProgress, nowMs: number): boolean {
    const ps = this.primary!;
    if (f.matchSeq >= this.log.lastSeq) return false;
    let sinceMs: number;
    if (f.matchSeq < ps.reconcileSeq) {
      sinceMs = ps.reconcileStartedAtMs;
    } else {
      const g = ps.inflight.find((x) => x.seq > f.matchSeq);
      if (g === undefined) return false;
      sinceMs = g.sealedAtMs;
    }
    const owedMs = nowMs - sinceMs;
    if (owedMs < this.config.ackTimeoutMs) return false;
    if (owedMs >= this.config.slowAckTimeoutMs) return true;
    const heard = this.peersHeardAtMs?.get(f.id);
    return heard === undefined || nowMs - heard >= this.config.ackTimeoutMs;
  }

  /**
   * A replica outside the in-sync set that matches our log up to every group that may be
   * committed (our commit point — Kafka's high watermark — and, for a new primary, its whole
   * reconciliation tail, which the previous primary may have acknowledged) and answers promptly is
   * counted for every later commit from now on and proposed for the in-sync set. Safe the moment
   * we ask: it holds every committed group, and no group commits any more without it.
   */
  private maybeExpand(nowMs: number, f: FollowerProgress): void {
    const ps = this.primary!;
    const a = this.assignment!;
    if (a.inSync.includes(f.id) || this.expanding.has(f.id)) return;
    if (!this.isServing(nowMs)) return;
    // Up to reconcileSeq, groups may have been committed (and acknowledged) by the previous
    // primary even though our commit point has not reached them yet.
    const mustHoldSeq = Math.max(this.commitSeq, ps.reconcileSeq);
    if (f.probing || f.matchSeq < mustHoldSeq || nowMs - f.lastAckAtMs >= this.config.ackTimeoutMs) return;
    this.expanding.add(f.id);
    this.hardStateDirty = true; // durable before the request leaves
    this.emitRequest(nowMs, `expand:${f.id}`, {
      kind: 'expand-in-sync',
      shard: this.shard,
      from: this.id,
      replica: f.id,
      epoch: this.epochValue,
    });
  }

  private inSyncCount(): number {
    const a = this.assignment!;
    return a.inSync.includes(this.id) ? a.inSync.length : a.inSync.length + 1;
  }

  /** Commit = the lowest durable match over the primary and its ack set (in-sync + pending adds). */
  private advanceCommit(nowMs: number): void {
    const ps = this.primary;
    if (ps === null) return;
    const ackSet = new Set<ReplicaId>(this.assignment!.inSync);
    for (const r of this.expanding) ackSet.add(r);
    ackSet.add(this.id);
    if (ackSet.size < this.minInSyncValue) return;
    let c = this.persistedSeq;
    for (const r of ackSet) {
      if (r === this.id) continue;
      const f = ps.followers.get(r);
      c = Math.min(c, f === undefined ? 0 : f.matchSeq);
    }
    if (c <= this.commitSeq) return;
    this.commitSeq = c;
    while (ps.inflight.length > 0 && ps.inflight[0]!.seq <= c) {
      for (const a of ps.inflight.shift()!.answers) this.answers.push(a.result);
    }
    this.sealGroups(nowMs);
  }

  /** Seals queued writes into groups while the pipeline has room. */
  private sealGroups(nowMs: number): void {
    const ps = this.primary;
    if (ps === null || ps.queue.length === 0 || !ps.fresh) return;
    if (!this.isServing(nowMs) || this.commitSeq < ps.reconcileSeq) return;
    while (ps.queue.length > 0 && ps.inflight.length < this.config.maxGroupsInFlight) {
      const inSync = this.inSyncCount();
      if (inSync < this.minInSyncValue) {
        for (const w of ps.queue) {
          this.answers.push({ requestId: w.requestId, ok: false, error: new NotEnoughReplicasError(inSync, this.minInSyncValue) });
        }
        ps.queue = [];
        ps.queueVersions.clear();
        return;
      }
      let take = 0;
      let ops = 0;
      let bytes = 0;
      while (take < ps.queue.length) {
        const w = ps.queue[take]!;
        if (w.op !== null) {
          if (ops > 0 && (ops + 1 > this.config.maxOpsPerGroup || bytes + w.bytes > this.config.maxGroupBytes)) break;
          ops++;
          bytes += w.bytes;
        }
        take++;
      }
      const batch = ps.queue.splice(0, take);
      const answerOf = (w: QueuedWrite, seq: number): { requestId: number; result: WriteAnswer } => ({
        requestId: w.requestId,
        result:
          w.op === null
            ? { requestId: w.requestId, ok: true, result: { applied: false, current: w.current } }
            : { requestId: w.requestId, ok: true, result: { applied: true, version: w.op.version, seq } },
      });
      if (ops === 0) {
        // Only failed cas: they observed everything sequenced so far; answer once that commits.
        const last = ps.inflight[ps.inflight.length - 1];
        if (last === undefined) {
          assertReplication(this.commitSeq >= this.log.lastSeq, 'uncommitted groups without an inflight record');
          for (const w of batch) this.answers.push(answerOf(w, this.log.lastSeq).result);
        } else {
          for (const w of batch) last.answers.push(answerOf(w, last.seq));
        }
      } else {
        const seq = this.log.lastSeq + 1;
        const group: LogGroup = { seq, epoch: this.epochValue, ops: batch.filter((w) => w.op !== null).map((w) => w.op!) };
        this.appendGroup(group);
        ps.inflight.push({ seq, sealedAtMs: nowMs, answers: batch.map((w) => answerOf(w, seq)) });
        for (const f of ps.followers.values()) if (!f.probing && f.nextSeq === seq) this.sendAppend(f, nowMs, false);
      }
      ps.queueVersions.clear();
      for (const w of ps.queue) if (w.op !== null) ps.queueVersions.set(w.op.key, versionAfter(w.op));
    }
  }

  /** Bytes of the groups sent to `f` and not yet acknowledged. */
  private inflightBytes(f: FollowerProgress): number {
    if (f.probing || f.nextSeq - 1 <= f.matchSeq) return 0;
    const from = Math.max(f.matchSeq, this.log.trimSeq);
    return this.log.bytesAfter(from) - this.log.bytesAfter(Math.max(from, f.nextSeq - 1));
  }

  /** Sends further appends to a follower whose log matches while its window has room. */
  private fillWindow(f: FollowerProgress, nowMs: number): void {
    for (let k = 0; k < this.config.maxGroupsPerAppend && !f.probing && f.nextSeq <= this.log.lastSeq && f.nextSeq > this.log.trimSeq; k++) {
      const before = f.nextSeq;
      this.sendAppend(f, nowMs, false);
      if (f.nextSeq === before) return;
    }
  }

  /**
   * One append to `f`: groups from `nextSeq` within its window (bytes in flight at most
   * maxInflightBytes, at least one group when none is in flight), else, with `allowEmpty`, an
   * empty heartbeat carrying the commit point. A heartbeat to a follower with groups in flight
   * names its acknowledged point as prevSeq, so it never looks like a gap to the follower.
   */
  private sendAppend(f: FollowerProgress, nowMs: number, allowEmpty: boolean): void {
    const ps = this.primary!;
    if (!ps.fresh) return;
    if (f.nextSeq <= this.log.trimSeq) {
      // The groups it needs are trimmed: it gets a snapshot of our applied data instead.
      if (nowMs - f.snapshotSentAtMs >= this.config.snapshotRetryMs) {
        this.snapshots.push({ shard: this.shard, to: f.id, epoch: this.epochValue });
        f.snapshotSentAtMs = nowMs;
        if (f.snapshotFloor === null) f.snapshotFloor = this.appliedSeq;
      }
      f.lastSentAtMs = nowMs;
      return;
    }
    if (f.nextSeq > this.log.lastSeq + 1) f.nextSeq = this.log.lastSeq + 1;
    let groups: LogGroup[] = [];
    if (f.nextSeq <= this.log.lastSeq) {
      if (f.probing) {
        // A probe repeats its groups only after retransmitTimeoutMs; meanwhile it goes empty.
        if (f.probeDataSeq !== f.nextSeq || nowMs - f.lastDataSentAtMs >= this.config.retransmitTimeoutMs) {
          groups = this.log.slice(f.nextSeq, this.config.maxGroupsPerAppend, this.config.maxAppendBytes);
          f.probeDataSeq = f.nextSeq;
        }
      } else {
        const inflight = this.inflightBytes(f);
        const room = this.config.maxInflightBytes - inflight;
        if (inflight === 0 || room > 0) {
          groups = this.log.slice(f.nextSeq, this.config.maxGroupsPerAppend, Math.min(this.config.maxAppendBytes, Math.max(1, room)));
          // slice always yields one group; beyond the window it waits (unless nothing is in flight).
          if (inflight > 0 && groups.length === 1 && groupBytes(groups[0]!) > room) groups = [];
        }
      }
    }
    if (groups.length === 0 && !allowEmpty) return;
    const heartbeatPrev = !f.probing && groups.length === 0 && f.nextSeq - 1 > f.matchSeq;
    const prevSeq = heartbeatPrev ? Math.max(f.matchSeq, this.log.trimSeq) : f.nextSeq - 1;
    const prevEpoch = this.log.epochAt(prevSeq);
    assertReplication(prevEpoch !== undefined, `epoch of ${prevSeq} unknown`);
    this.send({
      type: 'append',
      shard: this.shard,
      epoch: this.epochValue,
      from: this.id,
      to: f.id,
      epochStartSeq: ps.epochStartSeq,
      prevSeq,
      prevEpoch,
      groups,
      commitSeq: this.commitSeq,
    });
    if (groups.length > 0) {
      if (!f.probing && f.nextSeq - 1 <= f.matchSeq) f.inflightSinceMs = nowMs;
      f.lastDataSentAtMs = nowMs;
      if (!f.probing) f.nextSeq = prevSeq + groups.length + 1;
    }
    f.lastSentAtMs = nowMs;
  }

  private handleAck(nowMs: number, m: AppendAckMessage): void {
    const ps = this.primary!;
    const f = ps.followers.get(m.from);
    if (f === undefined || m.matchSeq > this.log.lastSeq || !ps.fresh) return;
    f.lastAckAtMs = nowMs;
    if (m.commitSeq > f.knownCommitSeq) f.knownCommitSeq = m.commitSeq;
    if (m.matchSeq > f.matchSeq) {
      f.matchSeq = m.matchSeq;
      f.inflightSinceMs = nowMs;
    }
    if (f.snapshotFloor !== null && f.matchSeq >= f.snapshotFloor) f.snapshotFloor = null;
    if (f.probing) {
      f.probing = false;
      f.inflightSinceMs = nowMs;
    }
    if (f.nextSeq <= f.matchSeq) f.nextSeq = f.matchSeq + 1;
    this.advanceCommit(nowMs);
    if (this.primary === null) return;
    if (this.isServing(nowMs)) this.maybeExpand(nowMs, f);
    this.fillWindow(f, nowMs);
  }

  private handleCatchUp(nowMs: number, m: CatchUpMessage): void {
    const f = this.primary!.followers.get(m.from);
    if (f === undefined || !this.primary!.fresh) return;
    // A follower asking from below what it acknowledged lost its log tail (damaged records cut
    // at restart, a torn write): believe it, as Raft's leader believes a regressed follower, or
    // heartbeats naming the old match point would never reach it again. Commit never goes back.
    if (m.afterSeq < f.matchSeq) f.matchSeq = Math.max(m.afterSeq, 0);
    f.nextSeq = Math.max(f.matchSeq, Math.min(m.afterSeq, this.log.lastSeq)) + 1;
    f.probing = true;
    this.sendAppend(f, nowMs, true);
  }

  // -------------------------------------------------------------------------------------------
  // Backup
  // -------------------------------------------------------------------------------------------

  private stepBackup(nowMs: number, m: ReplicationMessage): void {
    if (m.type === 'append') this.handleAppend(nowMs, m);
  }

  private tickBackup(nowMs: number): void {
    const a = this.assignment;
    const inSync = a !== null && a.epoch === this.epochValue && a.inSync.includes(this.id);
    if ((!inSync || this.buffered.size > 0) && nowMs - this.lastProgressFromPrimaryMs >= this.config.catchUpRetryMs) {
      this.requestCatchUp(nowMs, this.log.lastSeq);
    }
  }

  private requestCatchUp(nowMs: number, afterSeq: number): void {
    const to = this.primaryHint;
    if (to === null || to === this.id) return;
    if (afterSeq === this.lastCatchUpAfterSeq && nowMs - this.lastCatchUpSentMs < this.config.catchUpRetryMs) return;
    this.lastCatchUpAfterSeq = afterSeq;
    this.lastCatchUpSentMs = nowMs;
    this.send({ type: 'catch-up', shard: this.shard, epoch: this.epochValue, from: this.id, to, afterSeq });
  }

  private handleAppend(nowMs: number, m: AppendMessage): void {
    if (this.primaryHint === null) this.primaryHint = m.from;
    if (m.from !== this.primaryHint) return;
    // Reconciliation: groups of earlier epochs beyond the primary's epoch start were never in
    // its log, hence never acknowledged.
    const firstAfterStart = Math.max(m.epochStartSeq, this.log.trimSeq) + 1;
    const epochAfterStart = this.log.epochAt(firstAfterStart);
    if (epochAfterStart !== undefined && epochAfterStart < m.epoch) this.truncateLog(firstAfterStart - 1);
    if (m.prevSeq > this.log.lastSeq) {
      this.bufferAppend(m);
      this.requestCatchUp(nowMs, this.log.lastSeq);
      return;
    }
    const prevEpoch = this.log.epochAt(m.prevSeq);
    const committed = m.prevSeq <= this.commitSeq || m.prevSeq <= this.log.trimSeq;
    assertReplication(!committed || prevEpoch === undefined || prevEpoch === m.prevEpoch, `committed group ${m.prevSeq} differs from the primary's`);
    const matched = committed || prevEpoch === m.prevEpoch;
    if (!matched) {
      // Our group at prevSeq is not the primary's: everything up to our commit point surely is.
      this.requestCatchUp(nowMs, this.commitSeq);
      return;
    }
    let progressed = false;
    for (const g of m.groups) {
      if (g.seq <= this.log.lastSeq) {
        const held = this.log.epochAt(g.seq);
        if (g.seq <= this.commitSeq || g.seq <= this.log.trimSeq) {
          assertReplication(held === undefined || held === g.epoch, `committed group ${g.seq} differs from the primary's`);
          continue;
        }
        if (held === g.epoch) continue;
        this.truncateLog(g.seq - 1);
      }
      this.appendGroup(g);
      progressed = true;
    }
    let matchSeq = m.prevSeq + m.groups.length;
    // Anything after it of the primary's own epoch came from the primary too.
    if (this.log.epochAt(matchSeq + 1) === m.epoch) matchSeq = this.log.lastSeq;
    this.commitSeq = Math.max(this.commitSeq, Math.min(m.commitSeq, matchSeq));
    if (progressed || m.groups.length === 0) this.lastProgressFromPrimaryMs = nowMs;
    this.send({ type: 'append-ack', shard: this.shard, epoch: this.epochValue, from: this.id, to: m.from, matchSeq, commitSeq: this.commitSeq });
    this.drainBuffered(nowMs);
  }

  private bufferAppend(m: AppendMessage): void {
    if (m.groups.length === 0 || this.buffered.has(m.prevSeq)) return;
    if (this.buffered.size >= this.config.maxBufferedAppends) return;
    this.buffered.set(m.prevSeq, m);
  }

  /** Feeds buffered appends whose gap has filled, in order. */
  private drainBuffered(nowMs: number): void {
    for (;;) {
      let next: AppendMessage | undefined;
      for (const [prevSeq, m] of this.buffered) {
        if (m.epoch !== this.epochValue || prevSeq + m.groups.length <= this.log.lastSeq) {
          this.buffered.delete(prevSeq);
        } else if (prevSeq <= this.log.lastSeq && (next === undefined || prevSeq < next.prevSeq)) {
          next = m;
        }
      }
      if (next === undefined) return;
      this.buffered.delete(next.prevSeq);
      this.handleAppend(nowMs, next);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Log and outbox helpers
  // -------------------------------------------------------------------------------------------

  private appendGroup(g: LogGroup): void {
    this.log.append(g);
    this.unstable.push(g);
    this.overlay.add(g.seq, g.ops);
  }

  /** Drops the groups after `seq`; never committed ones (asserted). */
  private truncateLog(seq: number): void {
    if (seq >= this.log.lastSeq) return;
    assertReplication(seq >= this.commitSeq && seq >= this.applyingSeq, `truncating after ${seq} below commit ${this.commitSeq}`);
    this.log.truncateAfter(seq);
    this.overlay.truncateAfter(seq);
    this.persistedSeq = Math.min(this.persistedSeq, seq);
    const firstUnstable = this.unstable.length > 0 ? this.unstable[0]!.seq : Number.POSITIVE_INFINITY;
    this.unstable = this.unstable.filter((g) => g.seq <= seq);
    if (seq < firstUnstable - 1) {
      this.truncateAfterSeq = this.truncateAfterSeq === undefined ? seq : Math.min(this.truncateAfterSeq, seq);
    }
  }

  /** Drops committed, applied groups beyond the retention window. */
  private trimLog(): void {
    const limit = Math.min(this.commitSeq, this.appliedSeq, this.persistedSeq);
    let target = this.log.trimPointFor(limit, this.config.logRetainGroups, this.config.logRetainBytes);
    let floor = Number.POSITIVE_INFINITY;
    for (const f of this.primary?.followers.values() ?? []) if (f.snapshotFloor !== null) floor = Math.min(floor, f.snapshotFloor);
    if (floor < target) {
      // A snapshot is on its way: keep what follows it, within snapshotPinBytes.
      target = this.log.keepAtMostBytes(floor, this.config.snapshotPinBytes, target);
    }
    if (target <= this.log.trimSeq) return;
    this.log.trimThrough(target);
    this.trimThroughSeq = target;
  }

  private send(m: ReplicationMessage): void {
    const ps = this.primary;
    if (m.type === 'append' && !this.appendHeld && !this.readyHoldsAppend && ps !== null && ps.fresh && this.durableEpoch >= this.epochValue) {
      this.early.push(m);
      return;
    }
    if (m.type === 'append') this.appendHeld = true;
    this.messages.push(m);
  }
}
