import { randomBytes } from 'node:crypto';
import { ClusterMap } from '../protocols/cluster-map/cluster-map.js';
import { encodeClusterCommand } from '../protocols/cluster-map/commands.js';
import type { ApplyResult, ClusterCommand, ClusterMapView, ClusterSettings } from '../protocols/cluster-map/types.js';
import { decodeRaftMessage, encodeRaftMessage, RAFT_PROTOCOL_ID } from '../protocols/raft/codec.js';
import type { RaftConfig } from '../protocols/raft/config.js';
import { InvalidMessageError } from '../protocols/errors.js';
import { NotLeaderError, ProposalDroppedError } from '../protocols/raft/errors.js';
import { bootstrapStorage, RaftNode, type Ready } from '../protocols/raft/raft.js';
import type { ConfChange, HardState, RaftMessage, RecoveredState } from '../protocols/raft/types.js';
import { SeededRandom } from '../protocols/random.js';
import type { KvStore } from '../storage/kv-store.js';
import { LevelRaftStorage } from '../storage/raft-store.js';
import { admitRaftMessage } from '../protocols/raft/admission.js';
import type { Host } from './host.js';
import type { Logger } from './log.js';
import type { MembershipService } from './membership-service.js';
import { StreamChannel, type ChannelCounters } from './stream-channel.js';

export { NotLeaderError, ProposalDroppedError };

/** The proposal was not applied in time (no quorum, or a leader change lost it). */
export class ProposalTimeoutError extends Error {
  override readonly name = 'ProposalTimeoutError';
}

/** The cluster map rejected the command; `reason` says why. */
export class CommandRejectedError extends Error {
  override readonly name = 'CommandRejectedError';
  constructor(readonly reason: string, detail: string) {
    super(`${reason}: ${detail}`);
  }
}

export type CoordinatorRole = 'leader' | 'follower' | 'candidate' | 'learner' | 'joining';

export interface CoordinatorStatus {
  /** Peer id of the current coordinator (Raft leader), or null while there is none. */
  coordinator: string | null;
  term: number;
  /** `joining` until the coordinator has added this peer to the configuration. */
  role: CoordinatorRole;
  commitIndex: number;
  voters: string[];
  learners: string[];
  clusterMapVersion: number;
}

export interface CoordinatorOptions {
  host: Host;
  /** Root store of the data dir; Raft keeps its state in the `raft` sublevel. */
  store: KvStore;
  membership: MembershipService;
  /** Start a new cluster with this peer as its only voter when the data dir has no Raft state. */
  bootstrap: boolean;
  /** Voters to keep; the rest are learners. Default 3. */
  voters: number;
  /** A voter dead this long is replaced by a live learner. Default 30 s. */
  replaceVoterAfterMs: number;
  raft: Partial<RaftConfig>;
  /** fsync hard state and log appends (default true). */
  sync: boolean;
  /** Settings of a new cluster (used by the bootstrap command only; omitted fields take the defaults). */
  clusterSettings?: Partial<ClusterSettings>;
  log: Logger;
}

/** How often the coordinator compares the Raft configuration and the map with membership, ms. */
const RECONCILE_INTERVAL_MS = 200;
/** Compact the log into a snapshot of the map after this many applied entries. */
const COMPACT_AFTER_ENTRIES = 4096;
/** Bound on waiting for a proposal to be applied. */
const PROPOSAL_TIMEOUT_MS = 5000;
/** Bound on in-flight proposals waiting to be applied. */
const MAX_PENDING_PROPOSALS = 4096;
/** A Raft message whose term is further ahead of ours than this is refused (see admitRaft). */

interface Waiter {
  term: number;
  resolve: (r: ApplyResult) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

/**
 * The Raft shell: drives the pure RaftNode with timers and libp2p streams,
 * persists before it sends, applies committed entries to the cluster map, and
 * (on the leader) keeps the Raft configuration and the map in line with what
 * membership sees: adds live peers as voters up to `voters`, the rest as
 * learners; removes peers that left; replaces voters dead for too long.
 */
export class Coordinator {
  readonly map = new ClusterMap();
  private readonly node: RaftNode;
  private readonly channel: StreamChannel;
  private readonly self: string;
  private tickTimer: NodeJS.Timeout | null = null;
  private reconcileTimer: NodeJS.Timeout | null = null;
  private processing = false;
  private again = false;
  private stopped = false;
  private readonly waiters = new Map<number, Waiter>();
  private readonly deadSince = new Map<string, number>();
  private lastLeader: string | null = null;
  /** The hard state last written, to tell a term or vote change (synced) from a commit-only one. */
  private persistedHard: HardState;

