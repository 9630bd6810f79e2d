/**
 * One Raft peer as a pure state machine (the etcd-raft `RawNode` pattern).
 *
 * Inputs: `tick()` (one logical clock tick, every `tickIntervalMs`), `step(message)` (a decoded,
 * validated message from a peer), `propose`, `proposeConfChange`, `transferLeadership`,
 * `compact`. Output: `ready()` returns what the shell must do, in this order:
 *
 *   1. persist `snapshot`, `entries` and `hardState` durably, atomically or in that order (entries
 *      may overwrite a stored suffix: delete stored entries from `entries[0].index` on, then
 *      write them; a hard state must never point past the entries on disk);
 *   2. only then send `messages` (a vote or an acknowledgement must be on disk before it leaves);
 *   3. restore `snapshot` into the application (if present), then apply `committed` in order;
 *   4. call `advance(ready)`.
 *
 * `tick`, `step` and the proposal calls may be called between `ready()` and `advance()`; `ready()`
 * may not be called again before `advance()`.
 *
 * Algorithm notes (Raft dissertation, etcd-io/raft):
 * - pre-vote: a peer first asks whether it could win at term+1, without changing any term; a
 *   peer cut off from the cluster therefore never inflates terms.
 * - check-quorum: a leader that has not heard from a quorum within `electionTicks` steps down
 *   (checked every tick from per-follower last-heard ticks, so within one election timeout);
 *   a follower that heard from a leader within `electionTicks` ignores vote requests (leader
 *   lease), unless they come from a leadership transfer.
 * - membership: single-server changes take effect when appended; one at a time; a new leader
 *   first commits an entry of its own term before accepting one (dissertation §4.1, bug fix).
 */
import type { Random } from '../random.js';
import { resolveRaftConfig, type RaftConfig } from './config.js';
import { applyConfChange, checkConfChange, cloneConfState, decodeConfChange, encodeConfChange, normalizeConfState } from './conf-change.js';
import { NotLeaderError, ProposalDroppedError, TransferError, CompactionError } from './errors.js';
import { assertRaft, RaftLog } from './log.js';
import { Progress } from './progress.js';
import type {
  AppendMessage,
  AppendResponseMessage,
  ConfChange,
  ConfState,
  Entry,
  EntryType,
  HardState,
  HeartbeatMessage,
  NodeId,
  RaftMessage,
  RaftStatus,
  RecoveredState,
  Role,
  Snapshot,
  SnapshotMessage,
  SoftState,
  VoteMessage,
  VoteResponseMessage,
} from './types.js';

/** Everything the shell must do after the core changed; see the module comment for the order. */
export interface Ready {
  /** Present when leader or role changed since the last Ready. Not persisted. */
  softState?: SoftState;
  /** Present when term, vote or commit changed: persist before sending `messages`. */
  hardState?: HardState;
  /** A snapshot received from the leader: persist it, then restore the application from it. */
  snapshot?: Snapshot;
  /** Entries to persist; the first may overwrite stored entries from its index on. */
  entries: Entry[];
  /** Messages to send, only after everything above is durable. */
  messages: RaftMessage[];
  /** Committed entries to apply to the application, in order, after restoring `snapshot`. */
  committed: Entry[];
}

export interface RaftNodeOptions {
  id: NodeId;
  /** Overrides of DEFAULT_RAFT_CONFIG; validated (throws ConfigError). */
  config?: Partial<RaftConfig>;
  /** Seeded randomness for election timeouts. */
  random: Random;
  /** What the shell recovered from disk (see `bootstrapStorage` and `emptyStorage`). */
  storage: RecoveredState;
}

/** Most committed entries handed out in one Ready: bounds the work of one apply batch. */
export const MAX_COMMITTED_PER_READY = 1024;

const EMPTY = new Uint8Array(0);

/**
 * The durable state of a founding member of a new cluster: one committed `add-voter` entry per
 * voter (term 1), as etcd bootstraps. Every founding peer must use the same voter list (it is
 * sorted here). Persist it before constructing the node; a peer that joins later starts from
 * `emptyStorage()` and learns the configuration from the leader.
 */
export function bootstrapStorage(voters: NodeId[]): RecoveredState {
  const sorted = [...new Set(voters)].sort();
  assertRaft(sorted.length > 0, 'bootstrap needs at least one voter');
  const entries: Entry[] = sorted.map((node, k) => ({
    index: k + 1,
    term: 1,
    type: 'conf-change',
    data: encodeConfChange({ type: 'add-voter', node }),
  }));
  return { hardState: { term: 1, vote: null, commit: entries.length }, entries };
}

