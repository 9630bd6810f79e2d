import { multiaddr, type Multiaddr } from '@multiformats/multiaddr';
import { ConfigError } from '../protocols/errors.js';
import type { MembershipConfig } from '../protocols/membership/config.js';
import { validateMembershipConfig } from '../protocols/membership/config.js';
import { resolveRaftConfig, type RaftConfig } from '../protocols/raft/config.js';
import { LOG_LEVELS, type LogLevel } from './log.js';
import { checkClusterSettings, DEFAULT_CLUSTER_SETTINGS } from '../protocols/cluster-map/commands.js';
import type { ClusterSettings } from '../protocols/cluster-map/types.js';
import { MAX_KEY_BYTES, MAX_VALUE_BYTES } from '../protocols/replication/config.js';
import { READ_POLICIES, type ReadPolicy } from './store-api.js';
import { decodeJoinToken, looksLikeJoinToken } from './join-token.js';
import { checkOwnedFields } from './start-options.js';

export { ConfigError };

/** Options of one Shoal peer. Every field has a default; `validatePeerOptions` checks them. */
export interface PeerOptions {
  /** Where the peer keeps its identity and data. Default `./shoal-data`, like etcd's `<name>.etcd` in the working directory. */
  dataDir: string;
  /** Multiaddrs to listen on. Default `/ip4/127.0.0.1/tcp/4001`: loopback only until the operator opens it up; `/tcp/0` picks a free port. */
  listen: string[];
  /**
   * Peers to join through: join tokens (`SHOAL-1-...`, carrying the cluster key and a member's
   * addresses) or full multiaddrs (with `/p2p/<peer id>`, when the key comes from elsewhere).
   * Default none: the peer starts a new cluster.
   */
  join: string[];
  /** HOST:PORT of the HTTP API, or `off`. Default `127.0.0.1:7070`; port 0 picks a free port. */
  http: string;
  /**
   * Host names the HTTP API answers to besides IP addresses and `localhost` (lower case, no
   * port). Default none: a request whose Host header names anything else is refused (421), so a
   * web page cannot reach the API by making its own name resolve here (DNS rebinding).
   */
  httpAllowedHosts: string[];
  /** Path of a libp2p private-network key (`shoal keygen`). Default none: the key comes from the data dir, a join token, or is generated for a new cluster (node/cluster-key.ts). */
  swarmKeyFile: string | null;
  /**
   * Run an open network: no cluster key, and the HTTP API may listen beyond loopback without a
   * token. Default false (secure by default; CockroachDB's rule).
   */
  insecure: boolean;
  /**
   * File holding the HTTP bearer token. When set, every HTTP route except `GET /healthz` needs
   * `Authorization: Bearer <token>`. Default none; then the HTTP API must listen on loopback
   * unless `insecure` is set.
   */
  httpTokenFile: string | null;
  /** Log level. Default `info`. */
  logLevel: LogLevel;
  /** Failure-detector and gossip settings (protocols/membership/config.ts has the defaults and reasons). */
  membership: Partial<MembershipConfig>;
  /** Cap of the join retry backoff, ms. Default 5000: a seed that comes up late is found within seconds. */
  joinBackoffMaxMs: number;
  /** Raft voters the coordinator keeps; other peers are learners. Default 3 (5 survives two failures). */
  voters: number;
  /** A voter dead this long is replaced by a live learner, ms. Default 30000: a restart should not reshuffle the voters. */
  replaceVoterAfterMs: number;
  /** Raft timing (protocols/raft/config.ts has the defaults and reasons). */
  raft: Partial<RaftConfig>;
  /** This peer's relative capacity: placement gives it a proportional share of replicas. Default 1. */
  capacity: number;
  /** fsync every group commit (survives power loss). Default false: a write is in the OS buffers of every in-sync replica, which survives any process crash. */
  sync: boolean;
  /** Replica choice for `consistency=any` reads. Default `round-robin`. */
  readPolicy: ReadPolicy;
  /** Lease the coordinator grants primaries, ms. Default 500: failover in about a second, as etcd's election. */
  leaseMs: number;
  /** How long a client operation waits for a serving primary before answering 503, ms. Default 5000. */
  requestTimeoutMs: number;
  /** Largest key, UTF-8 bytes (1..1024). Default 1024. */
  maxKeyBytes: number;
  /** Largest value, bytes (0..1 MiB). Default 1 MiB. */
  maxValueBytes: number;
  /** Bytes per second this peer's snapshot transfers (data moved to new replicas) share; null: unlimited. Default null: on loopback and LANs the move should finish fast, and replication traffic is never throttled. */
  rebalanceRate: number | null;
  /**
   * The autoscaler, acting while this peer is the coordinator (node/autoscale-service.ts).
   * Default mode `off`.
   */
  autoscale: {
    mode: 'off' | 'dry-run' | 'exec' | 'local';
    minPeers: number;
    maxPeers: number;
    targetUtilization: number;
    scaleUpWindowMs?: number;
    scaleDownWindowMs?: number;
    cooldownMs?: number;
    execCommand: string | null;
    /** `local`: parent directory of the data dirs of the peers it starts. Default: DATA_DIR/autoscaled. */
    dir: string | null;
  };
  /** Task slots (CPU cores tasks may hold at once) this peer offers at capacity 1 (it offers this × its capacity); null: its CPU count. */
  taskSlots: number | null;
  /** Op-log groups a shard keeps after applying them, for backups that fall behind; further behind, a replica gets a snapshot. Default 256. */
  logRetainGroups: number;
  /** Settings of a new cluster, used only by the peer that bootstraps it: shard count (power of two 8..1024, default 64), replication factor (default 3), minInSync (default 2). */
  cluster: Partial<ClusterSettings>;
}

