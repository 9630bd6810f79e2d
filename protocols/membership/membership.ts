/**
 * The membership core: a member table (alive, suspect, dead, left, with
 * incarnation numbers), fed by heartbeats, suspicions, verdicts and digests
 * gossiped on one topic, and judged by a phi-accrual detector per member.
 *
 * Pure, in the etcd-raft style: `tick(nowMs)` and `receive(nowMs, from, msg)`
 * go in, a `MembershipOutput` (messages to broadcast, events) comes out. The
 * shell publishes the messages, persists incarnation changes, and calls
 * `tick` every `tickIntervalMs` on a monotonic clock.
 *
 * Merging follows SWIM: a claim (state, incarnation) replaces the row when its
 * incarnation is higher, or equal with a stronger state (alive < suspect <
 * dead < left). Only a member can raise its own incarnation, which is how it
 * refutes a suspicion or comes back after being declared dead.
 *
 * Two refinements keep a lossy link from killing a healthy member: a `dead`
 * record in a digest counts as a suspicion when we still hold the member live
 * (memberlist's push-pull rule), and a suspect that keeps heartbeating at the
 * suspected incarnation is reminded that it is suspected, so it can refute.
 */
import { ConfigError } from '../errors.js';
import { encodedSizeBytes, MAX_DIGEST_MEMBERS, MAX_MESSAGE_BYTES } from './codec.js';
import { validateMembershipConfig, type MembershipConfig } from './config.js';
import { PhiAccrualDetector } from './phi-accrual.js';
import type {
  DigestMessage,
  HeartbeatMessage,
  LoadSample,
  MemberRecord,
  MemberState,
  MemberView,
  MembershipMessage,
  MembershipOutput,
} from './types.js';

export interface MembershipOptions {
  /** Our peer id (the gossipsub signer of what we publish). */
  selfId: string;
  /** Our listen addresses, as multiaddr strings. */
  addrs: string[];
  /** Our incarnation as persisted by the shell (0 for a brand-new peer). */
  incarnation: number;
  /** Monotonic clock reading at construction. */
  nowMs: number;
  config?: Partial<MembershipConfig>;
  load?: LoadSample;
}

/** A state claim about a member, as carried by messages and digests. */
export interface StateClaim {
  state: MemberState;
  incarnation: number;
}

const STATE_RANK: Record<MemberState, number> = { alive: 0, suspect: 1, dead: 2, left: 3 };

/**
 * SWIM precedence: does `claim` replace `current`? A higher incarnation wins
 * whatever the states; at equal incarnation only a stronger state wins
 * (alive < suspect < dead < left), so a tie keeps what we have.
 */
export function outranks(claim: StateClaim, current: StateClaim): boolean {
  if (claim.incarnation !== current.incarnation) return claim.incarnation > current.incarnation;
  return STATE_RANK[claim.state] > STATE_RANK[current.state];
}

/** Whether a suspicion started here (phi crossed locally) or arrived as gossip. */
type SuspicionOrigin = 'local' | 'gossip';

interface MemberRow {
  readonly peerId: string;
  state: MemberState;
  incarnation: number;
  addrs: string[];
  load: LoadSample | null;
  detector: PhiAccrualDetector;
  /** When the last real heartbeat arrived; null if none has. */
  lastHeartbeatMs: number | null;
  /** When the row last changed state or incarnation: the suspicion timer and the reaping clock. */
  stateSinceMs: number;
  /** Set while suspect. */
  suspectedBy: SuspicionOrigin | null;
  /** When we last repeated the suspicion to a suspect that kept heartbeating (see remindSuspect). */
  lastRemindedMs: number | null;
}

const ZERO_LOAD: LoadSample = { eventLoopDelayMs: 0, rssBytes: 0, cpuPercent: 0 };

function emptyOutput(): MembershipOutput {
  return { broadcast: [], events: [] };
}

function isLive(state: MemberState): boolean {
  return state === 'alive' || state === 'suspect';
}

function copyLoad(load: LoadSample): LoadSample {
  return { eventLoopDelayMs: load.eventLoopDelayMs, rssBytes: load.rssBytes, cpuPercent: load.cpuPercent };
}