/** The durable state of a brand-new peer that will be added to an existing cluster. */
export function emptyStorage(): RecoveredState {
  return { hardState: { term: 0, vote: null, commit: 0 }, entries: [] };
}

type CampaignKind = 'pre-vote' | 'election' | 'transfer';

export class RaftNode {
  readonly id: NodeId;
  readonly config: Readonly<RaftConfig>;
  private readonly random: Random;
  private readonly log: RaftLog;

  private termValue: number;
  private vote: NodeId | null;
  private roleValue: Role = 'follower';
  private leaderId: NodeId | null = null;
  /** The configuration after every appended entry (effective at once, dissertation §4.1). */
  private conf: ConfState;
  /** Index of the last conf-change entry in the log (or the snapshot index). */
  private confIndex = 0;

  /** Leader only: one per other member. */
  private readonly progress = new Map<NodeId, Progress>();
  /** Candidate and pre-candidate: answers received from voters. */
  private readonly votes = new Map<NodeId, boolean>();
  /** Ticks since this node started; the leader stamps answers with it for check-quorum. */
  private nowTick = 0;
  private electionElapsedTicks = 0;
  private heartbeatElapsedTicks = 0;
  private randomizedElectionTicks: number;
  private leadTransferee: NodeId | null = null;
  /** Leader only: a new conf change waits until this index is committed. */
  private pendingConfIndex = 0;

  private outbox: RaftMessage[] = [];
  private prevHardState: HardState;
  private prevSoftState: SoftState;
  private outstandingReady: Ready | null = null;

  constructor(options: RaftNodeOptions) {
    this.id = options.id;
    this.config = Object.freeze(resolveRaftConfig(options.config));
    this.random = options.random;
    const storage = options.storage;
    const snapshot: Snapshot = storage.snapshot ?? { index: 0, term: 0, config: { voters: [], learners: [] }, data: EMPTY };
    this.log = new RaftLog(snapshot, storage.entries, storage.hardState.commit, storage.applied ?? snapshot.index);
    assertRaft(storage.hardState.term >= this.log.lastTerm(), 'recovered term older than the last entry');
    this.termValue = storage.hardState.term;
    this.vote = storage.hardState.vote;
    this.conf = normalizeConfState(snapshot.config);
    this.recomputeConf();
    this.randomizedElectionTicks = this.config.electionTicks;
    this.becomeFollower(this.termValue, null);
    this.prevHardState = this.hardState();
    this.prevSoftState = { leader: null, role: 'follower' };
  }

  // ---------------------------------------------------------------------------------------------
  // Read-only views

  get term(): number {
    return this.termValue;
  }

  get role(): Role {
    return this.roleValue;
  }

  get leader(): NodeId | null {
    return this.leaderId;
  }

  get commitIndex(): number {
    return this.log.committed;
  }

  get lastIndex(): number {
    return this.log.lastIndex();
  }

  get isLearner(): boolean {
    return this.conf.learners.includes(this.id);
  }

  /** The configuration in force (including an uncommitted change). */
  get confState(): ConfState {
    return cloneConfState(this.conf);
  }

  /**
   * Set when the recovered commit index was beyond the last recovered entry: the log lost its
   * tail (a torn write that was never fsynced). The node commits what it holds and the leader
   * sends the rest again; the shell should say so.
   */
  get recoveredLostTail(): { committed: number; lastIndex: number } | null {
    return this.log.lostTail;
  }

  get status(): RaftStatus {
    return {
      id: this.id,
      term: this.termValue,
      role: this.roleValue,
      leader: this.leaderId,
      commitIndex: this.log.committed,
      applied: this.log.applied,
      voters: [...this.conf.voters],
      learners: [...this.conf.learners],
      lastIndex: this.log.lastIndex(),
      snapshotIndex: this.log.snapshot.index,
      transferee: this.leadTransferee,
    };
  }

  /** The entry at `index`, if still in the log (not compacted). */
  entryAt(index: number): Entry | undefined {
    return this.log.entry(index);
  }

  /** Term of the entry at `index` (snapshot index included), if known. */
  termAt(index: number): number | undefined {
    return this.log.term(index);
  }

  /** The entries after the latest snapshot. */
  entries(): readonly Entry[] {
    return this.log.allEntries();
  }

  /** The latest snapshot (index 0 when none). */
  get snapshot(): Snapshot {
    return this.log.snapshot;
  }

  /** Leader only: the replication state of a member, for status pages and tests. */
  progressOf(id: NodeId): { match: number; next: number; state: string } | null {
    const pr = this.progress.get(id);
    return pr === undefined ? null : { match: pr.match, next: pr.next, state: pr.state };
  }

