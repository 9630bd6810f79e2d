import type { Message } from '@libp2p/interface';
import { TopicValidatorResult } from '@libp2p/interface';
import { multiaddr } from '@multiformats/multiaddr';
import { decodeMembershipMessage, encodeMembershipMessage } from '../protocols/membership/codec.js';
import type { MembershipConfig } from '../protocols/membership/config.js';
import { Membership } from '../protocols/membership/membership.js';
import type { MemberState, MemberView, MembershipMessage, MembershipOutput } from '../protocols/membership/types.js';
import type { KvStore } from '../storage/kv-store.js';
import { fullAddrs, type Host } from './host.js';
import { saveIncarnation } from './identity.js';
import type { LoadSampler } from './load-sampler.js';
import type { Logger } from './log.js';

/** Gossipsub topic of heartbeats, suspicions, verdicts and digests. Versioned like a protocol id. */
export const MEMBERSHIP_TOPIC = '/shoal/membership/1.0.0';

/** How often to look for members we know of but are not connected to, ms. */
const RECONNECT_INTERVAL_MS = 1000;
/** At most this many dials in flight for reconnection at once. */
const MAX_RECONNECT_DIALS = 8;
/** Bound on one dial. */
const DIAL_TIMEOUT_MS = 5000;
/**
 * A connection open this long whose peer has not announced the membership topic is
 * repaired (hang up, redial). gossipsub keeps a stale outbound stream when a peer
 * restarts with the same id before the old connection's close is processed, and then
 * never talks to the new incarnation over that connection.
 */
const GOSSIP_SILENT_CONNECTION_MS = 3000;

export interface MembershipCounters {
  received: number;
  rejected: number;
  published: number;
  publishFailed: number;
  /** Transitions of other members into each state, as this peer saw them. */
  transitions: Record<MemberState, number>;
}

export interface MembershipServiceOptions {
  host: Host;
  meta: KvStore;
  incarnation: number;
  config: Partial<MembershipConfig>;
  tickIntervalMs: number;
  load: LoadSampler;
  log: Logger;
  now?: () => number;
}

/**
 * The shell around the membership core: publishes what it says on the
 * gossipsub topic, feeds it validated messages, calls `tick` on a timer,
 * persists incarnation changes, and keeps connections to every live member.
 * A closed connection is only a reason to redial, never a verdict.
 */
export class MembershipService {
  readonly core: Membership;
  readonly counters: MembershipCounters = {
    received: 0,
    rejected: 0,
    published: 0,
    publishFailed: 0,
    transitions: { alive: 0, suspect: 0, dead: 0, left: 0 },
  };
  private readonly host: Host;
  private readonly log: Logger;
  private readonly now: () => number;
  private tickTimer: NodeJS.Timeout | null = null;
  private lastReconnectMs = 0;
  private readonly dialing = new Set<string>();
  /** Peers whose connection was repaired, with when, so a peer that never subscribes is not redialed in a loop. */
  private readonly repairedAt = new Map<string, number>();
  private readonly repairing = new Set<string>();
  private stopped = false;
  private persistChain: Promise<void> = Promise.resolve();

  constructor(private readonly opts: MembershipServiceOptions) {
    this.host = opts.host;
    this.log = opts.log;
    this.now = opts.now ?? (() => performance.now());
    this.core = new Membership({
      selfId: opts.host.peerId.toString(),
      addrs: fullAddrs(opts.host),
      incarnation: opts.incarnation,
      nowMs: this.now(),
      config: opts.config,
      load: opts.load.sample(),
    });
  }

  start(): void {
    const pubsub = this.host.services.pubsub;
    pubsub.topicValidators.set(MEMBERSHIP_TOPIC, (_peer, msg) => this.validate(msg));
    pubsub.addEventListener('message', this.onMessage);
    pubsub.subscribe(MEMBERSHIP_TOPIC);
    this.host.addEventListener('peer:disconnect', this.onDisconnect);
    this.host.addEventListener('self:peer:update', this.onSelfUpdate);
    this.tickTimer = setInterval(() => this.tick(), this.opts.tickIntervalMs);
    this.tick();
  }

  /** Announce `left` and wait (bounded) until the announcement went out. */
  async leave(timeoutMs = 1000): Promise<void> {
    const out = this.core.leave(this.now());
    await Promise.race([this.handle(out), new Promise((r) => setTimeout(r, timeoutMs).unref())]);
  }

  stop(): void {
    this.stopped = true;
    if (this.tickTimer !== null) clearInterval(this.tickTimer);
    this.tickTimer = null;
    const pubsub = this.host.services.pubsub;
    pubsub.removeEventListener('message', this.onMessage);
    pubsub.topicValidators.delete(MEMBERSHIP_TOPIC);
    this.host.removeEventListener('peer:disconnect', this.onDisconnect);
    this.host.removeEventListener('self:peer:update', this.onSelfUpdate);
  }

  /** Wait for pending incarnation writes. */
  async flush(): Promise<void> {
    await this.persistChain;
  }

  members(): MemberView[] {
    return this.core.members(this.now());
  }

  private tick(): void {
    if (this.stopped) return;
    const now = this.now();
    this.core.setLoad(this.opts.load.sample());
    void this.handle(this.core.tick(now));
    if (now - this.lastReconnectMs >= RECONNECT_INTERVAL_MS) {
      this.lastReconnectMs = now;
      this.reconnect();
      this.repairSilentConnections(now);
    }
  }