export class Membership {
  /** The validated configuration in force. */
  readonly config: MembershipConfig;
  private readonly self: string;
  private selfState: MemberState = 'alive';
  private selfIncarnation: number;
  private selfAddrs: string[];
  private selfLoad: LoadSample;
  /** Every member but self, at most `maxMembers - 1`. */
  private readonly rows = new Map<string, MemberRow>();
  private lastTickMs: number;
  private lastHeartbeatSentMs: number | null = null;
  private lastDigestSentMs: number;

  constructor(opts: MembershipOptions) {
    if (typeof opts.selfId !== 'string' || opts.selfId.length === 0) {
      throw new ConfigError('selfId', 'must be a non-empty string');
    }
    if (!Number.isSafeInteger(opts.incarnation) || opts.incarnation < 0) {
      throw new ConfigError('incarnation', `must be a non-negative safe integer (got ${opts.incarnation})`);
    }
    if (!Number.isFinite(opts.nowMs)) throw new ConfigError('nowMs', 'must be a finite number');
    this.config = validateMembershipConfig(opts.config ?? {});
    this.self = opts.selfId;
    this.selfIncarnation = opts.incarnation;
    this.selfAddrs = this.boundAddrs(opts.addrs);
    this.selfLoad = copyLoad(opts.load ?? ZERO_LOAD);
    this.lastTickMs = opts.nowMs;
    this.lastDigestSentMs = opts.nowMs;
  }

  /** Our peer id. */
  get selfId(): string {
    return this.self;
  }

  /** Our current incarnation; it rises when we refute a claim about us. */
  get incarnation(): number {
    return this.selfIncarnation;
  }

  /** Replace our advertised addresses (sent with the next heartbeat). */
  setAddrs(addrs: string[]): void {
    this.selfAddrs = this.boundAddrs(addrs);
  }

  /** Replace our load sample (sent with the next heartbeat). */
  setLoad(load: LoadSample): void {
    this.selfLoad = copyLoad(load);
  }

  /**
   * Advance time: guard against our own stalls, send a heartbeat and a digest
   * when due, suspect silent members, convict long suspects, forget old
   * tombstones. Call every `tickIntervalMs`. After `leave` it only forgets
   * tombstones: a peer on its way out sends nothing and judges nobody.
   */
  tick(nowMs: number): MembershipOutput {
    const out = emptyOutput();
    const paused = this.detectOwnPause(nowMs, out);
    this.lastTickMs = nowMs;
    if (this.selfState !== 'left') {
      if (paused || this.isHeartbeatDue(nowMs)) this.broadcastHeartbeat(nowMs, out);
      if (nowMs - this.lastDigestSentMs >= this.config.digestIntervalMs) this.broadcastDigest(nowMs, out);
      if (!paused) {
        this.convictSuspects(nowMs, out);
        this.suspectSilentMembers(nowMs, out);
      }
    }
    this.reapTombstones(nowMs);
    return out;
  }

  /**
   * Merge a message. `from` is the authenticated sender; a message that claims
   * another origin is refused (`rejected` set, nothing changed). Our own
   * messages echoed back are ignored. `rejected` is also set when the table was
   * too full for a new peer (for a digest: the records that fit were merged).
   */
  receive(nowMs: number, from: string, msg: MembershipMessage): MembershipOutput {
    const out = emptyOutput();
    const forgery = this.findForgery(from, msg);
    if (forgery !== null) {
      out.rejected = forgery;
      return out;
    }
    if (from === this.self) return out;
    switch (msg.kind) {
      case 'heartbeat':
        this.receiveHeartbeat(nowMs, msg, out);
        break;
      case 'suspect':
      case 'dead':
        // Another observer's verdict is never adopted as ours (DESIGN §4a): a `dead` claim counts
        // as a suspicion, which the member refutes if it lives; our own detector convicts.
        this.receiveClaim(nowMs, { peerId: msg.peerId, state: 'suspect', incarnation: msg.incarnation, addrs: [] }, out);
        break;
      case 'left':
        this.receiveClaim(nowMs, { peerId: msg.peerId, state: 'left', incarnation: msg.incarnation, addrs: [] }, out);
        break;
      case 'digest':
        this.receiveDigest(nowMs, msg, out);
        break;
    }
    return out;
  }