  // ---------------------------------------------------------------------------------------------
  // Inputs

  /** Advance the logical clock by one tick. */
  tick(): void {
    this.nowTick++;
    if (this.roleValue === 'leader') this.tickHeartbeat();
    else this.tickElection();
  }

  /**
   * Feed one message from a peer. It must have been validated (decodeRaftMessage does); messages
   * addressed to another peer or from ourselves are ignored.
   */
  step(m: RaftMessage): void {
    if (m.to !== this.id || m.from === this.id) return;
    if (m.term > this.termValue) {
      if (m.type === 'vote') {
        const inLease =
          this.config.checkQuorum && this.leaderId !== null && this.electionElapsedTicks < this.config.electionTicks;
        if (inLease && !m.transfer) return; // we hear from a live leader: ignore the disruption
      }
      if (m.type === 'vote' && m.pre) {
        // A pre-vote request never changes our term.
      } else if (m.type === 'vote-response' && m.pre && m.granted) {
        // A granted pre-vote carries the term we would campaign in; it is counted below.
      } else if (m.type === 'append' || m.type === 'heartbeat' || m.type === 'snapshot') {
        this.becomeFollower(m.term, m.from);
      } else {
        this.becomeFollower(m.term, null);
      }
    } else if (m.term < this.termValue) {
      if (m.type === 'append' || m.type === 'heartbeat') {
        // A stale leader (or we advanced our term while cut off): tell it our term so it steps
        // down. etcd answers only with check-quorum or pre-vote on; we always do, because a
        // removed leader without check-quorum otherwise never learns it is stale and accepts
        // proposals forever (found by the simulation, seed 22978).
        this.send({ type: 'append-response', to: m.from, term: this.termValue, index: 0, reject: true, hintIndex: 0, hintTerm: 0 });
      } else if (m.type === 'vote') {
        // Reject with our term (§5.1): a candidate behind in terms catches up at once. Without
        // this, a peer with a stale configuration that keeps campaigning (and so raising its
        // term) could ignore a real candidate forever (found by the simulation, seed 113).
        this.send({ type: 'vote-response', to: m.from, term: this.termValue, pre: m.pre, granted: false });
      }
      return;
    }

    if (m.type === 'vote') {
      this.handleVoteRequest(m);
      return;
    }
    switch (this.roleValue) {
      case 'leader':
        this.stepLeader(m);
        break;
      case 'candidate':
      case 'pre-candidate':
        this.stepCandidate(m);
        break;
      case 'follower':
        this.stepFollower(m);
        break;
    }
  }

  /**
   * Start an election now instead of waiting for the election timeout (with a pre-vote round
   * when enabled). Does nothing on a leader or on a peer that is not a voter. For tests and for
   * an operator forcing an election; it is still subject to the other peers' leader lease.
   */
  campaign(): void {
    if (this.roleValue === 'leader') return;
    this.electionElapsedTicks = 0;
    this.startCampaign(this.config.preVote ? 'pre-vote' : 'election');
  }

  /**
   * Append `data` as a normal entry. Throws NotLeaderError (with a leader hint) on a non-leader,
   * ProposalDroppedError when the leader refuses it now. Committed means: it will appear in
   * `Ready.committed` on every member; the index and term identify it (a different entry
   * committed at that index means this one was lost with a leader change).
   */
  propose(data: Uint8Array): { index: number; term: number } {
    this.checkCanPropose();
    if (data.byteLength > this.config.maxEntryBytes) {
      throw new ProposalDroppedError('entry-too-large', `${data.byteLength} > ${this.config.maxEntryBytes} bytes`);
    }
    return this.appendEntry('normal', data);
  }

  /** Propose a single-server membership change (one pending at a time). Throws like `propose`. */
  proposeConfChange(cc: ConfChange): { index: number; term: number } {
    this.checkCanPropose();
    if (this.pendingConfIndex > this.log.committed) {
      throw new ProposalDroppedError('conf-change-pending', `index ${this.pendingConfIndex} not committed`);
    }
    const problem = checkConfChange(this.conf, cc);
    if (problem !== null) throw new ProposalDroppedError('invalid-conf-change', problem);
    const result = this.appendEntry('conf-change', encodeConfChange(cc));
    this.pendingConfIndex = result.index;
    return result;
  }

