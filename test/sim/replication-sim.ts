/**
 * A deterministic simulation of one shard with three replicas (after TigerBeetle's VOPR): the
 * replication cores over a simulated network and clocks, a simulated coordinator, clients with a
 * recorded history, crash-restart. One seed drives everything. Invariants are checked after every
 * step; a safety phase with faults is followed by a liveness phase after healing. A failure throws
 * `SimFailure` whose message has the seed and the command that replays it.
 *
 * The coordinator is a small trusted state machine (the real one is the Raft cluster map): it
 * grants per-peer leases (measured on its clock; the peer counts from when it sent the renewal,
 * discounted for drift), promotes only after the old primary's lease has expired on its clock,
 * picks the reachable in-sync replica with the highest reported sequence, bumps the epoch, drops
 * the old primary from the in-sync set, and applies shrink/expand requests only at their epoch.
 *
 * The simulated shell follows the Ready contract: persist (hard state, log, applies) to a
 * simulated durable store, then send, then answer, then advance. A crash throws away the core and
 * everything not in the durable store (including the lease). Each seed picks, per replica, whether
 * the shell sends the primary's appends before persisting (`takeEarlyMessages`: send-before-persist)
 * and whether it answers at commit, before the apply (`takeAnswers`: answer-before-apply); strong
 * reads at the primary then see committed groups not yet applied. Primaries also restart within
 * their lease (a fresh epoch before they sequence again).
 */
import { SeededRandom, type Random } from '../../protocols/random.js';
import type { ShardAssignment } from '../../protocols/cluster-map/types.js';
import {
  ABSENT,
  casMatches,
  ReplicaCore,
  decodeReplicationMessage,
  encodeReplicationMessage,
  type InSyncChangeRequest,
  type KeyVersion,
  type LogGroup,
  type ReplicaProgress,
  type ReplicationConfig,
  type ReplicationMessage,
  type ReplicationReady,
  type SnapshotMeta,
  type SnapshotToSend,
  type WriteAnswer,
  type WriteOp,
  type WriteRequest,
} from '../../protocols/replication/index.js';

// ---------------------------------------------------------------------------------------------
// The simulated shell: durable store + Ready processing. Also used by the unit tests.
// ---------------------------------------------------------------------------------------------

export interface StoredValue extends KeyVersion {
  value: Uint8Array | null;
}

/** What survives a crash: exactly what Readys told the shell to persist. */
export interface DurableReplica {
  epoch: number;
  expanding: string[];
  log: LogGroup[];
  appliedSeq: number;
  appliedEpoch: number;
  data: Map<string, StoredValue>;
  /** The peer's copy of the cluster map entry for this shard (durable in the real node's Raft state). */
  assignment: ShardAssignment | null;
}

export interface ShellOutput {
  messages: ReplicationMessage[];
  snapshots: SnapshotToSend[];
  answers: WriteAnswer[];
  requests: InSyncChangeRequest[];
}

export interface ShellHooks {
  /** A Ready was taken from the core (before any of it is persisted). */
  onReadyTaken?(shell: ReplicaShell, rd: ReplicationReady): void;
  /** A group was appended to this replica's durable log. */
  onPersist?(shell: ReplicaShell, group: LogGroup): void;
  /** A group was applied to this replica's durable data. */
  onApply?(shell: ReplicaShell, group: LogGroup): void;
  /** After each Ready is fully handled. */
  afterReady?(shell: ReplicaShell, rd: ReplicationReady): void;
}

export function emptyDurable(): DurableReplica {
  return { epoch: 0, expanding: [], log: [], appliedSeq: 0, appliedEpoch: 0, data: new Map(), assignment: null };
}

/** One key's recent states, for version reads that lag behind the applies (see buildWrite). */
interface KeyHistory {
  /** Ascending by seq: the key's state from that seq on. The first entry is the state before the first change seen. */
  states: Array<{ seq: number; version: number; present: boolean }>;
}

const MAX_KEY_HISTORY = 8;

export class ReplicaShell {
  core: ReplicaCore | null = null;
  durable: DurableReplica = emptyDurable();
  /** The epoch the core recovered at its last start (it never sequences at it again). */
  startedAtEpoch = 0;
  /**
   * Simulated storage latency: a Ready is persisted, sent and advanced this long after it was
   * taken; the core gets other inputs meanwhile. 0: synchronous.
   */
  ioDelayMs = 0;
  /** Send-before-persist: the primary's appends leave as soon as the core has them. */
  sendEarly = false;
  /** Answer-before-apply: answers leave as soon as the core has them, before any persist. */
  answerEarly = false;
  private outstanding: { rd: ReplicationReady; completeAtMs: number } | null = null;
  /** Recent states per key since `historyFloorSeq` (in memory: lost on crash). */
  private history = new Map<string, KeyHistory>();
  private historyFloorSeq = 0;

  constructor(
    readonly id: string,
    readonly shard: number,
    readonly config: Partial<ReplicationConfig>,
    private readonly hooks: ShellHooks = {},
  ) {}

  get alive(): boolean {
    return this.core !== null;
  }

  /** (Re)starts the core from the durable store; feeds the peer's last known assignment. */
  start(nowMs: number): void {
    const d = this.durable;
    this.core = new ReplicaCore({
      shard: this.shard,
      id: this.id,
      config: this.config,
      recovered: { epoch: d.epoch, expanding: [...d.expanding], appliedSeq: d.appliedSeq, appliedEpoch: d.appliedEpoch, log: [...d.log] },
    });
    this.outstanding = null;
    this.startedAtEpoch = this.core.epoch;
    this.history.clear();
    this.historyFloorSeq = d.appliedSeq;
    if (d.assignment !== null) this.core.setAssignment(nowMs, d.assignment);
  }

  crash(): void {
    this.core = null;
    this.outstanding = null;
  }

  setAssignment(nowMs: number, a: ShardAssignment): void {
    if (this.durable.assignment === null || a.epoch > this.durable.assignment.epoch) this.durable.assignment = a;
    this.core?.setAssignment(nowMs, a);
  }

  /**
   * The write request for `op`, with the key's durable version. `lagGroups` > 0 models a version
   * read that started before the last `lagGroups` applies completed (an async store): it returns
   * the key's state as of that older applied sequence, and says so in `durableAtSeq`.
   */
  buildWrite(requestId: number, op: WriteOp, lagGroups = 0): WriteRequest {
    const d = this.durable;
    const atSeq = Math.max(this.historyFloorSeq, d.appliedSeq - lagGroups);
    const states = this.history.get(op.key)?.states;
    if (atSeq < d.appliedSeq && states !== undefined) {
      let found: { version: number; present: boolean } | undefined;
      for (const st of states) if (st.seq <= atSeq) found = st;
      if (found !== undefined) return { requestId, op, durable: { version: found.version, present: found.present }, durableAtSeq: atSeq };
      // The key's history no longer reaches back that far: read the current state.
    } else if (atSeq < d.appliedSeq) {
      // The key did not change since the history floor: its current state is its state at atSeq.
      const stored = d.data.get(op.key);
      const durable = stored === undefined ? { ...ABSENT } : { version: stored.version, present: stored.present };
      return { requestId, op, durable, durableAtSeq: atSeq };
    }
    const stored = d.data.get(op.key);
    const durable = stored === undefined ? { ...ABSENT } : { version: stored.version, present: stored.present };
    return { requestId, op, durable, durableAtSeq: d.appliedSeq };
  }

  read(key: string): StoredValue | undefined {
    return this.durable.data.get(key);
  }

  /**
   * A strong read as the real shell serves it: authorized by the core (throws when not serving),
   * from the committed groups not yet applied when the key is in one, else from the data.
   */
  strongRead(nowMs: number, key: string): { value: StoredValue; fromLog: boolean } {
    const op = this.core!.read(nowMs, key, 'strong');
    if (op !== null) {
      return { value: { version: op.version, present: op.kind === 'put', value: op.kind === 'put' ? op.value : null }, fromLog: true };
    }
    return { value: this.durable.data.get(key) ?? { version: 0, present: false, value: null }, fromLog: false };
  }