  /** Gossipsub calls this before delivering or forwarding: garbage and forgeries stop here. */
  private validate(msg: Message): TopicValidatorResult {
    if (msg.type !== 'signed') return this.reject('unsigned message');
    try {
      const decoded = decodeMembershipMessage(msg.data);
      const claimed = 'from' in decoded ? decoded.from : decoded.peerId;
      if (claimed !== msg.from.toString()) return this.reject('sender does not match signer');
      return TopicValidatorResult.Accept;
    } catch (err) {
      return this.reject((err as Error).message);
    }
  }

  private reject(reason: string): TopicValidatorResult {
    this.counters.rejected++;
    this.log.debug('membership message rejected', { reason });
    return TopicValidatorResult.Reject;
  }

  private readonly onMessage = (evt: CustomEvent<Message>): void => {
    const msg = evt.detail;
    if (msg.topic !== MEMBERSHIP_TOPIC || msg.type !== 'signed' || this.stopped) return;
    let decoded: MembershipMessage;
    try {
      decoded = decodeMembershipMessage(msg.data);
    } catch {
      return; // already counted by the validator
    }
    this.counters.received++;
    const out = this.core.receive(this.now(), msg.from.toString(), decoded);
    if (out.rejected !== undefined) {
      this.counters.rejected++;
      this.log.debug('membership message refused by core', { reason: out.rejected });
    }
    void this.handle(out);
  };

  private readonly onDisconnect = (evt: CustomEvent<{ toString(): string }>): void => {
    // A hint: redial soon if we still think it is alive. The detector decides.
    this.log.debug('connection closed', { remote: evt.detail.toString() });
    this.lastReconnectMs = 0;
  };

  private readonly onSelfUpdate = (): void => {
    this.core.setAddrs(fullAddrs(this.host));
  };

  private async handle(out: MembershipOutput): Promise<void> {
    for (const ev of out.events) {
      if (ev.type === 'member-state') {
        if (ev.peerId !== this.core.selfId) this.counters.transitions[ev.to]++;
        this.log.info('member state', { member: ev.peerId, from: ev.from, to: ev.to, incarnation: ev.incarnation });
      } else if (ev.type === 'incarnation') {
        this.log.info('incarnation raised', { incarnation: ev.incarnation });
        const inc = ev.incarnation;
        this.persistChain = this.persistChain
          .then(() => saveIncarnation(this.opts.meta, inc))
          .catch((err: unknown) => this.log.error('could not persist incarnation', { err }));
      } else if (ev.type === 'own-pause') {
        this.log.warn('event loop stalled; no verdicts this tick', { lateByMs: Math.round(ev.lateByMs) });
      }
    }
    await Promise.all(out.broadcast.map((m) => this.publish(m)));
  }

  private async publish(m: MembershipMessage): Promise<void> {
    try {
      await this.host.services.pubsub.publish(MEMBERSHIP_TOPIC, encodeMembershipMessage(m));
      this.counters.published++;
    } catch (err) {
      this.counters.publishFailed++;
      if (!this.stopped) this.log.debug('publish failed', { kind: m.kind, err });
    }
  }

  /** Hang up and redial connections over which gossipsub never learned the peer's subscription. */
  private repairSilentConnections(now: number): void {
    const subscribed = new Set(this.host.services.pubsub.getSubscribers(MEMBERSHIP_TOPIC).map((p) => p.toString()));
    const wallNow = Date.now();
    for (const conn of this.host.getConnections()) {
      const id = conn.remotePeer.toString();
      if (conn.status !== 'open' || subscribed.has(id) || this.repairing.has(id)) continue;
      if (wallNow - conn.timeline.open < GOSSIP_SILENT_CONNECTION_MS) continue;
      const last = this.repairedAt.get(id);
      if (last !== undefined && now - last < 30_000) continue;
      this.repairedAt.set(id, now);
      this.repairing.add(id);
      this.log.info('repairing a connection without gossip', { remote: id });
      const peerId = conn.remotePeer;
      void (async () => {
        try {
          await this.host.hangUp(peerId);
          await this.host.dial(peerId, { signal: AbortSignal.timeout(DIAL_TIMEOUT_MS) });
        } catch (err) {
          this.log.debug('repair dial failed', { remote: id, err });
        } finally {
          this.repairing.delete(id);
        }
      })();
    }
    if (this.repairedAt.size > 1024) this.repairedAt.clear();
  }

  /** Dial members that are alive or suspect but not connected (learned from gossip, or dropped). */
  private reconnect(): void {
    const self = this.host.peerId.toString();
    const connected = new Set(this.host.getConnections().map((c) => c.remotePeer.toString()));
    for (const m of this.core.members(this.now())) {
      if (this.dialing.size >= MAX_RECONNECT_DIALS) break;
      if (m.peerId === self || connected.has(m.peerId) || this.dialing.has(m.peerId)) continue;
      if (m.state !== 'alive' && m.state !== 'suspect') continue;
      const addrs = m.addrs.flatMap((a) => {
        try {
          return [multiaddr(a)];
        } catch {
          return [];
        }
      });
      if (addrs.length === 0) continue;
      this.dialing.add(m.peerId);
      this.host
        .dial(addrs, { signal: AbortSignal.timeout(DIAL_TIMEOUT_MS) })
        .then(() => this.log.debug('connected to member', { member: m.peerId }))
        .catch((err: unknown) => this.log.debug('dial to member failed', { member: m.peerId, err }))
        .finally(() => this.dialing.delete(m.peerId));
    }
  }
}