  /**
   * Leave gracefully: announce `left` and stop heartbeating. Idempotent.
   * `nowMs` is taken for symmetry with `tick` and `receive`; nothing is timed from it.
   */
  leave(nowMs: number): MembershipOutput {
    void nowMs;
    const out = emptyOutput();
    if (this.selfState === 'left') return out;
    out.events.push({ type: 'member-state', peerId: this.self, from: this.selfState, to: 'left', incarnation: this.selfIncarnation });
    this.selfState = 'left';
    out.broadcast.push({ kind: 'left', peerId: this.self, incarnation: this.selfIncarnation });
    return out;
  }

  /** Every row, self included, sorted by peer id. */
  members(nowMs: number): MemberView[] {
    const views = [this.viewOfSelf()];
    for (const row of this.rows.values()) views.push(this.viewOf(row, nowMs));
    return views.sort((a, b) => (a.peerId < b.peerId ? -1 : a.peerId > b.peerId ? 1 : 0));
  }

  /** One row, or undefined when we do not know the peer. */
  member(peerId: string, nowMs: number): MemberView | undefined {
    if (peerId === this.self) return this.viewOfSelf();
    const row = this.rows.get(peerId);
    return row === undefined ? undefined : this.viewOf(row, nowMs);
  }

  /** Known addresses of a peer (a copy), or undefined when we do not know it. */
  addrsOf(peerId: string): string[] | undefined {
    if (peerId === this.self) return [...this.selfAddrs];
    const row = this.rows.get(peerId);
    return row === undefined ? undefined : [...row.addrs];
  }

  // ---- tick --------------------------------------------------------------

  /**
   * If this tick is later than the acceptable pause allows, our own process
   * stalled: the silence we measured is ours, not the members'. Restart every
   * detector's clock and suspicion timer at now and convict nobody this tick.
   */
  private detectOwnPause(nowMs: number, out: MembershipOutput): boolean {
    const sinceLastTickMs = nowMs - this.lastTickMs;
    if (sinceLastTickMs <= this.config.tickIntervalMs + this.config.acceptableHeartbeatPauseMs) return false;
    out.events.push({ type: 'own-pause', lateByMs: sinceLastTickMs - this.config.tickIntervalMs });
    for (const row of this.rows.values()) {
      if (!isLive(row.state)) continue;
      row.detector.resetClock(nowMs);
      if (row.state === 'suspect') row.stateSinceMs = nowMs;
    }
    return true;
  }

  private isHeartbeatDue(nowMs: number): boolean {
    return this.lastHeartbeatSentMs === null || nowMs - this.lastHeartbeatSentMs >= this.config.heartbeatIntervalMs;
  }

  private broadcastHeartbeat(nowMs: number, out: MembershipOutput): void {
    this.lastHeartbeatSentMs = nowMs;
    const heartbeat: HeartbeatMessage = {
      kind: 'heartbeat',
      peerId: this.self,
      incarnation: this.selfIncarnation,
      addrs: [...this.selfAddrs],
      load: copyLoad(this.selfLoad),
    };
    out.broadcast.push(heartbeat);
  }

  /** The whole table, split into as many messages as the codec's size and count limits need. */
  private broadcastDigest(nowMs: number, out: MembershipOutput): void {
    this.lastDigestSentMs = nowMs;
    for (const members of this.digestChunks()) out.broadcast.push({ kind: 'digest', from: this.self, members });
  }

  private digestChunks(): MemberRecord[][] {
    const envelopeBytes = encodedSizeBytes({ kind: 'digest', from: this.self, members: [] });
    const chunks: MemberRecord[][] = [[]];
    let chunkBytes = envelopeBytes;
    for (const record of this.records()) {
      const recordBytes = encodedSizeBytes(record) + 1; // with its comma
      let chunk = chunks[chunks.length - 1] as MemberRecord[];
      if (chunk.length >= MAX_DIGEST_MEMBERS || chunkBytes + recordBytes > MAX_MESSAGE_BYTES) {
        chunk = [];
        chunks.push(chunk);
        chunkBytes = envelopeBytes;
      }
      chunkBytes += recordBytes;
      chunk.push(record);
    }
    return chunks;
  }

  private *records(): Iterable<MemberRecord> {
    yield { peerId: this.self, state: this.selfState, incarnation: this.selfIncarnation, addrs: [...this.selfAddrs] };
    for (const row of this.rows.values()) {
      yield { peerId: row.peerId, state: row.state, incarnation: row.incarnation, addrs: [...row.addrs] };
    }
  }