  /** Handles pending Readys in contract order; returns what must go out now. */
  process(nowMs: number): ShellOutput {
    const out: ShellOutput = { messages: [], snapshots: [], answers: [], requests: [] };
    const core = this.core;
    if (core === null) return out;
    let rounds = 0;
    for (;;) {
      if (++rounds > 1000) throw new Error(`${this.id}: Ready loop does not settle`);
      if (this.sendEarly) out.messages.push(...core.takeEarlyMessages());
      if (this.answerEarly) out.answers.push(...core.takeAnswers());
      if (this.outstanding !== null) {
        if (nowMs < this.outstanding.completeAtMs) return out;
        const rd = this.outstanding.rd;
        this.outstanding = null;
        this.complete(nowMs, rd, out);
        continue;
      }
      if (!core.hasReady()) return out;
      const rd = core.ready();
      this.hooks.onReadyTaken?.(this, rd);
      if (this.answerEarly) {
        out.answers.push(...rd.answers);
        rd.answers = [];
      }
      if (this.ioDelayMs > 0) {
        this.outstanding = { rd, completeAtMs: nowMs + this.ioDelayMs };
        continue;
      }
      this.complete(nowMs, rd, out);
    }
  }

  private complete(nowMs: number, rd: ReplicationReady, out: ShellOutput): void {
    this.persist(rd);
    out.messages.push(...rd.messages);
    out.snapshots.push(...rd.snapshots);
    out.answers.push(...rd.answers);
    out.requests.push(...rd.coordinatorRequests);
    this.hooks.afterReady?.(this, rd);
    this.core!.advance(nowMs, rd);
  }

  private persist(rd: ReplicationReady): void {
    const d = this.durable;
    if (rd.hardState !== undefined) {
      d.epoch = rd.hardState.epoch;
      d.expanding = [...rd.hardState.expanding];
    }
    if (rd.truncateLogAfterSeq !== undefined) {
      const t = rd.truncateLogAfterSeq;
      d.log = d.log.filter((g) => g.seq <= t);
    }
    for (const g of rd.appendLog) {
      const last = d.log[d.log.length - 1];
      const expected = last === undefined ? null : last.seq + 1;
      if (expected !== null && g.seq !== expected) throw new Error(`${this.id}: durable log append ${g.seq}, expected ${expected}`);
      d.log.push(g);
      this.hooks.onPersist?.(this, g);
    }
    for (const g of rd.apply) {
      if (g.seq !== d.appliedSeq + 1) throw new Error(`${this.id}: apply ${g.seq} after ${d.appliedSeq}`);
      for (const op of g.ops) {
        let h = this.history.get(op.key);
        if (h === undefined) {
          const before = d.data.get(op.key);
          h = { states: [{ seq: this.historyFloorSeq, version: before?.version ?? 0, present: before?.present ?? false }] };
          this.history.set(op.key, h);
        }
        h.states.push({ seq: g.seq, version: op.version, present: op.kind === 'put' });
        if (h.states.length > MAX_KEY_HISTORY) h.states.shift();
        d.data.set(op.key, { version: op.version, present: op.kind === 'put', value: op.kind === 'put' ? op.value : null });
      }
      d.appliedSeq = g.seq;
      d.appliedEpoch = g.epoch;
      this.hooks.onApply?.(this, g);
    }
    if (rd.trimLogThroughSeq !== undefined) {
      const t = rd.trimLogThroughSeq;
      d.log = d.log.filter((g) => g.seq > t);
    }
  }

  /** A consistent copy of the applied data (what a snapshot stream carries). */
  takeSnapshot(epoch: number): { meta: SnapshotMeta; data: Map<string, StoredValue> } {
    const d = this.durable;
    return {
      meta: { shard: this.shard, epoch, from: this.id, seq: d.appliedSeq, seqEpoch: d.appliedEpoch },
      data: new Map(d.data),
    };
  }

  /** A snapshot stream arrived: ask the core, then replace data and log as the contract says. */
  installSnapshot(nowMs: number, meta: SnapshotMeta, data: Map<string, StoredValue>): boolean {
    const core = this.core;
    // A snapshot waits for no Ready in flight: drop it (the primary offers it again).
    if (core === null || meta.seq === 0 || this.outstanding !== null) return false;
    if (!core.installSnapshot(nowMs, meta)) return false;
    this.history.clear();
    this.historyFloorSeq = meta.seq;
    const d = this.durable;
    d.data = new Map(data);
    d.log = [];
    d.appliedSeq = meta.seq;
    d.appliedEpoch = meta.seqEpoch;
    return true;
  }
}

// ---------------------------------------------------------------------------------------------
// The simulation.
// ---------------------------------------------------------------------------------------------

export class SimFailure extends Error {
  override readonly name = 'SimFailure';
}

/** Named fault probabilities; each seed draws each uniformly in [0, max]. */
export interface FaultProfile {
  /** Per message: lost. */
  dropProbability: number;
  /** Per message: delivered twice. */
  duplicateProbability: number;
  /** Per message: extra delay up to maxExtraDelayMs (reorders). */
  delayProbability: number;
  maxExtraDelayMs: number;
  /** Per step: cut one replica off from the other replicas (both directions). */
  partitionProbability: number;
  /** Per step: cut the primary off from the coordinator only (its lease lapses: failover). */
  coordinatorCutProbability: number;
  /** Per step: heal every cut link. */
  healProbability: number;
  /** Per live replica per step: crash. */
  crashProbability: number;
  /** Per crashed replica per step: restart from the durable store. */
  restartProbability: number;
  /** Per step: a replica stops ticking and answering for a while (GC / SIGSTOP pause). */
  pauseProbability: number;
  /**
   * Per step: move a backup to a new machine: the coordinator removes it from the shard, its
   * disk is replaced by an empty one, and it is added back as a catching-up replica (filled by
   * log catch-up or a snapshot, then in sync): a replica move, with every other fault going on.
   */
  replaceProbability: number;
  /** Per step: the primary crashes and restarts at once, well within its lease. */
  primaryRestartProbability: number;
}

export const MAX_FAULTS: Readonly<FaultProfile> = Object.freeze({
  dropProbability: 0.15,
  duplicateProbability: 0.1,
  delayProbability: 0.3,
  maxExtraDelayMs: 60,
  partitionProbability: 0.01,
  coordinatorCutProbability: 0.01,
  healProbability: 0.02,
  crashProbability: 0.003,
  restartProbability: 0.03,
  pauseProbability: 0.004,
  replaceProbability: 0.002,
  primaryRestartProbability: 0.002,
});

export interface ReplicationSimOptions {
  seed: number;
  /** Simulated ms of the fault phase. Default 3000. */
  safetyMs?: number;
  /** Most simulated ms after healing for a write to succeed again. Default 4000. */
  livenessBoundMs?: number;
  /** Print a trace of events to stdout. */
  trace?: boolean;
}

export interface ReplicationSimStats {
  seed: number;
  steps: number;
  writesOk: number;
  writesRefused: number;
  writesIndeterminate: number;
  writesTimedOut: number;
  failovers: number;
  shrinks: number;
  expands: number;
  crashes: number;
  /** Backups moved to an empty disk and filled again (replaceProbability). */
  moves: number;
  snapshotsInstalled: number;
  truncations: number;
  /** Writes refused because the version read lagged too far (StaleVersionError). */
  staleVersionRefusals: number;
  /** Acknowledged successful cas checked against the committed chain. */
  casChecked: number;
  maxSeq: number;
  /** Simulated ms from healing to the first acknowledged write invoked after it. */
  recoveryMs: number;
  /** Primaries restarted within their lease, and the fresh epochs the coordinator granted them. */
  primaryRestarts: number;
  epochRenewals: number;
  /** Strong reads served, and those answered from committed groups not yet applied. */
  strongReads: number;
  readsFromLog: number;
  /** Seeds (replicas) whose shell sends before persisting / answers before applying. */
  sendEarlyReplicas: number;
  answerEarlyReplicas: number;
}