  private constructor(
    private readonly opts: CoordinatorOptions,
    private readonly storage: LevelRaftStorage,
    recovered: RecoveredState,
  ) {
    this.self = opts.host.peerId.toString();
    this.persistedHard = recovered.hardState;
    this.node = new RaftNode({
      id: this.self,
      config: opts.raft,
      random: new SeededRandom(randomBytes(4).readUInt32LE(0)),
      storage: recovered,
    });
    if (recovered.snapshot !== undefined) this.map.restore(recovered.snapshot.data);
    this.channel = new StreamChannel({
      host: opts.host,
      protocol: RAFT_PROTOCOL_ID,
      onFrame: (from, frame) => this.onFrame(from, frame),
      maxQueuedFrames: 1024,
      dialTimeoutMs: 2000,
      log: opts.log,
    });
  }

  /** Recover Raft state from the data dir (bootstrapping a new cluster when asked and empty). */
  static async open(opts: CoordinatorOptions): Promise<Coordinator> {
    const storage = new LevelRaftStorage(opts.store.sublevel('raft'));
    let recovered = await storage.load();
    if (storage.repair !== null) {
      opts.log.warn('raft log: a damaged entry was found at open; the log was cut before it and the coordinator resends the rest', { ...storage.repair });
    }
    const empty = recovered.hardState.term === 0 && recovered.entries.length === 0 && recovered.snapshot === undefined;
    if (empty && opts.bootstrap) {
      recovered = bootstrapStorage([opts.host.peerId.toString()]);
      await storage.persist({ hardState: recovered.hardState, entries: recovered.entries }, { sync: true });
      opts.log.info('bootstrapped a new cluster as its first voter');
    } else if (!empty) {
      opts.log.info('recovered raft state', {
        term: recovered.hardState.term,
        commit: recovered.hardState.commit,
        entries: recovered.entries.length,
        snapshotIndex: recovered.snapshot?.index ?? 0,
      });
    }
    const coordinator = new Coordinator(opts, storage, recovered);
    const lost = coordinator.node.recoveredLostTail;
    if (lost !== null) {
      opts.log.warn('raft log lost its tail (a torn write); committing what is here, the coordinator resends the rest', lost);
    }
    return coordinator;
  }

  async start(): Promise<void> {
    await this.channel.start();
    this.tickTimer = setInterval(() => {
      this.node.tick();
      this.kick();
    }, this.node.config.tickIntervalMs);
    this.reconcileTimer = setInterval(() => this.reconcile(), RECONCILE_INTERVAL_MS);
    this.kick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.tickTimer !== null) clearInterval(this.tickTimer);
    if (this.reconcileTimer !== null) clearInterval(this.reconcileTimer);
    for (const [, w] of this.waiters) {
      clearTimeout(w.timer);
      w.reject(new ProposalTimeoutError('coordinator stopped'));
    }
    this.waiters.clear();
    await this.channel.stop();
    // Let an in-flight persist finish before the store closes.
    for (let i = 0; i < 100 && this.processing; i++) await new Promise((r) => setTimeout(r, 10));
  }

  status(): CoordinatorStatus {
    const s = this.node.status;
    let role: CoordinatorRole;
    if (s.learners.includes(this.self)) role = 'learner';
    else if (!s.voters.includes(this.self)) role = 'joining';
    else role = s.role === 'pre-candidate' ? 'candidate' : s.role;
    return {
      coordinator: s.leader,
      term: s.term,
      role,
      commitIndex: s.commitIndex,
      voters: [...s.voters].sort(),
      learners: [...s.learners].sort(),
      clusterMapVersion: this.map.version,
    };
  }

  mapView(): ClusterMapView {
    return this.map.view();
  }

  private readonly mapListeners: Array<() => void> = [];

  /** Call `listener` after every change of the local cluster map (applied entries or a restored snapshot). */
  onMapChange(listener: () => void): void {
    this.mapListeners.push(listener);
  }

  private notifyMapChange(): void {
    for (const l of this.mapListeners) {
      try {
        l();
      } catch (err) {
        this.opts.log.error('map listener failed', { err });
      }
    }
  }

  /** Frames sent, received, dropped and streams reset on /shoal/raft/1.0.0. */
  get channelCounters(): ChannelCounters {
    return this.channel.counters;
  }

  get isLeader(): boolean {
    return this.node.role === 'leader';
  }