  /** Alive members whose phi reached the threshold become suspect, and we say so. */
  private suspectSilentMembers(nowMs: number, out: MembershipOutput): void {
    for (const row of this.rows.values()) {
      if (row.state !== 'alive' || row.detector.phi(nowMs) < this.config.phiThreshold) continue;
      this.markSuspect(row, row.incarnation, 'local', nowMs, out);
      out.broadcast.push({ kind: 'suspect', from: this.self, peerId: row.peerId, incarnation: row.incarnation });
    }
  }

  /**
   * Suspects that stayed suspect for `suspicionTimeoutMs` become dead. One we
   * suspected ourselves must also still be silent here; one suspected by gossip
   * is convicted on the timer (its refutation would have reached us).
   */
  private convictSuspects(nowMs: number, out: MembershipOutput): void {
    for (const row of this.rows.values()) {
      if (row.state !== 'suspect' || nowMs - row.stateSinceMs < this.config.suspicionTimeoutMs) continue;
      if (row.suspectedBy === 'local' && row.detector.phi(nowMs) < this.config.phiThreshold) continue;
      this.markDead(row, row.incarnation, nowMs, out);
      out.broadcast.push({ kind: 'dead', from: this.self, peerId: row.peerId, incarnation: row.incarnation });
    }
  }

  private reapTombstones(nowMs: number): void {
    for (const row of this.rows.values()) {
      if (!isLive(row.state) && nowMs - row.stateSinceMs >= this.config.reapAfterMs) this.rows.delete(row.peerId);
    }
  }

  // ---- receive -----------------------------------------------------------

  /** A reason to refuse the message when its claimed origin is not the authenticated sender. */
  private findForgery(from: string, msg: MembershipMessage): string | null {
    switch (msg.kind) {
      case 'heartbeat':
      case 'left':
        return msg.peerId === from ? null : `${msg.kind}.peerId is not the sender`;
      case 'suspect':
      case 'dead':
      case 'digest':
        return msg.from === from ? null : `${msg.kind}.from is not the sender`;
    }
  }

  private receiveHeartbeat(nowMs: number, msg: HeartbeatMessage, out: MembershipOutput): void {
    const claim: MemberRecord = { peerId: msg.peerId, state: 'alive', incarnation: msg.incarnation, addrs: msg.addrs };
    let row = this.rows.get(msg.peerId);
    if (row === undefined) {
      row = this.admit(claim, nowMs, out);
      if (row === undefined) {
        out.rejected = 'member table full';
        return;
      }
    } else if (outranks(claim, row)) {
      const wasAlive = row.state === 'alive';
      this.markAlive(row, msg.incarnation, nowMs, out);
      if (wasAlive) row.detector.heartbeat(nowMs);
    } else if (msg.incarnation === row.incarnation && isLive(row.state)) {
      row.detector.heartbeat(nowMs);
      if (row.state === 'suspect') this.remindSuspect(row, nowMs, out);
    } else {
      return; // an older incarnation, or one already declared dead or left: stale
    }
    row.lastHeartbeatMs = nowMs;
    row.addrs = this.boundAddrs(msg.addrs);
    row.load = copyLoad(msg.load);
  }

  /**
   * A suspect still heartbeating at the suspected incarnation has not heard
   * that it is suspected (the claim was lost on its way): say it again, at most
   * once per heartbeat interval, so it can refute before the timeout.
   */
  private remindSuspect(row: MemberRow, nowMs: number, out: MembershipOutput): void {
    if (row.lastRemindedMs !== null && nowMs - row.lastRemindedMs < this.config.heartbeatIntervalMs) return;
    row.lastRemindedMs = nowMs;
    out.broadcast.push({ kind: 'suspect', from: this.self, peerId: row.peerId, incarnation: row.incarnation });
  }

  /**
   * A suspect or left claim: about us, refute it; about an unknown peer, ignore it. A claim by
   * another about a member (a suspicion) is taken only at an incarnation we have heard from the
   * member itself: only a member raises its own incarnation, so a higher one is forged, and
   * taking it would make the member's real heartbeats look stale and evict it for good.
   */
  private receiveClaim(nowMs: number, claim: MemberRecord, out: MembershipOutput): void {
    if (claim.peerId === this.self) {
      this.refuteIfNeeded(claim, nowMs, out);
      return;
    }
    const row = this.rows.get(claim.peerId);
    if (row === undefined) return;
    if (claim.state !== 'left' && claim.incarnation > row.incarnation) {
      out.rejected = `${claim.state} claim about ${claim.peerId} at incarnation ${claim.incarnation}, above its own ${row.incarnation}`;
      return;
    }
    this.mergeClaim(row, claim, nowMs, out);
  }