const REPLICAS = ['r1', 'r2', 'r3'] as const;
const COORD = 'coord';
const SHARD = 7;
const STEP_MS = 5;
const TICK_EVERY_MS = 10;
const BASE_DELAY_MS = 1;
const BASE_DELAY_SPREAD_MS = 6;
/** Lease length on the coordinator's clock. */
const LEASE_MS = 300;
const RENEW_EVERY_MS = 60;
/** Clock rates lie within 1 ± DRIFT; the peer discounts its lease by LEASE_MARGIN (> 2 × DRIFT). */
const DRIFT = 0.01;
const LEASE_MARGIN = 0.05;
const CLIENTS = 4;
const KEYS = ['a', 'b', 'c', 'd', 'e'];
const CLIENT_TIMEOUT_MS = 1500;

type Payload =
  | { kind: 'repl'; message: ReplicationMessage }
  | { kind: 'snapshot'; meta: SnapshotMeta; data: Map<string, StoredValue> }
  | { kind: 'renew'; sentAtLocalMs: number; progress: ReplicaProgress }
  | { kind: 'grant'; sentAtLocalMs: number; assignment: ShardAssignment }
  | { kind: 'assignment'; assignment: ShardAssignment }
  | { kind: 'request'; request: InSyncChangeRequest };

interface Envelope {
  from: string;
  to: string;
  deliverAtMs: number;
  order: number;
  payload: Payload;
}

interface ClientState {
  id: number;
  pending: { requestId: number; replica: string; op: WriteOp; invokeMs: number } | null;
  primaryGuess: string;
  knownVersions: Map<string, number>;
}

interface AckedWrite {
  /** For a cas: the version it expected. */
  expectVersion: number | null;
  key: string;
  version: number;
  seq: number;
  present: boolean;
  value: string | null;
}

function fingerprint(g: LogGroup): string {
  return `${g.epoch}|${g.ops.map((op) => `${op.kind}:${op.key}:${op.version}:${op.kind === 'put' ? Buffer.from(op.value).toString('latin1') : ''}`).join(',')}`;
}

function valueText(v: Uint8Array | null): string | null {
  return v === null ? null : Buffer.from(v).toString('latin1');
}

export function runReplicationSim(options: ReplicationSimOptions): ReplicationSimStats {
  return new ReplicationSim(options).run();
}

class ReplicationSim {
  private readonly seed: number;
  private readonly random: Random;
  private readonly faults: FaultProfile;
  private readonly safetyMs: number;
  private readonly livenessBoundMs: number;
  private readonly trace: boolean;
  private nowMs = 0;
  private order = 0;
  private network: Envelope[] = [];
  private readonly cut = new Set<string>();
  private faultsOn = true;
  private clientsOn = true;

  private readonly shells = new Map<string, ReplicaShell>();
  private readonly clockRate = new Map<string, number>();
  private readonly clockOffsetMs = new Map<string, number>();
  private readonly pausedUntilMs = new Map<string, number>();
  private readonly lastRenewMs = new Map<string, number>();
  private readonly lastTickMs = new Map<string, number>();

  // Coordinator state.
  private assignment: ShardAssignment;
  private readonly leaseExpiryMs = new Map<string, number>();
  private readonly reports = new Map<string, ReplicaProgress>();

  // Clients and history.
  private readonly clients: ClientState[] = [];
  private nextRequestId = 1;
  /** Every request the core accepted and has not answered yet. */
  private readonly invoked = new Map<number, WriteOp>();
  private readonly acked: AckedWrite[] = [];
  private healedAtMs = Number.POSITIVE_INFINITY;
  private firstOkAfterHealMs = Number.POSITIVE_INFINITY;

  // Checkers.
  /** (epoch:seq) → group fingerprint, registered when the primary of that epoch persists it. */
  private readonly sequenced = new Map<string, string>();
  private readonly firstSeqOfEpoch = new Map<number, number>();
  /** The highest seq registered for each epoch. */
  private readonly lastSeqOfEpoch = new Map<number, number>();
  /** Acknowledged writes whose group no replica has applied yet (answered at commit), by seq. */
  private readonly ackedUnapplied = new Map<number, Array<{ replica: string; op: WriteOp; version: number }>>();
  /** Strong reads, checked against the committed chain at the end. */
  private readonly reads: Array<{ key: string; version: number; present: boolean; value: string | null; atMs: number }> = [];
  /** The primary the coordinator named for each epoch. */
  private readonly epochPrimary = new Map<number, string>();
  /** seq → fingerprint of the group applied at seq (state machine safety). */
  private readonly committed = new Map<number, string>();
  private readonly committedGroups = new Map<number, LogGroup>();
  /**
   * Writes a replica answered "never happened" after sealing them (a handed-over write whose
   * group another primary replaced): `key\0value`. None may ever be applied.
   */
  private readonly neverHappened = new Set<string>();
  /** replica → key → highest version seen in its durable data. */
  private readonly seenVersions = new Map<string, Map<string, number>>();
  /** A replica moved to an empty disk: the epoch it was added back at (see moveReplica). */
  private readonly bornAtEpoch = new Map<string, number>();
  private readonly checkedPrimaries = new Set<string>();

  private readonly stats: ReplicationSimStats;
  /** Per write: probability that the shell's version read lags a few applies behind. */
  private readonly staleReadProbability: number;
  private readonly config: Partial<ReplicationConfig>;

  constructor(options: ReplicationSimOptions) {
    this.seed = options.seed;
    this.random = new SeededRandom(options.seed);
    this.safetyMs = options.safetyMs ?? 3000;
    this.livenessBoundMs = options.livenessBoundMs ?? 4000;
    this.trace = options.trace ?? false;
    const r = this.random;
    const f = MAX_FAULTS;
    this.faults = {
      dropProbability: r.next() * f.dropProbability,
      duplicateProbability: r.next() * f.duplicateProbability,
      delayProbability: r.next() * f.delayProbability,
      maxExtraDelayMs: r.int(1, f.maxExtraDelayMs),
      partitionProbability: r.next() * f.partitionProbability,
      coordinatorCutProbability: r.next() * f.coordinatorCutProbability,
      healProbability: f.healProbability * (0.25 + 0.75 * r.next()),
      crashProbability: r.next() * f.crashProbability,
      restartProbability: f.restartProbability * (0.25 + 0.75 * r.next()),
      pauseProbability: r.next() * f.pauseProbability,
      replaceProbability: r.next() * f.replaceProbability,
      primaryRestartProbability: r.next() * f.primaryRestartProbability,
    };
    this.config = {
      minInSync: 2,
      ackTimeoutMs: r.pick([80, 150, 250]),
      heartbeatIntervalMs: r.pick([20, 30, 50]),
      catchUpRetryMs: 100,
      coordinatorRetryMs: 100,
      snapshotRetryMs: 300,
      maxGroupsInFlight: r.pick([1, 1, 2, 4]),
      maxOpsPerGroup: r.pick([1, 3, 16]),
      maxGroupsPerAppend: r.pick([1, 4, 16]),
      maxBufferedAppends: r.pick([0, 2, 16]),
      logRetainGroups: r.pick([2, 8, 64]),
      // The log kept for a snapshot in flight: none, a little, or plenty.
      snapshotPinBytes: r.pick([0, 512, 1024 * 1024]),
      versionHistoryGroups: r.pick([0, 4, 32]),
    };
    // Flow control: a window from a fraction of one small group to unbounded, and a retransmit
    // timeout from barely above a heartbeat to just under the ack timeout.
    this.config.maxInflightBytes = r.pick([1, 200, 2000, 1 << 20]);
    this.config.retransmitTimeoutMs = Math.min(this.config.ackTimeoutMs! - 1, r.pick([30, 60, 120, 240]));
    // A heard-from backup gets from exactly the ack timeout to four times it.
    this.config.slowAckTimeoutMs = this.config.ackTimeoutMs! * r.pick([1, 2, 4]);
    // recoveryMs stays -1 until the liveness phase measures it.
    this.stats = { ...emptyStats(), seed: options.seed, recoveryMs: -1 };
    const hooks: ShellHooks = {
      onPersist: (shell, g) => this.checkPersist(shell, g),
      onApply: (shell, g) => this.checkApply(shell, g),
      afterReady: (shell, rd) => {
        if (rd.truncateLogAfterSeq !== undefined) this.stats.truncations++;
        this.checkDurableLog(shell);
      },
    };
    const ioDelayMaxMs = r.pick([0, 0, 4, 12]);
    this.staleReadProbability = r.pick([0, 0.3]);
    // Per seed: the conservative shell, the pipelined one, or a mix across replicas.
    const pipelining = r.pick(['none', 'all', 'all', 'mixed'] as const);
    for (const id of REPLICAS) {
      const shell = new ReplicaShell(id, SHARD, this.config, hooks);
      shell.ioDelayMs = ioDelayMaxMs === 0 ? 0 : r.int(1, ioDelayMaxMs);
      shell.sendEarly = pipelining === 'all' || (pipelining === 'mixed' && r.chance(0.5));
      shell.answerEarly = pipelining === 'all' || (pipelining === 'mixed' && r.chance(0.5));
      if (shell.sendEarly) this.stats.sendEarlyReplicas++;
      if (shell.answerEarly) this.stats.answerEarlyReplicas++;
      this.shells.set(id, shell);
      this.clockRate.set(id, 1 - DRIFT + 2 * DRIFT * r.next());
      this.clockOffsetMs.set(id, r.int(0, 10_000));
      this.seenVersions.set(id, new Map());
    }
    this.assignment = { replicas: [...REPLICAS], primary: 'r1', inSync: [...REPLICAS], epoch: 1 };
    for (let c = 0; c < CLIENTS; c++) {
      this.clients.push({ id: c, pending: null, primaryGuess: r.pick(REPLICAS), knownVersions: new Map() });
    }
  }