export const DEFAULT_PEER_OPTIONS: PeerOptions = {
  dataDir: './shoal-data',
  listen: ['/ip4/127.0.0.1/tcp/4001'],
  join: [],
  http: '127.0.0.1:7070',
  httpAllowedHosts: [],
  swarmKeyFile: null,
  insecure: false,
  httpTokenFile: null,
  logLevel: 'info',
  membership: {},
  joinBackoffMaxMs: 5000,
  voters: 3,
  replaceVoterAfterMs: 30_000,
  raft: {},
  capacity: 1,
  sync: false,
  readPolicy: 'round-robin',
  leaseMs: 500,
  requestTimeoutMs: 5000,
  maxKeyBytes: MAX_KEY_BYTES,
  maxValueBytes: MAX_VALUE_BYTES,
  rebalanceRate: null,
  taskSlots: null,
  autoscale: { mode: 'off', minPeers: 3, maxPeers: 9, targetUtilization: 0.6, execCommand: null, dir: null },
  logRetainGroups: 256,
  cluster: {},
};

export interface HostPort {
  host: string;
  port: number;
}

/** Parse `HOST:PORT` (IPv6 as `[::1]:7070`); throws ConfigError naming `field`. */
export function parseHostPort(value: string, field: string): HostPort {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(value);
  if (m === null) throw new ConfigError(field, `expected HOST:PORT, got ${JSON.stringify(value)}`);
  const port = Number(m[3]);
  if (port > 65535) throw new ConfigError(field, `port ${port} is out of range 0-65535`);
  return { host: (m[1] ?? m[2]) as string, port };
}

function parseMultiaddr(value: string, field: string): Multiaddr {
  try {
    return multiaddr(value);
  } catch (err) {
    throw new ConfigError(field, `not a multiaddr: ${JSON.stringify(value)} (${(err as Error).message})`);
  }
}

/** True for names and addresses that only this machine can reach. */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** A listen address must name an IP and a TCP port. */
export function validateListenAddr(value: string, field = 'listen'): Multiaddr {
  const ma = parseMultiaddr(value, field);
  const protos = ma.protoNames();
  if (!['ip4', 'ip6'].includes(protos[0] ?? '') || protos[1] !== 'tcp' || protos.length !== 2) {
    throw new ConfigError(field, `expected /ip4/<addr>/tcp/<port> or /ip6/<addr>/tcp/<port>, got ${value}`);
  }
  return ma;
}

/** A join address must be a full address: transport plus `/p2p/<peer id>`. */
export function validateJoinAddr(value: string, field = 'join'): Multiaddr {
  const ma = parseMultiaddr(value, field);
  const protos = ma.protoNames();
  if (!protos.includes('tcp')) throw new ConfigError(field, `${value} has no /tcp/<port>`);
  if (protos[protos.length - 1] !== 'p2p' || ma.getPeerId() === null) {
    throw new ConfigError(field, `${value} must end with /p2p/<peer id> (the full address a peer prints at start)`);
  }
  return ma;
}