  /**
   * Merge each record as if it came alone, with one softening (memberlist's
   * push-pull rule): a `dead` record about a member we know counts as a
   * suspicion at that incarnation. A digest can carry an old verdict (say from
   * a peer that was partitioned away and judged everyone else dead); as a
   * suspicion it gives the member `suspicionTimeoutMs` to refute before we
   * convict. Digests carry no arrival times, so detectors are not fed.
   */
  private receiveDigest(nowMs: number, msg: DigestMessage, out: MembershipOutput): void {
    let ignored = 0;
    for (const record of msg.members) {
      if (record.peerId === this.self) {
        this.refuteIfNeeded(record, nowMs, out);
        continue;
      }
      const row = this.rows.get(record.peerId);
      if (row === undefined) {
        // The sender's own record is its heartbeat's equal; anyone else's is hearsay: a peer
        // enters the table only by its own (signed) heartbeat, so a digest cannot invent
        // members (a stranger's digest once added 1,000, and some reached the cluster map).
        if (record.peerId !== msg.from) ignored++;
        else if (this.admit(record, nowMs, out) === undefined) out.rejected = 'member table full';
        continue;
      }
      if (record.peerId === msg.from) {
        this.mergeClaim(row, record, nowMs, out);
        continue;
      }
      // About a third member: never above the incarnation the member itself gave us, and a
      // verdict (dead, left) only as a suspicion.
      if (record.incarnation > row.incarnation) {
        ignored++;
        continue;
      }
      const claim: MemberRecord = record.state === 'dead' || record.state === 'left' ? { ...record, state: 'suspect' } : record;
      this.mergeClaim(row, claim, nowMs, out);
    }
    if (ignored > 0) this.counters.digestRecordsIgnored += ignored;
  }

  /** Digest records not merged: unknown peers, or incarnations above what the member said itself. */
  readonly counters = { digestRecordsIgnored: 0 };

  private mergeClaim(row: MemberRow, claim: MemberRecord, nowMs: number, out: MembershipOutput): void {
    if (!outranks(claim, row)) return;
    switch (claim.state) {
      case 'alive':
        this.markAlive(row, claim.incarnation, nowMs, out);
        break;
      case 'suspect':
        this.markSuspect(row, claim.incarnation, 'gossip', nowMs, out);
        break;
      case 'dead':
        this.markDead(row, claim.incarnation, nowMs, out);
        break;
      case 'left':
        this.markLeft(row, claim.incarnation, nowMs, out);
        break;
    }
    if (claim.addrs.length > 0) row.addrs = this.boundAddrs(claim.addrs);
  }

  /**
   * Anything about us that would outrank our own alive row — a suspicion or
   * verdict at our incarnation or later, or an alive at a later one (a previous
   * life of ours) — is refuted by rising above it and saying so at once.
   */
  private refuteIfNeeded(claim: StateClaim, nowMs: number, out: MembershipOutput): void {
    if (this.selfState === 'left') return;
    if (!outranks(claim, { state: 'alive', incarnation: this.selfIncarnation })) return;
    // We alone raise our incarnation (and persist it): a claim above it is forged; refuting it
    // would push ours toward 2^53 for nothing. Others ignore such claims too (receiveClaim).
    if (claim.incarnation > this.selfIncarnation) {
      out.rejected = `claim about us at incarnation ${claim.incarnation}, above ours (${this.selfIncarnation})`;
      return;
    }
    if (claim.incarnation >= Number.MAX_SAFE_INTEGER) {
      out.rejected = 'incarnation cannot rise above the claim';
      return;
    }
    this.refute(claim.incarnation, nowMs, out);
  }

  private refute(claimedIncarnation: number, nowMs: number, out: MembershipOutput): void {
    this.selfIncarnation = claimedIncarnation + 1;
    out.events.push({ type: 'incarnation', incarnation: this.selfIncarnation });
    this.broadcastHeartbeat(nowMs, out);
  }

  // ---- transitions -------------------------------------------------------