  run(): ReplicationSimStats {
    for (const shell of this.shells.values()) shell.start(this.localMs(shell.id));
    // The first primary is treated as holding a lease granted at time 0.
    this.leaseExpiryMs.set(this.assignment.primary!, LEASE_MS);
    this.broadcastAssignment();
    const endSafety = this.safetyMs;
    while (this.nowMs < endSafety) this.step();
    this.heal();
    const deadline = this.healedAtMs + this.livenessBoundMs;
    while (this.nowMs < deadline && this.firstOkAfterHealMs === Number.POSITIVE_INFINITY) this.step();
    if (this.firstOkAfterHealMs === Number.POSITIVE_INFINITY) {
      this.fail(`liveness: no write succeeded within ${this.livenessBoundMs} ms of healing (${this.describe()})`);
    }
    this.stats.recoveryMs = this.firstOkAfterHealMs - this.healedAtMs;
    // Let in-flight work settle, then check the final primary holds every acknowledged write.
    const settleUntil = this.nowMs + 500;
    while (this.nowMs < settleUntil) this.step();
    // Then no new writes, until what was answered at commit has been applied (bounded).
    this.clientsOn = false;
    const drainUntil = this.nowMs + 500;
    const applying = (): boolean =>
      [...this.shells.values()].some((sh) => sh.alive && sh.core!.status(this.localMs(sh.id)).appliedSeq < sh.core!.status(this.localMs(sh.id)).commitSeq);
    while (this.nowMs < drainUntil && (this.ackedUnapplied.size > 0 || applying())) this.step();
    this.checkFinal();
    return this.stats;
  }

  // -------------------------------------------------------------------------------------------
  // Time and steps
  // -------------------------------------------------------------------------------------------

  /** Per replica: when (its local clock) it last received a replication message from each other. */
  private readonly heardAtMs = new Map<string, Map<string, number>>();

  private localMs(id: string): number {
    return this.clockOffsetMs.get(id)! + this.nowMs * this.clockRate.get(id)!;
  }

  private step(): void {
    this.nowMs += STEP_MS;
    this.stats.steps++;
    this.deliverDue();
    for (const shell of this.shells.values()) {
      if (!shell.alive || this.isPaused(shell.id)) continue;
      this.flush(shell); // completes storage writes that are due
      const last = this.lastTickMs.get(shell.id) ?? Number.NEGATIVE_INFINITY;
      if (this.nowMs - last >= TICK_EVERY_MS) {
        this.lastTickMs.set(shell.id, this.nowMs);
        shell.core!.tick(this.localMs(shell.id), this.heardAtMs.get(shell.id));
        this.flush(shell);
      }
      const lastRenew = this.lastRenewMs.get(shell.id) ?? Number.NEGATIVE_INFINITY;
      if (this.nowMs - lastRenew >= RENEW_EVERY_MS) {
        this.lastRenewMs.set(shell.id, this.nowMs);
        this.send(shell.id, COORD, { kind: 'renew', sentAtLocalMs: this.localMs(shell.id), progress: shell.core!.progress() });
      }
    }
    this.tickCoordinator();
    this.tickClients();
    if (this.faultsOn) this.injectFaults();
    this.checkStep();
  }

  private isPaused(id: string): boolean {
    return (this.pausedUntilMs.get(id) ?? 0) > this.nowMs;
  }

  private flush(shell: ReplicaShell): void {
    if (!shell.alive) return;
    const out = shell.process(this.localMs(shell.id));
    for (const m of out.messages) {
      if (m.type === 'append-ack') this.checkAckedPrefix(shell, m.epoch, m.matchSeq);
      if (m.type === 'append') {
        if (m.groups.length > 0) this.traceLine(`${shell.id} -> ${m.to} append e${m.epoch} prev ${m.prevSeq} groups ${m.groups.map((g) => `${g.seq}/${g.epoch}`).join(',')}`);
        for (const g of m.groups) this.register(shell.id, g, 'sent');
      }
      this.send(shell.id, m.to, { kind: 'repl', message: m });
    }
    for (const s of out.snapshots) {
      const snap = shell.takeSnapshot(s.epoch);
      if (snap.meta.seq === 0) continue;
      this.send(shell.id, s.to, { kind: 'snapshot', meta: { ...snap.meta, epoch: s.epoch }, data: snap.data });
    }
    for (const req of out.requests) this.send(shell.id, COORD, { kind: 'request', request: req });
    for (const a of out.answers) this.completeClient(shell.id, a);
    this.stats.maxSeq = Math.max(this.stats.maxSeq, shell.core?.progress().lastSeq ?? 0);
  }

  // -------------------------------------------------------------------------------------------
  // Network
  // -------------------------------------------------------------------------------------------

  private linkKey(a: string, b: string): string {
    return `${a}>${b}`;
  }

  private send(from: string, to: string, payload: Payload): void {
    const f = this.faults;
    const r = this.random;
    if (this.faultsOn && r.chance(f.dropProbability)) return;
    const copies = this.faultsOn && r.chance(f.duplicateProbability) ? 2 : 1;
    for (let k = 0; k < copies; k++) {
      let delay = BASE_DELAY_MS + r.int(0, BASE_DELAY_SPREAD_MS);
      if (this.faultsOn && r.chance(f.delayProbability)) delay += r.int(1, f.maxExtraDelayMs);
      this.network.push({ from, to, deliverAtMs: this.nowMs + delay, order: this.order++, payload });
    }
  }

  private deliverDue(): void {
    const due = this.network.filter((e) => e.deliverAtMs <= this.nowMs);
    if (due.length === 0) return;
    this.network = this.network.filter((e) => e.deliverAtMs > this.nowMs);
    due.sort((x, y) => x.deliverAtMs - y.deliverAtMs || x.order - y.order);
    for (const e of due) this.deliver(e);
  }