  /**
   * Hand leadership to voter `to`: stop accepting proposals, bring `to` up to date, then tell it
   * to campaign at once. Gives up after one election timeout. Throws NotLeaderError on a
   * non-leader and TransferError when `to` is not another voter.
   */
  transferLeadership(to: NodeId): void {
    if (this.roleValue !== 'leader') throw new NotLeaderError(this.leaderId);
    if (to === this.id) return;
    if (!this.conf.voters.includes(to)) throw new TransferError(`${to} is not a voter`);
    if (this.leadTransferee === to) return;
    this.leadTransferee = to;
    this.electionElapsedTicks = 0; // the transfer must finish within one election timeout
    const pr = this.progress.get(to)!;
    if (pr.match === this.log.lastIndex()) this.sendTimeoutNow(to);
    else this.sendAppend(to);
  }

  /**
   * Replace the log up to `index` (≤ applied) by the application's snapshot `data` of its state
   * after applying `index`. The caller persists the returned snapshot itself, and only then may
   * delete stored entries ≤ index. Throws CompactionError when `index` is not applied yet or is
   * already compacted.
   */
  compact(index: number, data: Uint8Array): Snapshot {
    if (!Number.isInteger(index) || index <= this.log.snapshot.index || index > this.log.applied) {
      throw new CompactionError(`cannot compact at ${index}: snapshot ${this.log.snapshot.index}, applied ${this.log.applied}`);
    }
    return this.log.compact(index, data, this.confAt(index));
  }

  /** The shell could not deliver the snapshot it was asked to send to `to`: retry from probing. */
  reportSnapshotFailure(to: NodeId): void {
    const pr = this.progress.get(to);
    if (this.roleValue !== 'leader' || pr === undefined || pr.state !== 'snapshot') return;
    pr.pendingSnapshot = 0;
    pr.becomeProbe();
  }

  /** The shell could not reach `to`: stop streaming to it optimistically. */
  reportUnreachable(to: NodeId): void {
    const pr = this.progress.get(to);
    if (this.roleValue === 'leader' && pr !== undefined && pr.state === 'replicate') pr.becomeProbe();
  }

  // ---------------------------------------------------------------------------------------------
  // Ready / advance

  hasReady(): boolean {
    if (this.outstandingReady !== null) return false;
    if (this.outbox.length > 0 || this.log.pendingSnapshot !== null) return true;
    if (this.log.unstableFrom <= this.log.lastIndex() || this.log.hasNextCommitted()) return true;
    const hs = this.prevHardState;
    if (hs.term !== this.termValue || hs.vote !== this.vote || hs.commit !== this.log.committed) return true;
    const ss = this.prevSoftState;
    return ss.leader !== this.leaderId || ss.role !== this.roleValue;
  }

  /** What to persist, send and apply now; null when nothing. Call `advance` before the next one. */
  ready(): Ready | null {
    assertRaft(this.outstandingReady === null, 'ready() called again before advance()');
    if (!this.hasReady()) return null;
    const rd: Ready = {
      entries: this.log.unstableEntries(),
      messages: this.outbox,
      committed: this.log.nextCommitted(MAX_COMMITTED_PER_READY),
    };
    this.outbox = [];
    const ss = this.prevSoftState;
    if (ss.leader !== this.leaderId || ss.role !== this.roleValue) {
      rd.softState = { leader: this.leaderId, role: this.roleValue };
      this.prevSoftState = rd.softState;
    }
    const hs = this.prevHardState;
    if (hs.term !== this.termValue || hs.vote !== this.vote || hs.commit !== this.log.committed) {
      rd.hardState = this.hardState();
      this.prevHardState = rd.hardState;
    }
    if (this.log.pendingSnapshot !== null) {
      rd.snapshot = this.log.pendingSnapshot;
      this.log.pendingSnapshot = null;
    }
    this.log.unstableFrom = this.log.lastIndex() + 1;
    if (rd.committed.length > 0) this.log.applying = rd.committed[rd.committed.length - 1]!.index;
    this.outstandingReady = rd;
    return rd;
  }