/** Merge with defaults and validate every field; throws ConfigError naming the first bad one. */
export function validatePeerOptions(partial: Partial<PeerOptions>): PeerOptions {
  const o: PeerOptions = { ...DEFAULT_PEER_OPTIONS, ...partial };
  if (typeof o.dataDir !== 'string' || o.dataDir.length === 0) throw new ConfigError('dataDir', 'must be a non-empty path');
  if (!Array.isArray(o.listen) || o.listen.length === 0) throw new ConfigError('listen', 'needs at least one address');
  o.listen.forEach((a) => validateListenAddr(a));
  if (!Array.isArray(o.join)) throw new ConfigError('join', 'must be a list of multiaddrs');
  o.join.forEach((a) => (looksLikeJoinToken(a) ? decodeJoinToken(a) : validateJoinAddr(a)));
  if (typeof o.insecure !== 'boolean') throw new ConfigError('insecure', 'must be true or false');
  if (o.insecure && (o.swarmKeyFile !== null || o.join.some(looksLikeJoinToken))) {
    throw new ConfigError('insecure', '--insecure runs an open network; it cannot be combined with a join token or --swarm-key');
  }
  if (o.httpTokenFile !== null && (typeof o.httpTokenFile !== 'string' || o.httpTokenFile.length === 0)) {
    throw new ConfigError('httpTokenFile', 'must be a path or null');
  }
  if (o.http !== 'off') {
    const { host } = parseHostPort(o.http, 'http');
    if (!isLoopbackHost(host) && o.httpTokenFile === null && !o.insecure) {
      throw new ConfigError(
        'http',
        `${o.http} is reachable beyond this machine: give a bearer token with --http-token-file FILE, or pass --insecure to serve the API unauthenticated`,
      );
    }
  }
  if (!Array.isArray(o.httpAllowedHosts) || o.httpAllowedHosts.some((h) => typeof h !== 'string' || !/^[a-z0-9.-]{1,253}$/.test(h))) {
    throw new ConfigError('httpAllowedHosts', 'must be host names in lower case (letters, digits, dots and dashes, no port)');
  }
  if (!LOG_LEVELS.includes(o.logLevel)) throw new ConfigError('logLevel', `must be one of ${LOG_LEVELS.join(', ')}`);
  if (!Number.isFinite(o.joinBackoffMaxMs) || o.joinBackoffMaxMs < 100) {
    throw new ConfigError('joinBackoffMaxMs', 'must be a number >= 100');
  }
  validateMembershipConfig(o.membership);
  resolveRaftConfig(o.raft);
  if (typeof o.sync !== 'boolean') throw new ConfigError('sync', 'must be true or false');
  // Bounds of the numeric fields a `shoal start` flag sets: written once, in node/start-options.ts.
  checkOwnedFields(o);
  if (!READ_POLICIES.includes(o.readPolicy)) throw new ConfigError('readPolicy', `must be one of ${READ_POLICIES.join(', ')}`);
  if (o.rebalanceRate !== null && !(typeof o.rebalanceRate === 'number' && Number.isFinite(o.rebalanceRate) && o.rebalanceRate >= 1024)) {
    throw new ConfigError('rebalanceRate', 'must be null (unlimited) or at least 1024 bytes per second');
  }
  const a = o.autoscale;
  if (typeof a !== 'object' || a === null || !['off', 'dry-run', 'exec', 'local'].includes(a.mode)) throw new ConfigError('autoscale.mode', 'must be off, dry-run, exec or local');
  if (a.mode === 'exec' && (typeof a.execCommand !== 'string' || a.execCommand.trim() === '')) throw new ConfigError('autoscale.execCommand', 'the exec provider needs a command');
  if (typeof o.cluster !== 'object' || o.cluster === null) throw new ConfigError('cluster', 'must be an object');
  for (const key of Object.keys(o.cluster)) {
    if (!(key in DEFAULT_CLUSTER_SETTINGS)) throw new ConfigError(`cluster.${key}`, 'unknown setting');
  }
  const problem = checkClusterSettings({ ...DEFAULT_CLUSTER_SETTINGS, ...o.cluster });
  if (problem !== null) throw new ConfigError('cluster', problem);
  return o;
}