  private deliver(e: Envelope): void {
    if (this.cut.has(this.linkKey(e.from, e.to))) return;
    const p = e.payload;
    if (e.to === COORD) {
      if (p.kind === 'renew' && p.progress.epoch < (this.bornAtEpoch.get(e.from) ?? 0)) return; // an empty disk's first reports, or the old machine's
      if (p.kind === 'renew') this.coordinatorRenew(e.from, p.sentAtLocalMs, p.progress);
      else if (p.kind === 'request') this.coordinatorRequest(p.request);
      return;
    }
    const shell = this.shells.get(e.to)!;
    if (!shell.alive || this.isPaused(e.to)) return; // a paused process drops nothing in reality; model it as loss
    const now = this.localMs(e.to);
    const core = shell.core!;
    switch (p.kind) {
      case 'repl': {
        let heard = this.heardAtMs.get(e.to);
        if (heard === undefined) this.heardAtMs.set(e.to, (heard = new Map()));
        heard.set(e.from, now);
        let m = p.message;
        const born = Math.max(this.bornAtEpoch.get(e.to) ?? 0, this.bornAtEpoch.get(e.from) ?? 0);
        if (m.epoch < born) break; // to or from the machine a moved replica had before
        if (this.random.chance(0.1)) m = decodeReplicationMessage(encodeReplicationMessage(m));
        core.step(now, m);
        break;
      }
      case 'snapshot':
        if (p.meta.epoch < Math.max(this.bornAtEpoch.get(e.to) ?? 0, this.bornAtEpoch.get(e.from) ?? 0)) break;
        if (shell.installSnapshot(now, p.meta, p.data)) {
          this.stats.snapshotsInstalled++;
          this.checkVersionsAll(shell);
          this.traceLine(`${e.to} installed snapshot seq ${p.meta.seq} from ${e.from}`);
        }
        break;
      case 'grant':
        shell.setAssignment(now, p.assignment);
        core.setLease(now, Math.max(this.leaseOf(shell), p.sentAtLocalMs + LEASE_MS * (1 - LEASE_MARGIN)));
        this.leaseUntil.set(shell.id, Math.max(this.leaseOf(shell), p.sentAtLocalMs + LEASE_MS * (1 - LEASE_MARGIN)));
        break;
      case 'assignment':
        shell.setAssignment(now, p.assignment);
        break;
      default:
        break;
    }
    this.flush(shell);
  }

  /** The lease a live core holds (lost on crash). */
  private readonly leaseUntil = new Map<string, number>();
  private leaseOf(shell: ReplicaShell): number {
    return this.leaseUntil.get(shell.id) ?? Number.NEGATIVE_INFINITY;
  }

  // -------------------------------------------------------------------------------------------
  // Coordinator
  // -------------------------------------------------------------------------------------------

  private coordinatorRenew(from: string, sentAtLocalMs: number, progress: ReplicaProgress): void {
    this.leaseExpiryMs.set(from, this.nowMs + LEASE_MS);
    this.reports.set(from, progress);
    this.send(COORD, from, { kind: 'grant', sentAtLocalMs, assignment: this.assignment });
  }

  private coordinatorRequest(req: InSyncChangeRequest): void {
    const a = this.assignment;
    if (req.shard !== SHARD || req.epoch !== a.epoch || req.from !== a.primary) return;
    let inSync: string[];
    if (req.kind === 'renew-epoch') {
      if (req.replica !== req.from) return;
      inSync = a.inSync;
      this.stats.epochRenewals++;
    } else if (req.kind === 'shrink-in-sync') {
      if (!a.inSync.includes(req.replica) || req.replica === a.primary) return;
      inSync = a.inSync.filter((r) => r !== req.replica);
      this.stats.shrinks++;
    } else {
      if (!a.replicas.includes(req.replica) || a.inSync.includes(req.replica)) return;
      inSync = [...a.inSync, req.replica];
      this.stats.expands++;
    }
    this.assignment = { ...a, inSync, epoch: a.epoch + 1 };
    this.traceLine(`coord: ${req.kind} ${req.replica} -> epoch ${this.assignment.epoch} inSync [${inSync}]`);
    this.broadcastAssignment();
  }

  private tickCoordinator(): void {
    const a = this.assignment;
    const old = a.primary;
    if (old === null) return;
    if ((this.leaseExpiryMs.get(old) ?? 0) >= this.nowMs) return;
    // The old primary's lease has expired on our clock: promote the reachable in-sync replica
    // with the highest reported sequence.
    const candidates = a.inSync.filter((r) => r !== old && (this.leaseExpiryMs.get(r) ?? 0) >= this.nowMs);
    if (candidates.length === 0) return;
    let best = candidates[0]!;
    for (const c of candidates) {
      const seqOf = (r: string): number => this.reports.get(r)?.lastSeq ?? 0;
      if (seqOf(c) > seqOf(best)) best = c;
    }
    this.assignment = { replicas: a.replicas, primary: best, inSync: a.inSync.filter((r) => r !== old), epoch: a.epoch + 1 };
    this.stats.failovers++;
    this.traceLine(`coord: failover ${old} -> ${best} epoch ${this.assignment.epoch} inSync [${this.assignment.inSync}]`);
    this.broadcastAssignment();
  }

  private broadcastAssignment(): void {
    if (this.assignment.primary !== null) this.epochPrimary.set(this.assignment.epoch, this.assignment.primary);
    for (const id of REPLICAS) this.send(COORD, id, { kind: 'assignment', assignment: this.assignment });
  }

  // -------------------------------------------------------------------------------------------
  // Clients
  // -------------------------------------------------------------------------------------------

  private tickClients(): void {
    if (!this.clientsOn) return;
    for (const c of this.clients) {
      if (c.pending !== null) {
        if (this.nowMs - c.pending.invokeMs >= CLIENT_TIMEOUT_MS) {
          this.stats.writesTimedOut++;
          c.pending = null;
          c.primaryGuess = this.random.pick(REPLICAS);
        }
        continue;
      }
      if (!this.random.chance(0.3)) continue;
      this.invoke(c);
    }
  }

  private invoke(c: ClientState): void {
    const r = this.random;
    if (r.chance(0.25)) {
      this.strongRead(c);
      return;
    }
    const key = r.pick(KEYS);
    const value = new TextEncoder().encode(`v${this.nextRequestId}`);
    let op: WriteOp;
    const roll = r.next();
    if (roll < 0.5) op = { kind: 'put', key, value };
    else if (roll < 0.65) op = { kind: 'delete', key };
    else {
      const known = c.knownVersions.get(key) ?? 0;
      const expectVersion = r.chance(0.7) ? known : r.int(0, known + 2);
      op = { kind: 'cas', key, expectVersion, value };
    }
    const shell = this.shells.get(c.primaryGuess)!;
    if (!shell.alive || this.isPaused(shell.id)) {
      c.primaryGuess = r.pick(REPLICAS);
      return;
    }
    const requestId = this.nextRequestId++;
    try {
      const lag = r.chance(this.staleReadProbability) ? r.int(1, 6) : 0;
      shell.core!.write(this.localMs(shell.id), shell.buildWrite(requestId, op, lag));
    } catch (err) {
      this.stats.writesRefused++;
      const e = err as Error & { primary?: string | null };
      if (e.name === 'StaleVersionError') this.stats.staleVersionRefusals++;
      if (e.name === 'NotPrimaryError' && typeof e.primary === 'string' && e.primary !== shell.id) c.primaryGuess = e.primary;
      else if (e.name === 'NotPrimaryError' || e.name === 'NotInSyncError') c.primaryGuess = r.pick(REPLICAS);
      else if (!['NotEnoughReplicasError', 'OverloadedError', 'StaleVersionError'].includes(e.name)) throw err;
      return;
    }
    c.pending = { requestId, replica: shell.id, op, invokeMs: this.nowMs };
    this.invoked.set(requestId, op);
    this.flush(shell);
  }

