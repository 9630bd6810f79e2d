/**
 * The cluster map: the deterministic state machine the Raft coordinator replicates. Commands
 * travel JSON-encoded in normal Raft entries; every peer applies the committed ones in order and
 * so holds the same map.
 */

export type MemberStatus = 'active' | 'draining' | 'left' | 'dead';

/** Fixed when the cluster is created (the `bootstrap` command). */
export interface ClusterSettings {
  /** Number of shards: a power of two in [8, 1024]. Default 64 (Riak's ring size). */
  shardCount: number;
  /** Replicas per shard. Default 3: one failure never loses an acknowledged write. */
  replicationFactor: number;
  /** Writes are refused while a shard's in-sync set is smaller. Default 2. */
  minInSync: number;
}

export interface MemberInfo {
  /** Multiaddrs the peer listens on. */
  addrs: string[];
  /** Relative capacity (positive); placement gives a peer a share in proportion. Default 1. */
  capacity: number;
  status: MemberStatus;
}

export interface ShardAssignment {
  /** Peers holding the shard, preferred primary first; distinct members. */
  replicas: string[];
  /** The serving primary: a member of `inSync`, or null while there is none. */
  primary: string | null;
  /** Replicas that hold every acknowledged write; a subset of `replicas`. */
  inSync: string[];
  /** Bumped on every change of primary or replica set; never decreases (fencing). */
  epoch: number;
}

export interface BootstrapCommand {
  type: 'bootstrap';
  /** Omitted fields take the defaults. */
  settings: Partial<ClusterSettings>;
}

export interface AddMemberCommand {
  type: 'add-member';
  peerId: string;
  addrs: string[];
  /** Default 1. */
  capacity?: number;
}

export interface UpdateMemberCommand {
  type: 'update-member';
  peerId: string;
  addrs?: string[];
  capacity?: number;
  status?: MemberStatus;
}

export interface RemoveMemberCommand {
  type: 'remove-member';
  peerId: string;
}

export interface ShardAssignmentUpdate {
  shard: number;
  assignment: ShardAssignment;
  /**
   * Conditional update: when present, the update (and with it the whole command) is rejected
   * with `epoch-mismatch` unless the shard already has an assignment at exactly this epoch. The
   * coordinator plans a change from the map it sees and sets this to the epoch it saw, so a
   * change planned from a stale view (another change to the shard committed in between) fails
   * instead of overwriting the newer one.
   */
  expectEpoch?: number;
}

/**
 * Set shard assignments. `full: true`: `updates` lists every shard 0..shardCount-1 in order
 * (the first assignment must be full). `full: false`: only the listed shards change.
 */
export interface SetShardAssignmentCommand {
  type: 'set-shard-assignment';
  full: boolean;
  updates: ShardAssignmentUpdate[];
}

export type ClusterCommand =
  | BootstrapCommand
  | AddMemberCommand
  | UpdateMemberCommand
  | RemoveMemberCommand
  | SetShardAssignmentCommand;

export type ClusterCommandType = ClusterCommand['type'];

export type RejectReason =
  /** The entry did not decode to a valid command. */
  | 'malformed'
  | 'not-bootstrapped'
  | 'already-bootstrapped'
  | 'invalid-settings'
  | 'member-exists'
  | 'unknown-member'
  /** A member field is out of range (addrs, capacity, status). */
  | 'invalid-member'
  /** The member still holds shard replicas. */
  | 'member-in-use'
  /** Replicas, primary or in-sync set break a rule. */
  | 'invalid-assignment'
  | 'epoch-regression'
  /** An update's `expectEpoch` is not the shard's current epoch (or the shard has no assignment). */
  | 'epoch-mismatch'
  /** A per-shard update before any full assignment. */
  | 'no-assignment';

export type ApplyResult = { ok: true } | { ok: false; reason: RejectReason; detail: string };

/** A read-only copy of the whole map. */
export interface ClusterMapView {
  version: number;
  settings: ClusterSettings | null;
  members: Record<string, MemberInfo>;
  shards: ShardAssignment[];
}
