/**
 * Raft record and message types. Everything here is plain data: the core never sends or writes;
 * it hands these to the shell through `Ready` (see raft.ts), and the shell persists and sends
 * them. `codec.ts` turns untrusted bytes into `RaftMessage` values and back.
 */

/** A peer id (a libp2p peer id string in production, `n1`, `n2`, ... in tests). */
export type NodeId = string;

export type EntryType = 'normal' | 'conf-change';

/** One log entry. `data` is opaque to Raft for `normal`; an encoded `ConfChange` for `conf-change`. */
export interface Entry {
  index: number;
  term: number;
  type: EntryType;
  data: Uint8Array;
}

/** The state that must be on disk before any message of the same `Ready` leaves the peer. */
export interface HardState {
  term: number;
  /** Whom this peer voted for in `term`; null when it has not voted. */
  vote: NodeId | null;
  commit: number;
}

/** A cluster configuration: who votes and who only receives the log. Disjoint sets. */
export interface ConfState {
  voters: NodeId[];
  learners: NodeId[];
}

/**
 * A state-machine snapshot: the application's state after applying every entry up to and
 * including `index`, with the term of that entry and the configuration in force at it.
 */
export interface Snapshot {
  index: number;
  term: number;
  config: ConfState;
  data: Uint8Array;
}

export type Role = 'follower' | 'pre-candidate' | 'candidate' | 'leader';

/** Volatile state the shell may want to show or react to; never persisted. */
export interface SoftState {
  leader: NodeId | null;
  role: Role;
}

/**
 * A single-server membership change (Raft dissertation §4.1). Takes effect on every peer as soon
 * as it is appended to the log, not when committed.
 */
export type ConfChangeType = 'add-voter' | 'add-learner' | 'promote-learner' | 'remove-node';

export interface ConfChange {
  type: ConfChangeType;
  node: NodeId;
}

interface MessageBase {
  from: NodeId;
  to: NodeId;
  /** The sender's term (for a pre-vote request and a granted pre-vote answer: the term the candidate would campaign in). */
  term: number;
}

/** AppendEntries: the leader's entries after (`prevIndex`, `prevTerm`) and its commit index. */
export interface AppendMessage extends MessageBase {
  type: 'append';
  prevIndex: number;
  prevTerm: number;
  entries: Entry[];
  commit: number;
}

/**
 * Answer to `append` and `snapshot`. Accepted: `index` is the last index now known to match the
 * leader. Rejected: `index` is the rejected `prevIndex`, and (`hintIndex`, `hintTerm`) is the
 * follower's largest entry at or below min(prevIndex, lastIndex) whose term is ≤ `prevTerm`, so
 * the leader can skip a whole conflicting term in one round trip (etcd's findConflictByTerm).
 * An empty answer with a higher term tells a stale leader to step down.
 */
export interface AppendResponseMessage extends MessageBase {
  type: 'append-response';
  index: number;
  reject: boolean;
  hintIndex: number;
  hintTerm: number;
}

/** RequestVote or, with `pre`, a pre-vote probe that changes no state on the receiver. */
export interface VoteMessage extends MessageBase {
  type: 'vote';
  pre: boolean;
  lastIndex: number;
  lastTerm: number;
  /** Sent because of a leadership transfer: the receiver ignores its leader lease. */
  transfer: boolean;
}

export interface VoteResponseMessage extends MessageBase {
  type: 'vote-response';
  pre: boolean;
  granted: boolean;
}

/** Keeps followers from campaigning and tells them how far to commit (≤ what they match). */
export interface HeartbeatMessage extends MessageBase {
  type: 'heartbeat';
  commit: number;
}

export interface HeartbeatResponseMessage extends MessageBase {
  type: 'heartbeat-response';
}

/** InstallSnapshot, in one message (snapshots of the cluster map are small). */
export interface SnapshotMessage extends MessageBase {
  type: 'snapshot';
  snapshot: Snapshot;
}

/** Leadership transfer: the receiver campaigns at once, skipping pre-vote. */
export interface TimeoutNowMessage extends MessageBase {
  type: 'timeout-now';
}

export type RaftMessage =
  | AppendMessage
  | AppendResponseMessage
  | VoteMessage
  | VoteResponseMessage
  | HeartbeatMessage
  | HeartbeatResponseMessage
  | SnapshotMessage
  | TimeoutNowMessage;

export type RaftMessageType = RaftMessage['type'];

/**
 * What a peer recovered from its durable store at start: exactly what earlier `Ready`s asked it to
 * persist (and the snapshots it took itself with `compact`).
 */
export interface RecoveredState {
  hardState: HardState;
  /** The latest persisted snapshot; absent means index 0, term 0, empty configuration. */
  snapshot?: Snapshot;
  /** Persisted entries, contiguous, starting right after the snapshot (older ones are ignored). */
  entries: Entry[];
  /**
   * The highest index already applied to the application's (durable) state machine; defaults
   * to the snapshot index, so entries after the snapshot are handed out again to apply.
   */
  applied?: number;
}

/** A read-only view for status APIs and tests. */
export interface RaftStatus {
  id: NodeId;
  term: number;
  role: Role;
  leader: NodeId | null;
  commitIndex: number;
  applied: number;
  voters: NodeId[];
  learners: NodeId[];
  lastIndex: number;
  /** Index of the latest snapshot (entries up to it are compacted away). */
  snapshotIndex: number;
  /** Set while this leader transfers leadership. */
  transferee: NodeId | null;
}