  /**
   * A strong read at the replica the client believes is primary. It must see every write
   * acknowledged before it (real-time order); what it saw must be in the committed chain
   * (checked at the end).
   */
  private strongRead(c: ClientState): void {
    const r = this.random;
    const key = r.pick(KEYS);
    const shell = this.shells.get(c.primaryGuess)!;
    if (!shell.alive || this.isPaused(shell.id)) {
      c.primaryGuess = r.pick(REPLICAS);
      return;
    }
    let got: { value: StoredValue; fromLog: boolean };
    try {
      got = shell.strongRead(this.localMs(shell.id), key);
    } catch (err) {
      const e = err as Error & { primary?: string | null };
      if (e.name !== 'NotPrimaryError') throw err;
      if (typeof e.primary === 'string' && e.primary !== shell.id) c.primaryGuess = e.primary;
      else if (e.primary !== shell.id) c.primaryGuess = r.pick(REPLICAS);
      return;
    }
    this.stats.strongReads++;
    if (got.fromLog) this.stats.readsFromLog++;
    let newest = 0;
    for (const w of this.acked) if (w.key === key && w.version > newest) newest = w.version;
    for (const list of this.ackedUnapplied.values()) for (const w of list) if (w.op.key === key && w.version > newest) newest = w.version;
    if (got.value.version < newest) {
      this.fail(`strong read of ${key} at ${shell.id} saw version ${got.value.version} after version ${newest} was acknowledged (${this.describe()})`);
    }
    this.reads.push({ key, version: got.value.version, present: got.value.present, value: valueText(got.value.value), atMs: this.nowMs });
  }

  private completeClient(replica: string, a: WriteAnswer): void {
    const op = this.invoked.get(a.requestId);
    if (op === undefined) this.fail(`answer to unknown request ${a.requestId}`);
    this.invoked.delete(a.requestId);
    const c = this.clients.find((x) => x.pending !== null && x.pending.requestId === a.requestId);
    if (c === undefined) {
      // The client gave up already; an ok answer still counts as acknowledged (it could have been seen).
      if (a.ok && a.result.applied) this.recordAck(replica, a.result.seq, op, a.result.version);
      return;
    }
    const p = c.pending!;
    c.pending = null;
    if (!a.ok) {
      if (a.error.name === 'IndeterminateWriteError') this.stats.writesIndeterminate++;
      else this.stats.writesRefused++;
      const op = p.op;
      if (a.error.name === 'NotPrimaryError' && op.kind !== 'delete') {
        const text = valueText(op.value);
        for (const g of this.committedGroups.values()) {
          if (g.ops.some((o) => o.kind === 'put' && o.key === op.key && valueText(o.value) === text)) {
            this.fail(`a write answered as never applied (${op.key} = ${text}) is in committed group ${g.seq}`);
          }
        }
        this.neverHappened.add(`${op.key}\0${text}`);
      }
      c.primaryGuess = this.random.pick(REPLICAS);
      return;
    }
    this.stats.writesOk++;
    if (p.invokeMs >= this.healedAtMs && this.firstOkAfterHealMs === Number.POSITIVE_INFINITY) this.firstOkAfterHealMs = this.nowMs;
    const res = a.result;
    if (res.applied) {
      c.knownVersions.set(p.op.key, res.version);
      this.recordAck(replica, res.seq, p.op, res.version);
    } else {
      c.knownVersions.set(p.op.key, res.current.version);
      if (p.op.kind !== 'cas') this.fail(`a ${p.op.kind} answered as not applied`);
      if (res.current.version === p.op.expectVersion || (p.op.expectVersion === 0 && !res.current.present)) {
        this.fail(`cas expecting ${p.op.expectVersion} failed although the current version is ${res.current.version}`);
      }
    }
  }

  private recordAck(replica: string, seq: number, op: WriteOp, version: number): void {
    const group = this.committedGroups.get(seq);
    if (group === undefined) {
      // Answered at commit, before any replica applied it: checked when the group is applied
      // (checkFinal fails if it never is).
      const list = this.ackedUnapplied.get(seq) ?? [];
      list.push({ replica, op, version });
      this.ackedUnapplied.set(seq, list);
      return;
    }
    const logged = group.ops.find((o) => o.key === op.key && o.version === version);
    if (logged === undefined) this.fail(`acknowledged write ${op.key}@${version} (seq ${seq}) is not in the committed group`);
    if (op.kind === 'delete' ? logged.kind !== 'delete' : logged.kind !== 'put') this.fail(`acknowledged ${op.kind} logged as ${logged.kind}`);
    if (op.kind !== 'delete' && logged.kind === 'put' && valueText(logged.value) !== valueText(op.value)) this.fail('acknowledged value differs');
    this.acked.push({ expectVersion: op.kind === 'cas' ? op.expectVersion : null, key: logged.key, version, seq, present: logged.kind === 'put', value: logged.kind === 'put' ? valueText(logged.value) : null });
  }

  // -------------------------------------------------------------------------------------------
  // Faults
  // -------------------------------------------------------------------------------------------

  private injectFaults(): void {
    const r = this.random;
    const f = this.faults;
    if (r.chance(f.partitionProbability)) {
      const victim = r.pick(REPLICAS);
      for (const other of REPLICAS) {
        if (other === victim) continue;
        this.cut.add(this.linkKey(victim, other));
        this.cut.add(this.linkKey(other, victim));
      }
      if (r.chance(0.5)) {
        this.cut.add(this.linkKey(victim, COORD));
        this.cut.add(this.linkKey(COORD, victim));
      }
      this.traceLine(`fault: partition ${victim}`);
    }
    if (r.chance(f.coordinatorCutProbability)) {
      const victim = this.assignment.primary ?? r.pick(REPLICAS);
      this.cut.add(this.linkKey(victim, COORD));
      this.cut.add(this.linkKey(COORD, victim));
      this.traceLine(`fault: cut ${victim} from the coordinator`);
    }
    if (r.chance(f.replaceProbability)) this.moveReplica();
    if (r.chance(f.primaryRestartProbability)) {
      const p = this.assignment.primary;
      const shell = p === null ? undefined : this.shells.get(p);
      if (shell !== undefined && shell.alive) {
        // Crash and come back at once: the coordinator still counts its lease, so it is primary
        // again at the same epoch, with whatever it sent but had not persisted out there.
        shell.crash();
        this.leaseUntil.delete(shell.id);
        this.stats.primaryRestarts++;
        this.traceLine(`fault: primary ${shell.id} restarts within its lease`);
        this.restart(shell);
      }
    }
    if (r.chance(f.healProbability) && this.cut.size > 0) {
      this.cut.clear();
      this.traceLine('fault: heal');
    }
    for (const shell of this.shells.values()) {
      if (shell.alive && r.chance(f.crashProbability)) {
        shell.crash();
        this.leaseUntil.delete(shell.id);
        this.stats.crashes++;
        this.traceLine(`fault: crash ${shell.id}`);
      } else if (!shell.alive && r.chance(f.restartProbability)) {
        this.restart(shell);
      }
      if (shell.alive && r.chance(f.pauseProbability)) {
        this.pausedUntilMs.set(shell.id, this.nowMs + r.int(50, 600));
        this.traceLine(`fault: pause ${shell.id}`);
      }
    }
  }

  /**
   * A backup moves to a new machine (see replaceProbability). The new machine reuses the id, so
   * what was addressed to or sent by the old one (epochs before it was added back) is dropped on
   * delivery: in the real cluster that is another peer id, refused by the map check.
   */
  private moveReplica(): void {
    const a = this.assignment;
    const backups = a.replicas.filter((id) => id !== a.primary);
    if (a.primary === null || backups.length === 0) return;
    const x = this.random.pick(backups);
    const removed: ShardAssignment = { replicas: a.replicas.filter((id) => id !== x), primary: a.primary, inSync: a.inSync.filter((id) => id !== x), epoch: a.epoch + 1 };
    this.assignment = removed;
    this.broadcastAssignment();
    const shell = this.shells.get(x)!;
    shell.crash();
    shell.durable = emptyDurable();
    this.leaseUntil.delete(x);
    this.seenVersions.set(x, new Map());
    this.reports.delete(x);
    this.assignment = { ...removed, replicas: [...removed.replicas, x], epoch: removed.epoch + 1 };
    this.bornAtEpoch.set(x, this.assignment.epoch);
    this.broadcastAssignment();
    shell.setAssignment(this.localMs(x), this.assignment);
    this.stats.moves++;
    this.traceLine(`fault: move ${x} to an empty disk -> epoch ${this.assignment.epoch} replicas [${this.assignment.replicas}] inSync [${this.assignment.inSync}]`);
    this.restart(shell);
  }