  /**
   * Propose a cluster-map command on the leader and wait until it is applied here.
   * Throws NotLeaderError (with a hint), ProposalDroppedError, ProposalTimeoutError,
   * or CommandRejectedError when the map refused it.
   */
  async propose(cmd: ClusterCommand): Promise<void> {
    if (this.waiters.size >= MAX_PENDING_PROPOSALS) throw new ProposalDroppedError('too-many-uncommitted', 'too many proposals in flight');
    const { index, term } = this.node.propose(encodeClusterCommand(cmd));
    this.kick();
    const result = await new Promise<ApplyResult>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(index);
        reject(new ProposalTimeoutError(`not applied within ${PROPOSAL_TIMEOUT_MS} ms`));
      }, PROPOSAL_TIMEOUT_MS);
      this.waiters.set(index, { term, resolve, reject, timer });
    });
    if (!result.ok) throw new CommandRejectedError(result.reason, result.detail);
  }

  /**
   * Before this peer leaves: hand leadership to another live voter (bounded), so the
   * cluster does not wait an election timeout for a new coordinator.
   */
  async transferLeadershipAway(timeoutMs = 3000): Promise<void> {
    if (!this.isLeader) return;
    const alive = new Set(this.opts.membership.members().filter((m) => m.state === 'alive').map((m) => m.peerId));
    const target = this.node.confState.voters.find((v) => v !== this.self && alive.has(v));
    if (target === undefined) return;
    try {
      this.node.transferLeadership(target);
    } catch (err) {
      this.opts.log.warn('leadership transfer refused', { err });
      return;
    }
    this.kick();
    const deadline = Date.now() + timeoutMs;
    for (let i = 0; i < timeoutMs / 20 + 1 && Date.now() < deadline && this.isLeader; i++) {
      await new Promise((r) => setTimeout(r, 20));
    }
    this.opts.log.info('leadership transfer', { to: target, done: !this.isLeader });
  }

  /** Wait (bounded) until this peer is no longer in the Raft configuration. */
  async waitRemoved(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (let i = 0; i < timeoutMs / 20 + 1 && Date.now() < deadline; i++) {
      const c = this.node.confState;
      if (!c.voters.includes(this.self) && !c.learners.includes(this.self)) return true;
      await new Promise((r) => setTimeout(r, 20));
    }
    return false;
  }

  // -------------------------------------------------------------------------------------------
  // The Ready loop: persist, then send, then apply, then advance. One at a time.

  private kick(): void {
    if (this.stopped) return;
    if (this.processing) {
      this.again = true;
      return;
    }
    this.processing = true;
    void this.drain().finally(() => {
      this.processing = false;
    });
  }

  private async drain(): Promise<void> {
    for (let rounds = 0; rounds < 10_000; rounds++) {
      this.again = false;
      const rd = this.node.ready();
      if (rd === null) {
        if (!this.again) return;
        continue;
      }
      try {
        await this.handleReady(rd);
      } catch (err) {
        // Losing the disk under Raft is a broken invariant: stop serving rather than lie.
        this.opts.log.error('raft persistence failed; stopping the coordinator', { err });
        this.storageFailure = (err as Error).message ?? String(err);
        this.stopped = true;
        return;
      }
      if (this.stopped) return;
    }
  }

  private async handleReady(rd: Ready): Promise<void> {
    if (rd.snapshot !== undefined || rd.entries.length > 0 || rd.hardState !== undefined) {
      // fsync only what Raft's safety rests on: entries, snapshots, term and vote. A commit
      // index alone can be relearned from the leader (etcd's MustSync rule); syncing it put a
      // second fsync on every follower's path of every proposal.
      const hs = rd.hardState;
      const mustSync =
        rd.entries.length > 0 ||
        rd.snapshot !== undefined ||
        (hs !== undefined && (hs.term !== this.persistedHard.term || hs.vote !== this.persistedHard.vote));
      await this.storage.persist({ hardState: hs, entries: rd.entries, snapshot: rd.snapshot }, { sync: this.opts.sync && mustSync });
      if (hs !== undefined) this.persistedHard = hs;
    }
    for (const m of rd.messages) this.send(m);
    const versionBefore = this.map.version;
    if (rd.snapshot !== undefined) this.map.restore(rd.snapshot.data);
    for (const e of rd.committed) {
      let result: ApplyResult = { ok: true };
      if (e.type === 'normal' && e.data.length > 0) result = this.map.applyEntryData(e.data);
      const w = this.waiters.get(e.index);
      if (w !== undefined) {
        this.waiters.delete(e.index);
        clearTimeout(w.timer);
        if (w.term === e.term) w.resolve(result);
        else w.reject(new ProposalDroppedError('transferring', 'lost in a leader change; retry'));
      }
    }
    if (rd.softState !== undefined && rd.softState.leader !== this.lastLeader) {
      this.lastLeader = rd.softState.leader;
      this.opts.log.info('coordinator changed', { coordinator: rd.softState.leader, term: this.node.term, role: rd.softState.role });
    }
    this.node.advance(rd);
    if (this.map.version !== versionBefore || rd.snapshot !== undefined) this.notifyMapChange();
    await this.maybeCompact();
  }

  private async maybeCompact(): Promise<void> {
    const s = this.node.status;
    if (s.applied - s.snapshotIndex < COMPACT_AFTER_ENTRIES) return;
    const snap = this.node.compact(s.applied, this.map.snapshot());
    await this.storage.saveCompaction(snap, { sync: this.opts.sync });
  }

  private send(m: RaftMessage): void {
    if (this.channel.send(m.to, encodeRaftMessage(m)) !== 'queued') this.node.reportUnreachable(m.to);
  }

  /**
   * An inbound frame: decode it, check it against the sender's Noise identity and the Raft
   * configuration (DESIGN §4a), validate a snapshot before the core (and so the disk) sees it.
   * A message refused for its sender's role is dropped and counted; a malformed one throws, which
   * resets the stream (counted by the channel). Neither changes anything.
   */
  private onFrame(from: string, frame: Uint8Array): void {
    if (this.stopped) return;
    const m = decodeRaftMessage(frame);
    if (m.from !== from) throw new InvalidMessageError(`raft message claims to be from ${m.from} but came from ${from}`);
    if (m.to !== this.self) throw new InvalidMessageError(`raft message for ${m.to} reached ${this.self}`);
    const refused = this.admitRaft(m);
    if (refused !== null) {
      // Well-formed but not from a sender in that role: dropped and counted, the stream kept (a
      // new peer may hear the leader a moment before gossip shows it alive; the leader resends).
      this.counters.rejected++;
      this.opts.log.debug('raft message refused', { type: m.type, from, reason: refused });
      return;
    }
    if (m.type === 'snapshot') {
      // Validate before persist: a snapshot that does not restore would be written to disk and
      // crash the peer on every restart.
      try {
        new ClusterMap().restore(m.snapshot.data);
      } catch (err) {
        this.counters.rejected++;
        throw new InvalidMessageError(`raft snapshot from ${from} does not restore: ${(err as Error).message}`);
      }
    }
    this.node.step(m);
    this.kick();
  }

  /** Why a Raft message is refused, or null (protocols/raft/admission.ts has the rule). */
  private admitRaft(m: RaftMessage): string | null {
    return admitRaftMessage(m, {
      term: this.node.term,
      conf: this.node.confState,
      self: this.self,
      isMapMember: (id) => this.map.member(id) !== undefined,
      isAlive: (id) => this.opts.membership.members().some((x) => x.peerId === id && x.state === 'alive'),
    });
  }

  /** Raft frames refused for the sender's role or their content (see admitRaft). */
  readonly counters = { rejected: 0 };
  /** Why Raft stopped writing (the disk failed under it), or null. */
  private storageFailure: string | null = null;
  /** Since when (Date.now()) no coordinator has been known here, or null while one is. */
  private noLeaderSince: number | null = null;

  /**
   * What keeps this peer from doing its part, for /healthz: Raft storage failed; no coordinator
   * known for `noLeaderMs`; the log lost its tail at recovery and has not been filled again.
   */
  healthProblems(noLeaderMs: number): string[] {
    const problems: string[] = [];
    if (this.storageFailure !== null) problems.push(`raft storage failed: ${this.storageFailure}`);
    const now = Date.now();
    if (this.node.status.leader === null) {
      this.noLeaderSince ??= now;
      if (now - this.noLeaderSince >= noLeaderMs) problems.push(`no coordinator known for ${now - this.noLeaderSince} ms`);
    } else this.noLeaderSince = null;
    const lost = this.node.recoveredLostTail;
    if (lost !== null && this.node.commitIndex < lost.committed) {
      problems.push(`raft log lost its tail at recovery (commit ${lost.committed}, entries to ${lost.lastIndex}); catching up at ${this.node.commitIndex}`);
    }
    return problems;
  }

  // -------------------------------------------------------------------------------------------
  // Leader: keep configuration and map in line with membership.

  private reconcile(): void {
    if (this.stopped) return;
    const now = Date.now();
    const members = this.opts.membership.members();
    for (const m of members) {
      if (m.state === 'dead') {
        if (!this.deadSince.has(m.peerId)) this.deadSince.set(m.peerId, now);
      } else this.deadSince.delete(m.peerId);
    }
    if (!this.isLeader) return;
    try {
      this.reconcileMap(members);
      this.reconcileConfig(members, now);
    } catch (err) {
      const name = (err as Error).name;
      if (name !== 'ProposalDroppedError' && name !== 'NotLeaderError') this.opts.log.warn('reconcile failed', { err });
    }
  }

  /** One map command per round at most, so a slow commit does not pile up duplicates. */
  private inFlightMapCommand = false;

  private reconcileMap(members: ReturnType<MembershipService['members']>): void {
    if (this.inFlightMapCommand) return;
    let cmd: ClusterCommand | null = null;
    if (this.map.settings === null) {
      cmd = { type: 'bootstrap', settings: { ...this.opts.clusterSettings } };
    } else {
      for (const m of members) {
        const info = this.map.member(m.peerId);
        if (info === undefined) {
          if (m.state === 'alive') {
            cmd = { type: 'add-member', peerId: m.peerId, addrs: m.addrs.slice(0, 16) };
            break;
          }
          continue;
        }
        const status = m.state === 'alive' ? 'active' : m.state === 'suspect' ? info.status : m.state;
        if (status !== info.status && info.status !== 'draining') {
          cmd = { type: 'update-member', peerId: m.peerId, status };
          break;
        }
        // A restarted peer may listen elsewhere: keep its addresses current in the map.
        const addrs = m.addrs.slice(0, 16);
        if (m.state === 'alive' && addrs.length > 0 && addrs.join(' ') !== info.addrs.join(' ')) {
          cmd = { type: 'update-member', peerId: m.peerId, addrs };
          break;
        }
      }
    }
    if (cmd === null) return;
    this.inFlightMapCommand = true;
    this.propose(cmd)
      .catch((err: Error) => this.opts.log.debug('map command not applied', { type: cmd.type, err }))
      .finally(() => {
        this.inFlightMapCommand = false;
      });
  }

  private reconcileConfig(members: ReturnType<MembershipService['members']>, now: number): void {
    const conf = this.node.confState;
    const inConf = new Set([...conf.voters, ...conf.learners]);
    const state = new Map(members.map((m) => [m.peerId, m.state]));
    const change = this.nextConfChange(conf, inConf, state, now);
    if (change === null) return;
    this.node.proposeConfChange(change);
    this.opts.log.info('configuration change proposed', { ...change });
    this.kick();
  }

  /** The peer's log matches ours up to our commit index. */
  private isCaughtUp(id: string): boolean {
    const pr = this.node.progressOf(id);
    return pr !== null && pr.match >= this.node.commitIndex;
  }

  private nextConfChange(
    conf: { voters: string[]; learners: string[] },
    inConf: Set<string>,
    state: Map<string, string>,
    now: number,
  ): ConfChange | null {
    const target = this.opts.voters;
    // Peers that left gracefully go at once.
    for (const id of inConf) {
      if (id !== this.self && state.get(id) === 'left') return { type: 'remove-node', node: id };
    }
    // Voters dead for too long make room for a live learner.
    const liveLearner = conf.learners.find((l) => state.get(l) === 'alive');
    for (const v of conf.voters) {
      const since = this.deadSince.get(v);
      if (v !== this.self && since !== undefined && now - since >= this.opts.replaceVoterAfterMs && liveLearner !== undefined) {
        return { type: 'remove-node', node: v };
      }
    }
    // Learners dead for too long are dropped so the configuration does not grow without bound.
    for (const l of conf.learners) {
      const since = this.deadSince.get(l);
      if (since !== undefined && now - since >= this.opts.replaceVoterAfterMs) return { type: 'remove-node', node: l };
    }
    // A live learner that has caught up becomes a voter while there are fewer than the target.
    if (conf.voters.length < target) {
      const ready = conf.learners.find((l) => state.get(l) === 'alive' && this.isCaughtUp(l));
      if (ready !== undefined) return { type: 'promote-learner', node: ready };
    }
    // New live peers join as learners first, so an empty log never counts toward a quorum.
    for (const [id, s] of state) {
      if (s === 'alive' && !inConf.has(id)) return { type: 'add-learner', node: id };
    }
    return null;
  }
}