  /** Back to alive from anything else: a fresh detector, started now, so the old silence does not count. */
  private markAlive(row: MemberRow, incarnation: number, nowMs: number, out: MembershipOutput): void {
    if (row.state !== 'alive') row.detector = this.startDetector(nowMs);
    this.changeState(row, 'alive', incarnation, nowMs, out);
  }

  private markSuspect(row: MemberRow, incarnation: number, origin: SuspicionOrigin, nowMs: number, out: MembershipOutput): void {
    if (!isLive(row.state)) row.detector = this.startDetector(nowMs);
    this.changeState(row, 'suspect', incarnation, nowMs, out);
    row.suspectedBy = origin;
  }

  private markDead(row: MemberRow, incarnation: number, nowMs: number, out: MembershipOutput): void {
    this.changeState(row, 'dead', incarnation, nowMs, out);
  }

  private markLeft(row: MemberRow, incarnation: number, nowMs: number, out: MembershipOutput): void {
    this.changeState(row, 'left', incarnation, nowMs, out);
  }

  private changeState(row: MemberRow, state: MemberState, incarnation: number, nowMs: number, out: MembershipOutput): void {
    const from = row.state;
    row.state = state;
    row.incarnation = incarnation;
    row.stateSinceMs = nowMs;
    row.suspectedBy = null;
    row.lastRemindedMs = null;
    if (from !== state) out.events.push({ type: 'member-state', peerId: row.peerId, from, to: state, incarnation });
  }

  /** Add a peer we have not seen; live ones get a detector started now. Undefined when the table is full. */
  private admit(record: MemberRecord, nowMs: number, out: MembershipOutput): MemberRow | undefined {
    if (!this.makeRoom()) return undefined;
    const row: MemberRow = {
      peerId: record.peerId,
      state: record.state,
      incarnation: record.incarnation,
      addrs: this.boundAddrs(record.addrs),
      load: null,
      detector: isLive(record.state) ? this.startDetector(nowMs) : this.newDetector(),
      lastHeartbeatMs: null,
      stateSinceMs: nowMs,
      suspectedBy: record.state === 'suspect' ? 'gossip' : null,
      lastRemindedMs: null,
    };
    this.rows.set(row.peerId, row);
    out.events.push({ type: 'member-state', peerId: row.peerId, from: null, to: row.state, incarnation: row.incarnation });
    return row;
  }

  /** True when one more row fits, evicting the oldest dead or left row if that is what it takes. */
  private makeRoom(): boolean {
    if (this.rows.size + 1 < this.config.maxMembers) return true;
    let oldest: MemberRow | undefined;
    for (const row of this.rows.values()) {
      if (!isLive(row.state) && (oldest === undefined || row.stateSinceMs < oldest.stateSinceMs)) oldest = row;
    }
    if (oldest === undefined) return false;
    this.rows.delete(oldest.peerId);
    return true;
  }

  private newDetector(): PhiAccrualDetector {
    const c = this.config;
    return new PhiAccrualDetector({
      maxSampleSize: c.maxSampleSize,
      minStdDeviationMs: c.minStdDeviationMs,
      acceptableHeartbeatPauseMs: c.acceptableHeartbeatPauseMs,
      firstHeartbeatEstimateMs: c.firstHeartbeatEstimateMs,
      phiThreshold: c.phiThreshold,
    });
  }

  private startDetector(nowMs: number): PhiAccrualDetector {
    const detector = this.newDetector();
    detector.heartbeat(nowMs);
    return detector;
  }

  private boundAddrs(addrs: readonly string[]): string[] {
    return addrs.slice(0, this.config.maxAddrsPerMember);
  }

  // ---- views -------------------------------------------------------------

  private viewOfSelf(): MemberView {
    return {
      peerId: this.self,
      state: this.selfState,
      phi: 0,
      incarnation: this.selfIncarnation,
      addrs: [...this.selfAddrs],
      lastHeartbeatAgeMs: 0,
      load: copyLoad(this.selfLoad),
      self: true,
    };
  }

  private viewOf(row: MemberRow, nowMs: number): MemberView {
    return {
      peerId: row.peerId,
      state: row.state,
      phi: row.detector.phi(nowMs),
      incarnation: row.incarnation,
      addrs: [...row.addrs],
      lastHeartbeatAgeMs: row.lastHeartbeatMs === null ? null : Math.max(0, nowMs - row.lastHeartbeatMs),
      load: row.load === null ? null : copyLoad(row.load),
      self: false,
    };
  }
}