  private restart(shell: ReplicaShell): void {
    shell.start(this.localMs(shell.id));
    this.traceLine(`restart ${shell.id}`);
    this.flush(shell);
  }

  private heal(): void {
    this.faultsOn = false;
    this.cut.clear();
    this.pausedUntilMs.clear();
    for (const shell of this.shells.values()) if (!shell.alive) this.restart(shell);
    this.healedAtMs = this.nowMs;
    this.traceLine('heal everything');
  }

  // -------------------------------------------------------------------------------------------
  // Invariants
  // -------------------------------------------------------------------------------------------

  private fail(problem: string): never {
    throw new SimFailure(
      `replication sim seed ${this.seed} at ${this.nowMs} ms: ${problem}\n` +
        `  replay: SHOAL_SEED=${this.seed} npx mocha --no-config --require dist/test/setup.js dist/test/sim/replication.test.js`,
    );
  }

  private traceLine(text: string): void {
    if (this.trace) console.log(`[${this.nowMs}] ${text}`);
  }

  private describe(): string {
    const parts = [`assignment ${JSON.stringify(this.assignment)}`];
    for (const shell of this.shells.values()) {
      if (!shell.alive) {
        parts.push(`${shell.id}: down`);
        continue;
      }
      const s = shell.core!.status(this.localMs(shell.id));
      parts.push(
        `${shell.id}: ${s.role} e${s.epoch} serving=${s.serving} reconciled=${s.reconciled} last=${s.lastSeq} commit=${s.commitSeq} applied=${s.appliedSeq} trim=${s.trimSeq} pending=${s.pendingWrites} inflight=${s.groupsInFlight}`,
      );
    }
    return parts.join('; ');
  }

  /**
   * (2) one content per (seq, epoch): a registry of groups by (epoch, seq), filled when the
   * primary of that epoch first sends or persists one. Whoever sends or persists a group later
   * must have exactly that group. A primary that crashed with a group sent (possibly before it
   * persisted it) never seals a different one there: it restarts into a fresh epoch.
   */
  private register(from: string, g: LogGroup, how: 'sent' | 'persisted'): void {
    const key = `${g.epoch}:${g.seq}`;
    const fp = fingerprint(g);
    const known = this.sequenced.get(key);
    if (known !== undefined) {
      if (known !== fp) this.fail(`${from} ${how} a different group at epoch ${g.epoch} seq ${g.seq}`);
      return;
    }
    if (this.epochPrimary.get(g.epoch) !== from) {
      this.fail(`${from} ${how} group (epoch ${g.epoch}, seq ${g.seq}) before the primary of that epoch sent or persisted it`);
    }
    this.sequenced.set(key, fp);
    this.traceLine(`registered (${g.epoch}, ${g.seq}) ${how} by ${from}`);
    const last = this.lastSeqOfEpoch.get(g.epoch) ?? 0;
    if (g.seq > last) this.lastSeqOfEpoch.set(g.epoch, g.seq);
    if (!this.firstSeqOfEpoch.has(g.epoch)) this.firstSeqOfEpoch.set(g.epoch, g.seq);
  }

  private checkPersist(shell: ReplicaShell, g: LogGroup): void {
    this.register(shell.id, g, 'persisted');
  }

  /** (2) each replica's groups of an epoch are a prefix of that epoch's primary's groups. */
  private checkDurableLog(shell: ReplicaShell): void {
    const log = shell.durable.log;
    for (let k = 0; k < log.length; k++) {
      const g = log[k]!;
      if (k > 0) {
        const prev = log[k - 1]!;
        if (g.seq !== prev.seq + 1) this.fail(`${shell.id} durable log has a gap at ${g.seq}`);
        if (g.epoch < prev.epoch) this.fail(`${shell.id} durable log epochs decrease at ${g.seq}`);
        if (g.epoch !== prev.epoch && this.firstSeqOfEpoch.get(g.epoch) !== g.seq) {
          this.fail(`${shell.id} holds epoch ${g.epoch} from seq ${g.seq}, but that epoch's primary started at ${this.firstSeqOfEpoch.get(g.epoch)}`);
        }
      }
      if (this.sequenced.get(`${g.epoch}:${g.seq}`) !== fingerprint(g)) this.fail(`${shell.id} durable log group ${g.seq} differs from its primary's`);
    }
    if (log.length > 0 && log[0]!.seq > shell.durable.appliedSeq + 1) this.fail(`${shell.id} log starts after a gap from applied`);
  }

  /**
   * (2) a replica acknowledging the primary of `epoch` holds a prefix of that primary's log: the
   * same groups up to `matchSeq` (each group is checked against the registry when persisted), and
   * nothing beyond what that primary sequenced (reconciliation truncated any older-epoch tail the
   * primary never had). The primary's log is its core's (it may send before persisting); once it
   * crashed, or moved to a later epoch, its log may have been reconciled by another: not checked.
   */
  private checkAckedPrefix(shell: ReplicaShell, epoch: number, matchSeq: number): void {
    const primary = this.shells.get(this.epochPrimary.get(epoch) ?? '');
    if (primary === undefined) this.fail(`${shell.id} acknowledged epoch ${epoch}, which has no primary`);
    const core = primary.core;
    // Restarted at that epoch: it may have lost groups it sent; it does not sequence there again.
    if (core === null || core.epoch !== epoch || primary === shell || primary.startedAtEpoch >= epoch) return;
    const pLog = core.logGroups();
    const pLast = core.progress().lastSeq;
    const bLog = shell.durable.log;
    const bLast = bLog.length > 0 ? bLog[bLog.length - 1]!.seq : shell.durable.appliedSeq;
    if (matchSeq > pLast) this.fail(`${shell.id} acknowledged ${matchSeq} beyond the epoch ${epoch} primary's last group ${pLast}`);
    if (bLast > pLast) {
      this.fail(`${shell.id} acknowledged epoch ${epoch} holding groups up to ${bLast}, beyond its primary's ${pLast}`);
    }
    const pFirst = pLog.length > 0 ? pLog[0]!.seq : pLast + 1;
    for (const g of bLog) {
      if (g.seq > matchSeq || g.seq < pFirst) continue;
      if (fingerprint(g) !== fingerprint(pLog[g.seq - pFirst]!)) {
        this.fail(`${shell.id} acknowledged ${matchSeq} at epoch ${epoch} but its group ${g.seq} differs from the primary's`);
      }
    }
  }

  /** State machine safety and (4) versions never go backwards. */
  private checkApply(shell: ReplicaShell, g: LogGroup): void {
    const fp = fingerprint(g);
    const known = this.committed.get(g.seq);
    if (known === undefined) {
      this.committed.set(g.seq, fp);
      this.committedGroups.set(g.seq, g);
      const waiting = this.ackedUnapplied.get(g.seq);
      this.ackedUnapplied.delete(g.seq);
      for (const w of waiting ?? []) this.recordAck(w.replica, g.seq, w.op, w.version);
      for (const op of g.ops) {
        if (op.kind === 'put' && this.neverHappened.has(`${op.key}\0${valueText(op.value)}`)) {
          this.fail(`a write answered as never applied (${op.key} = ${valueText(op.value)}) is in committed group ${g.seq}`);
        }
      }
    } else if (known !== fp) {
      this.fail(`${shell.id} applied a different group at seq ${g.seq} than another replica`);
    }
    const seen = this.seenVersions.get(shell.id)!;
    for (const op of g.ops) {
      const before = seen.get(op.key) ?? 0;
      if (op.version < before) this.fail(`${shell.id}: version of ${op.key} went back from ${before} to ${op.version}`);
      if (op.version !== before + 1 && before !== 0) {
        // Versions step by one along the committed chain; a replica that skipped (snapshot) may jump.
      }
      seen.set(op.key, op.version);
    }
  }

