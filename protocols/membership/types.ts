/**
 * Membership wire messages and the views the core exposes. Messages travel as
 * JSON on a gossipsub topic; `codec.ts` validates untrusted bytes into these.
 */

export type MemberState = 'alive' | 'suspect' | 'dead' | 'left';

/** A sample of the sender's load, carried in each heartbeat (scheduling uses it later). */
export interface LoadSample {
  /** Mean event-loop delay over the last sampling period, ms. */
  eventLoopDelayMs: number;
  /** Resident set size, bytes. */
  rssBytes: number;
  /** Process CPU use over the last sampling period, percent of one core (may exceed 100). */
  cpuPercent: number;
}

export interface HeartbeatMessage {
  kind: 'heartbeat';
  peerId: string;
  incarnation: number;
  addrs: string[];
  load: LoadSample;
}

/** `from` suspects `peerId` at `incarnation`. */
export interface SuspectMessage {
  kind: 'suspect';
  from: string;
  peerId: string;
  incarnation: number;
}

/** `from` declares `peerId` dead at `incarnation`. */
export interface DeadMessage {
  kind: 'dead';
  from: string;
  peerId: string;
  incarnation: number;
}

/** `peerId` leaves the cluster gracefully. */
export interface LeftMessage {
  kind: 'left';
  peerId: string;
  incarnation: number;
}

export interface MemberRecord {
  peerId: string;
  state: MemberState;
  incarnation: number;
  addrs: string[];
}

/** The sender's whole member table, to heal missed gossip. */
export interface DigestMessage {
  kind: 'digest';
  from: string;
  members: MemberRecord[];
}

export type MembershipMessage = HeartbeatMessage | SuspectMessage | DeadMessage | LeftMessage | DigestMessage;

/** One row of the member table as the status API shows it. */
export interface MemberView {
  peerId: string;
  state: MemberState;
  /** Current suspicion level; 0 for self; finite (capped at PHI_MAX). */
  phi: number;
  incarnation: number;
  addrs: string[];
  /** ms since the last heartbeat arrived; null when none has arrived (and for self: 0). */
  lastHeartbeatAgeMs: number | null;
  load: LoadSample | null;
  self: boolean;
}

export type MembershipEvent =
  /** A member appeared (`from` null) or changed state. */
  | { type: 'member-state'; peerId: string; from: MemberState | null; to: MemberState; incarnation: number }
  /** Our own incarnation rose (refutation or rejoin); the shell persists it. */
  | { type: 'incarnation'; incarnation: number }
  /** A tick ran late by more than the acceptable pause: nobody was convicted on it. */
  | { type: 'own-pause'; lateByMs: number };

export interface MembershipOutput {
  /** Messages to publish on the membership topic. */
  broadcast: MembershipMessage[];
  events: MembershipEvent[];
  /** Set when `receive` dropped the message (forged, stale beyond repair, over a limit): the reason. */
  rejected?: string;
}