  /** The shell persisted, sent and applied everything in `rd` (the last `ready()` result). */
  advance(rd: Ready): void {
    assertRaft(rd === this.outstandingReady, 'advance() with a Ready that is not the outstanding one');
    this.outstandingReady = null;
    if (rd.snapshot !== undefined) this.log.applied = Math.max(this.log.applied, rd.snapshot.index);
    if (rd.committed.length > 0) {
      this.log.applied = Math.max(this.log.applied, rd.committed[rd.committed.length - 1]!.index);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Role transitions

  private reset(term: number): void {
    if (this.termValue !== term) {
      this.termValue = term;
      this.vote = null;
    }
    this.leaderId = null;
    this.electionElapsedTicks = 0;
    this.heartbeatElapsedTicks = 0;
    this.randomizedElectionTicks = this.config.electionTicks + this.random.int(0, this.config.electionTicks - 1);
    this.votes.clear();
    this.progress.clear();
    this.leadTransferee = null;
    this.pendingConfIndex = 0;
  }

  private becomeFollower(term: number, leader: NodeId | null): void {
    this.reset(term);
    this.roleValue = 'follower';
    this.leaderId = leader;
  }

  private becomePreCandidate(): void {
    // Changes neither term nor vote: a failed pre-vote leaves no trace.
    this.roleValue = 'pre-candidate';
    this.leaderId = null;
    this.votes.clear();
    this.progress.clear();
  }

  private becomeCandidate(): void {
    this.reset(this.termValue + 1);
    this.vote = this.id;
    this.roleValue = 'candidate';
  }

  private becomeLeader(): void {
    this.reset(this.termValue);
    this.roleValue = 'leader';
    this.leaderId = this.id;
    const next = this.log.lastIndex() + 1;
    for (const member of this.members()) {
      if (member === this.id) continue;
      // Every follower gets one election timeout from now to answer before check-quorum counts it out.
      this.progress.set(member, new Progress(next, this.config.maxInflightAppends, this.conf.learners.includes(member), this.nowTick));
    }
    // An empty entry of our own term: committing it commits everything before (§5.4.2), and no
    // conf change is accepted before it is committed (dissertation §4.1 correction).
    const noop = this.appendEntry('normal', EMPTY);
    this.pendingConfIndex = noop.index;
  }

  // ---------------------------------------------------------------------------------------------
  // Clock

  private tickElection(): void {
    this.electionElapsedTicks++;
    if (this.isPromotable() && this.electionElapsedTicks >= this.randomizedElectionTicks) {
      this.electionElapsedTicks = 0;
      this.startCampaign(this.config.preVote ? 'pre-vote' : 'election');
    }
  }

  private tickHeartbeat(): void {
    this.heartbeatElapsedTicks++;
    this.electionElapsedTicks++;
    if (this.config.checkQuorum && !this.hasHeardFromQuorum()) {
      this.becomeFollower(this.termValue, null);
      return;
    }
    if (this.electionElapsedTicks >= this.config.electionTicks) {
      this.electionElapsedTicks = 0;
      this.leadTransferee = null; // a transfer that did not finish within an election timeout
    }
    for (const [id, pr] of this.progress) {
      if (pr.state !== 'snapshot') continue;
      pr.snapshotElapsedTicks++;
      if (pr.snapshotElapsedTicks >= this.config.snapshotRetryTicks) {
        pr.pendingSnapshot = 0;
        pr.becomeProbe();
        this.sendAppend(id);
      }
    }
    if (this.heartbeatElapsedTicks >= this.config.heartbeatTicks) {
      this.heartbeatElapsedTicks = 0;
      this.broadcastHeartbeat();
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Elections

  /**
   * A voter, and not refilling a lost log tail: a peer whose log lost entries it had
   * acknowledged (recoveredLostTail) may be one of the majority that held a committed entry, so
   * it neither campaigns nor grants votes until it has committed past that point again.
   */
  private isPromotable(): boolean {
    return this.conf.voters.includes(this.id) && !this.refillingLostTail();
  }

  private refillingLostTail(): boolean {
    const lost = this.log.lostTail;
    return lost !== null && this.log.committed < lost.committed;
  }

  private startCampaign(kind: CampaignKind): void {
    if (!this.isPromotable()) return;
    let voteTerm: number;
    if (kind === 'pre-vote') {
      this.becomePreCandidate();
      voteTerm = this.termValue + 1;
    } else {
      this.becomeCandidate();
      voteTerm = this.termValue;
    }
    if (this.recordVote(this.id, true) === 'won') {
      // A single voter: win at once.
      if (kind === 'pre-vote') this.startCampaign('election');
      else this.becomeLeader();
      return;
    }
    const lastIndex = this.log.lastIndex();
    const lastTerm = this.log.lastTerm();
    for (const voter of this.conf.voters) {
      if (voter === this.id) continue;
      this.send({ type: 'vote', to: voter, term: voteTerm, pre: kind === 'pre-vote', lastIndex, lastTerm, transfer: kind === 'transfer' });
    }
  }

  private recordVote(from: NodeId, granted: boolean): 'won' | 'lost' | 'pending' {
    if (!this.votes.has(from)) this.votes.set(from, granted);
    let yes = 0;
    let no = 0;
    for (const voter of this.conf.voters) {
      const v = this.votes.get(voter);
      if (v === true) yes++;
      else if (v === false) no++;
    }
    const quorum = Math.floor(this.conf.voters.length / 2) + 1;
    if (yes >= quorum) return 'won';
    if (no > this.conf.voters.length - quorum) return 'lost';
    return 'pending';
  }

  private handleVoteRequest(m: VoteMessage): void {
    // Same term, or a higher term after the checks in step (pre-votes leave our term alone).
    const canVote =
      this.vote === m.from || (this.vote === null && this.leaderId === null) || (m.pre && m.term > this.termValue);
    if (canVote && !this.refillingLostTail() && this.log.isUpToDate(m.lastIndex, m.lastTerm)) {
      this.send({ type: 'vote-response', to: m.from, term: m.term, pre: m.pre, granted: true });
      if (!m.pre) {
        this.electionElapsedTicks = 0;
        this.vote = m.from;
      }
    } else {
      this.send({ type: 'vote-response', to: m.from, term: this.termValue, pre: m.pre, granted: false });
    }
  }

  private stepCandidate(m: RaftMessage): void {
    switch (m.type) {
      case 'append':
      case 'heartbeat':
      case 'snapshot':
        // A leader of our term exists.
        this.becomeFollower(m.term, m.from);
        this.stepFollower(m);
        return;
      case 'vote-response':
        this.handleVoteResponse(m);
        return;
      default:
        return;
    }
  }

  private handleVoteResponse(m: VoteResponseMessage): void {
    const pre = this.roleValue === 'pre-candidate';
    if (m.pre !== pre) return; // an answer to a campaign we are no longer in
    if (pre && m.granted && m.term !== this.termValue + 1) return; // granted in an older pre-vote round
    const result = this.recordVote(m.from, m.granted);
    if (result === 'won') {
      if (pre) this.startCampaign('election');
      else this.becomeLeader();
    } else if (result === 'lost') {
      this.becomeFollower(this.termValue, null);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Follower

  private stepFollower(m: RaftMessage): void {
    switch (m.type) {
      case 'append':
        this.electionElapsedTicks = 0;
        this.leaderId = m.from;
        this.handleAppend(m);
        return;
      case 'heartbeat':
        this.electionElapsedTicks = 0;
        this.leaderId = m.from;
        this.handleHeartbeat(m);
        return;
      case 'snapshot':
        this.electionElapsedTicks = 0;
        this.leaderId = m.from;
        this.handleSnapshot(m);
        return;
      case 'timeout-now':
        // Leadership transfer: campaign now, skipping pre-vote and the leader lease.
        if (this.isPromotable()) this.startCampaign('transfer');
        return;
      default:
        return;
    }
  }

  private handleAppend(m: AppendMessage): void {
    if (m.prevIndex < this.log.committed) {
      this.send({ type: 'append-response', to: m.from, term: this.termValue, index: this.log.committed, reject: false, hintIndex: 0, hintTerm: 0 });
      return;
    }
    const result = this.log.maybeAppend(m.prevIndex, m.prevTerm, m.entries);
    if (result === null) {
      const hint = this.log.findConflictByTerm(Math.min(m.prevIndex, this.log.lastIndex()), m.prevTerm);
      this.send({ type: 'append-response', to: m.from, term: this.termValue, index: m.prevIndex, reject: true, hintIndex: hint.index, hintTerm: hint.term });
      return;
    }
    if (result.truncatedFrom !== null) this.recomputeConf();
    else this.applyAppendedConfChanges(m.entries);
    this.log.commitTo(Math.min(m.commit, result.lastNewIndex));
    this.send({ type: 'append-response', to: m.from, term: this.termValue, index: result.lastNewIndex, reject: false, hintIndex: 0, hintTerm: 0 });
  }

  private handleHeartbeat(m: HeartbeatMessage): void {
    // The leader sends min(our match, its commit), so this never passes our matching prefix,
    // unless we lost the tail of our log since we acknowledged it (a torn, unsynced write):
    // then commit what we hold; the leader learns from our next rejection and resends.
    this.log.commitTo(Math.min(m.commit, this.log.lastIndex()));
    this.send({ type: 'heartbeat-response', to: m.from, term: this.termValue });
  }

  private handleSnapshot(m: SnapshotMessage): void {
    const s = m.snapshot;
    if (s.index > this.log.committed) {
      if (this.log.matchTerm(s.index, s.term)) {
        // We already have the snapshot's last entry: only the commit index moves.
        this.log.commitTo(s.index);
      } else {
        this.log.restore(s);
        this.conf = normalizeConfState(s.config);
        this.confIndex = s.index;
      }
    }
    this.send({ type: 'append-response', to: m.from, term: this.termValue, index: this.log.committed, reject: false, hintIndex: 0, hintTerm: 0 });
  }

  // ---------------------------------------------------------------------------------------------
  // Leader

  private stepLeader(m: RaftMessage): void {
    const pr = this.progress.get(m.from);
    if (pr === undefined) return; // not a member (any more)
    switch (m.type) {
      case 'append-response':
        pr.lastActiveTick = this.nowTick;
        this.handleAppendResponse(m, pr);
        break;
      case 'heartbeat-response':
        pr.lastActiveTick = this.nowTick;
        pr.probeSent = false;
        // A full window with a lost append would stall: free a slot to make progress.
        if (pr.state === 'replicate' && pr.inflights.full()) pr.inflights.freeFirstOne();
        if (pr.match < this.log.lastIndex()) this.sendAppend(m.from);
        break;
      default:
        return;
    }
    this.maybeStepDownRemoved();
  }

  private handleAppendResponse(m: AppendResponseMessage, pr: Progress): void {
    if (m.reject) {
      let hintIndex = m.hintIndex;
      if (m.hintTerm > 0) hintIndex = this.log.findConflictByTerm(m.hintIndex, m.hintTerm).index;
      if (pr.maybeDecrTo(m.index, hintIndex)) {
        if (pr.state === 'replicate') pr.becomeProbe();
        this.sendAppend(m.from);
      }
      return;
    }
    if (m.index > this.log.lastIndex()) return; // cannot be: a follower only holds our entries
    const wasPaused = pr.isPaused();
    if (!pr.maybeUpdate(m.index)) return;
    if (pr.state === 'probe') {
      pr.becomeReplicate();
    } else if (pr.state === 'snapshot' && pr.match + 1 >= this.log.firstIndex()) {
      pr.becomeProbe();
      pr.becomeReplicate();
    } else if (pr.state === 'replicate') {
      pr.inflights.freeLE(m.index);
    }
    if (this.maybeCommit()) {
      this.broadcastAppend();
    } else if (wasPaused) {
      this.sendAppend(m.from);
    }
    // Stream what is left, within the window.
    for (let k = 0; k < this.config.maxInflightAppends && this.sendAppend(m.from, false); k++);
    if (m.from === this.leadTransferee && pr.match === this.log.lastIndex()) this.sendTimeoutNow(m.from);
  }

  /** Commit the highest index a quorum of voters holds, if it is of our term (§5.4.2). */
  private maybeCommit(): boolean {
    const voters = this.conf.voters;
    if (voters.length === 0) return false;
    const matches = voters.map((v) => (v === this.id ? this.log.lastIndex() : (this.progress.get(v)?.match ?? 0)));
    matches.sort((a, b) => b - a);
    const quorumIndex = matches[Math.floor(voters.length / 2)]!;
    if (quorumIndex > this.log.committed && this.log.term(quorumIndex) === this.termValue) {
      this.log.commitTo(quorumIndex);
      return true;
    }
    return false;
  }

  /** A leader that removed itself leads until the removal commits, then steps down. */
  private maybeStepDownRemoved(): void {
    if (this.roleValue === 'leader' && !this.conf.voters.includes(this.id) && this.log.committed >= this.confIndex) {
      this.becomeFollower(this.termValue, null);
    }
  }

  /** Check-quorum: a quorum of voters (us included) answered within the last election timeout. */
  private hasHeardFromQuorum(): boolean {
    const voters = this.conf.voters;
    if (voters.length === 0) return true;
    const ages = voters.map((v) => {
      if (v === this.id) return 0;
      const pr = this.progress.get(v);
      return pr === undefined ? Infinity : this.nowTick - pr.lastActiveTick;
    });
    ages.sort((a, b) => a - b);
    return ages[Math.floor(voters.length / 2)]! < this.config.electionTicks;
  }

  private checkCanPropose(): void {
    if (this.roleValue !== 'leader') throw new NotLeaderError(this.leaderId);
    if (this.leadTransferee !== null) throw new ProposalDroppedError('transferring', `to ${this.leadTransferee}`);
    if (!this.conf.voters.includes(this.id)) throw new ProposalDroppedError('leader-removed');
    if (this.log.lastIndex() - this.log.committed >= this.config.maxUncommittedEntries) {
      throw new ProposalDroppedError('too-many-uncommitted', `${this.log.lastIndex() - this.log.committed} entries`);
    }
  }

  private appendEntry(type: EntryType, data: Uint8Array): { index: number; term: number } {
    const entry: Entry = { index: this.log.lastIndex() + 1, term: this.termValue, type, data };
    this.log.append([entry]);
    if (type === 'conf-change') this.applyAppendedConfChanges([entry]);
    if (this.maybeCommit()) this.maybeStepDownRemoved();
    if (this.roleValue === 'leader') this.broadcastAppend();
    return { index: entry.index, term: entry.term };
  }

  private broadcastAppend(): void {
    for (const id of this.progress.keys()) this.sendAppend(id);
  }

  private broadcastHeartbeat(): void {
    for (const [id, pr] of this.progress) {
      this.send({ type: 'heartbeat', to: id, term: this.termValue, commit: Math.min(pr.match, this.log.committed) });
    }
  }

  /**
   * Send `to` the entries it needs (or our snapshot when they are compacted). With
   * `sendIfEmpty` an empty append still goes out (it carries the commit index and reveals gaps).
   * Returns whether a message was sent.
   */
  private sendAppend(to: NodeId, sendIfEmpty = true): boolean {
    const pr = this.progress.get(to);
    if (pr === undefined || pr.isPaused()) return false;
    const prevIndex = pr.next - 1;
    const prevTerm = this.log.term(prevIndex);
    if (prevTerm === undefined) {
      this.sendSnapshot(to, pr);
      return true;
    }
    const entries = this.entriesToSend(pr.next);
    if (entries.length === 0 && !sendIfEmpty) return false;
    this.send({ type: 'append', to, term: this.termValue, prevIndex, prevTerm, entries, commit: this.log.committed });
    pr.sentEntries(prevIndex + entries.length, entries.length);
    return true;
  }

  private entriesToSend(from: number): Entry[] {
    const last = this.log.lastIndex();
    if (from > last) return [];
    const entries = this.log.slice(from, last + 1, this.config.maxEntriesPerAppend);
    let bytes = 0;
    for (let k = 0; k < entries.length; k++) {
      bytes += entries[k]!.data.byteLength;
      if (bytes > this.config.maxAppendBytes && k > 0) return entries.slice(0, k);
    }
    return entries;
  }

  private sendSnapshot(to: NodeId, pr: Progress): void {
    const snapshot = this.log.snapshot;
    pr.becomeSnapshot(snapshot.index);
    this.send({ type: 'snapshot', to, term: this.termValue, snapshot });
  }

  private sendTimeoutNow(to: NodeId): void {
    this.send({ type: 'timeout-now', to, term: this.termValue });
  }

  // ---------------------------------------------------------------------------------------------
  // Configuration

  private members(): NodeId[] {
    return [...this.conf.voters, ...this.conf.learners];
  }

  /** The configuration in force at `index` (snapshot index ≤ index ≤ last index). */
  private confAt(index: number): ConfState {
    let conf = normalizeConfState(this.log.snapshot.config);
    for (const e of this.log.allEntries()) {
      if (e.index > index) break;
      if (e.type === 'conf-change') conf = applyConfChange(conf, decodeConfChange(e.data));
    }
    return conf;
  }

  /** After a truncation (or at start): the configuration of the whole log. */
  private recomputeConf(): void {
    this.conf = normalizeConfState(this.log.snapshot.config);
    this.confIndex = this.log.snapshot.index;
    this.applyAppendedConfChanges(this.log.allEntries());
  }

  private applyAppendedConfChanges(entries: readonly Entry[]): void {
    let changed = false;
    for (const e of entries) {
      if (e.type !== 'conf-change' || e.index <= this.confIndex) continue;
      this.conf = applyConfChange(this.conf, decodeConfChange(e.data));
      this.confIndex = e.index;
      changed = true;
    }
    if (changed && this.roleValue === 'leader') this.syncProgressWithConf();
  }

  /** Leader: progress for new members, none for removed ones; abort a transfer to a removed one. */
  private syncProgressWithConf(): void {
    const members = new Set(this.members());
    for (const id of [...this.progress.keys()]) {
      if (!members.has(id)) this.progress.delete(id);
    }
    for (const id of members) {
      if (id === this.id) continue;
      const isLearner = this.conf.learners.includes(id);
      const pr = this.progress.get(id);
      if (pr !== undefined) {
        pr.isLearner = isLearner;
        continue;
      }
      // Stamped now: a member that had no chance to answer yet is not counted as dead.
      this.progress.set(id, new Progress(this.log.lastIndex(), this.config.maxInflightAppends, isLearner, this.nowTick));
    }
    if (this.leadTransferee !== null && !this.conf.voters.includes(this.leadTransferee)) this.leadTransferee = null;
  }

  // ---------------------------------------------------------------------------------------------

  private hardState(): HardState {
    return { term: this.termValue, vote: this.vote, commit: this.log.committed };
  }

  private send(m: DistributiveOmit<RaftMessage, 'from'>): void {
    this.outbox.push({ ...m, from: this.id } as RaftMessage);
  }
}

type DistributiveOmit<T, K extends keyof T> = T extends unknown ? Omit<T, K> : never;