  private checkVersionsAll(shell: ReplicaShell): void {
    const seen = this.seenVersions.get(shell.id)!;
    for (const [key, v] of shell.durable.data) {
      const before = seen.get(key) ?? 0;
      if (v.version < before) this.fail(`${shell.id}: version of ${key} went back from ${before} to ${v.version} (snapshot)`);
      seen.set(key, v.version);
    }
  }

  private checkStep(): void {
    // (3) never two replicas serving as primary at the same simulated time.
    let serving: string | null = null;
    for (const shell of this.shells.values()) {
      if (!shell.alive) continue;
      const local = this.localMs(shell.id);
      if (!shell.core!.isServing(local)) continue;
      if (serving !== null) this.fail(`two primaries serving at once: ${serving} and ${shell.id} (${this.describe()})`);
      serving = shell.id;
      // (1) a primary that may answer strong reads holds every acknowledged write (checked once
      // per primary and epoch: after every failover).
      const s = shell.core!.status(local);
      const key = `${shell.id}@${s.epoch}`;
      if (s.reconciled && s.appliedSeq >= s.commitSeq && !this.checkedPrimaries.has(key) && this.readable(shell, local)) {
        this.checkedPrimaries.add(key);
        this.checkHoldsAcked(shell);
      }
    }
  }

  private readable(shell: ReplicaShell, local: number): boolean {
    try {
      shell.core!.read(local, 'a', 'strong');
      return true;
    } catch {
      return false;
    }
  }

  /** (1) every acknowledged write is in this replica's durable state, in order. */
  private checkHoldsAcked(shell: ReplicaShell): void {
    const d = shell.durable;
    for (const seq of this.ackedUnapplied.keys()) {
      if (seq > d.appliedSeq) this.fail(`${shell.id} serves reads at applied ${d.appliedSeq} but misses acknowledged group ${seq}`);
    }
    for (const w of this.acked) {
      if (w.seq > d.appliedSeq) {
        this.fail(`${shell.id} serves reads at applied ${d.appliedSeq} but misses acknowledged group ${w.seq}`);
      }
      const stored = d.data.get(w.key);
      if (stored === undefined || stored.version < w.version) {
        this.fail(`${shell.id} lost acknowledged write ${w.key}@${w.version} (holds ${stored?.version ?? 0})`);
      }
    }
  }

  private checkFinal(): void {
    let primary: ReplicaShell | null = null;
    for (const shell of this.shells.values()) {
      if (shell.alive && shell.core!.isServing(this.localMs(shell.id))) primary = shell;
    }
    if (primary === null) this.fail(`no serving primary at the end (${this.describe()})`);
    this.checkHoldsAcked(primary);
    // The primary's data is exactly the committed chain replayed up to its applied sequence.
    const model = new Map<string, { version: number; present: boolean; value: string | null }>();
    const d = primary.durable;
    const casBySeq = new Map<string, number>();
    for (const w of this.acked) if (w.expectVersion !== null) casBySeq.set(`${w.seq}:${w.key}:${w.version}`, w.expectVersion);
    for (let seq = 1; seq <= d.appliedSeq; seq++) {
      const g = this.committedGroups.get(seq);
      if (g === undefined) this.fail(`committed chain has no group ${seq}`);
      for (const op of g.ops) {
        const prior = model.get(op.key) ?? { version: 0, present: false, value: null };
        const before = prior.version;
        if (op.version !== before + 1) this.fail(`group ${seq} sets ${op.key} to version ${op.version} after ${before}`);
        const expect = casBySeq.get(`${seq}:${op.key}:${op.version}`);
        if (expect !== undefined && !casMatches(expect, prior)) {
          this.fail(`acknowledged cas on ${op.key} expecting ${expect} applied over version ${before} (present ${prior.present})`);
        }
        this.stats.casChecked += expect === undefined ? 0 : 1;
        model.set(op.key, { version: op.version, present: op.kind === 'put', value: op.kind === 'put' ? valueText(op.value) : null });
      }
    }
    for (const [key, m] of model) {
      const s = d.data.get(key);
      if (s === undefined || s.version !== m.version || s.present !== m.present || valueText(s.value) !== m.value) {
        this.fail(`final primary ${primary.id} data for ${key} differs from the committed chain`);
      }
    }
    if (d.data.size !== model.size) this.fail(`final primary ${primary.id} holds keys the committed chain never wrote`);
    // Every strong read saw a state of the committed chain: the version it read was set by a
    // committed group with that value (or never set: version 0, absent).
    const setBy = new Map<string, { present: boolean; value: string | null }>();
    for (const g of this.committedGroups.values()) {
      for (const op of g.ops) setBy.set(`${op.key}@${op.version}`, { present: op.kind === 'put', value: op.kind === 'put' ? valueText(op.value) : null });
    }
    for (const rd of this.reads) {
      if (rd.version === 0) {
        if (rd.present) this.fail(`strong read of ${rd.key} at ${rd.atMs} ms saw a present key at version 0`);
        continue;
      }
      const set = setBy.get(`${rd.key}@${rd.version}`);
      if (set === undefined || set.present !== rd.present || set.value !== rd.value) {
        this.fail(`strong read of ${rd.key} at ${rd.atMs} ms saw version ${rd.version} = ${rd.value}, not what the committed chain holds there`);
      }
    }
    // Every acknowledged write is in the chain at its sequence, and chains agree on versions.
    for (const w of this.acked) {
      const g = this.committedGroups.get(w.seq)!;
      if (!g.ops.some((op) => op.key === w.key && op.version === w.version)) this.fail(`acknowledged ${w.key}@${w.version} not in group ${w.seq}`);
    }
  }
}

export function emptyStats(): ReplicationSimStats {
  return {
    seed: 0,
    steps: 0,
    writesOk: 0,
    writesRefused: 0,
    writesIndeterminate: 0,
    writesTimedOut: 0,
    failovers: 0,
    shrinks: 0,
    expands: 0,
    crashes: 0,
    moves: 0,
    snapshotsInstalled: 0,
    truncations: 0,
    staleVersionRefusals: 0,
    casChecked: 0,
    maxSeq: 0,
    recoveryMs: 0,
    primaryRestarts: 0,
    epochRenewals: 0,
    strongReads: 0,
    readsFromLog: 0,
    sendEarlyReplicas: 0,
    answerEarlyReplicas: 0,
  };
}

export function addStats(total: ReplicationSimStats, s: ReplicationSimStats): void {
  total.steps += s.steps;
  total.writesOk += s.writesOk;
  total.writesRefused += s.writesRefused;
  total.writesIndeterminate += s.writesIndeterminate;
  total.writesTimedOut += s.writesTimedOut;
  total.failovers += s.failovers;
  total.shrinks += s.shrinks;
  total.expands += s.expands;
  total.crashes += s.crashes;
  total.moves += s.moves;
  total.snapshotsInstalled += s.snapshotsInstalled;
  total.truncations += s.truncations;
  total.staleVersionRefusals += s.staleVersionRefusals;
  total.casChecked += s.casChecked;
  total.maxSeq = Math.max(total.maxSeq, s.maxSeq);
  total.recoveryMs = Math.max(total.recoveryMs, s.recoveryMs);
  total.primaryRestarts += s.primaryRestarts;
  total.epochRenewals += s.epochRenewals;
  total.strongReads += s.strongReads;
  total.readsFromLog += s.readsFromLog;
  total.sendEarlyReplicas += s.sendEarlyReplicas;
  total.answerEarlyReplicas += s.answerEarlyReplicas;
}
