/**
 * The peer's Prometheus metrics (`GET /metrics`), on prom-client: one Registry per peer, since
 * several peers may run in one process (the in-process tests, a program that embeds peers).
 *
 * Three kinds of metric live here:
 * - the default process metrics of prom-client (CPU, memory, event-loop lag, GC, handles);
 * - mirrors of the cumulative counters and gauges the services keep themselves (membership,
 *   Raft, store counters objects): their `collect()` copies the values of the snapshot the
 *   server hands to `render` at each scrape, so names, types, labels and meanings stay as
 *   they were when this text was written by hand;
 * - metrics observed here as things happen: HTTP requests and their durations, the duration
 *   of a replicated write at its primary, the duration of each completed shard move.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { MembershipCounters } from './membership-service.js';
import type { PeerStatus } from './peer.js';
import type { ChannelCounters } from './stream-channel.js';

/** The Raft channel's counters and the frames refused for the sender's role (Coordinator.counters). */
export type RaftCounters = ChannelCounters & { rejected: number };

/** What the store reports to /metrics (see StoreService.metrics). */
export interface StoreMetrics {
  counters: Record<
    | 'forwarded'
    | 'served'
    | 'leaseRenewals'
    | 'leaseFailures'
    | 'snapshotsSent'
    | 'snapshotBytesSent'
    | 'snapshotsResumed'
    | 'snapshotBytesResumed'
    | 'moveSecondsTotal'
    | 'copiesDeleted'
    | 'catchUpBytesReceived'
    | 'snapshotsInstalled'
    | 'assignmentsProposed'
    | 'replicationRefused'
    | 'replicationRejected'
    | 'requestsRejected',
    number
  >;
  leaseValid: boolean;
  primaries: number;
  replicas: number;
  serving: number;
  replication: ChannelCounters;
  /** The shard controller's catch-ups (coordinator only; null elsewhere). */
  catchUps: { active: number; abandoned: number; abandonedTotal: number } | null;
  /** Replicas being filled cluster-wide, from this peer's map. */
  movesInFlight: number;
}

/** The counters of the peer's services (HttpHandlers.counters). */
export interface PeerCounters {
  membership: MembershipCounters;
  raft: RaftCounters;
  store?: StoreMetrics;
  /** Open libp2p connections (Libp2p.getConnections().length). */
  libp2pConnections?: number;
}

/** What one scrape shows of the values kept elsewhere. */
export interface MetricsSnapshot {
  counters: PeerCounters;
  status: PeerStatus;
  /** Bytes of request bodies the HTTP server holds now. */
  bodyBytesInFlight: number;
}

/** Operations of the `op` label of shoal_http_request_duration_seconds: the key-value routes, and every other request. */
export type HttpOp = 'get' | 'put' | 'delete' | 'other';

/**
 * Default process metrics, collected once per process into this registry and merged into every
 * peer's. prom-client's `collectDefaultMetrics` could be called once per registry, but each call
 * starts its own event-loop delay monitor and GC observer that are never stopped, and the
 * values describe the process anyway, which every peer in it shares. Created on first use so a
 * program that imports Shoal without starting a peer starts no monitor.
 */
let processRegistry: Registry | null = null;
function processMetrics(): Registry {
  if (processRegistry === null) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry;
}

type Labels = Record<string, string>;
/** The samples of one mirrored family: one number, or a value per label set; null: absent (no sample). */
type Read = (s: MetricsSnapshot) => number | Array<[Labels, number]> | null;

export class PeerMetrics {
  readonly registry: Registry;
  /** Every HTTP response, by operation and status class (2xx, 4xx, 5xx), when it finishes. */
  readonly httpRequestDuration: Histogram<'op' | 'status'>;
  /** Key-value requests answered, by operation and HTTP status code. */
  readonly httpKvRequests: Counter<'op' | 'status'>;
  /** Requests refused before routing (request-guard.ts). */
  readonly httpRequestsRefused: Counter;
  /** At a primary: from a write entering the replica core to its answer at commit (applied writes only). */
  readonly replicationWriteDuration: Histogram;
  /** Each completed shard snapshot send (a replica move), from its start to the receiver's last acknowledgement. */
  readonly moveDuration: Histogram;
  private snapshot: MetricsSnapshot | null = null;

  constructor() {
    const own = new Registry();
    const registers = [own];
    this.httpRequestDuration = new Histogram({
      name: 'shoal_http_request_duration_seconds',
      help: 'HTTP requests from their headers to the end of the response, by operation (get, put, delete, other) and status class.',
      labelNames: ['op', 'status'],
      // 1 ms (a local read) to 10 s (a write waiting for a primary, --request-timeout).
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.httpKvRequests = new Counter({
      name: 'shoal_http_kv_requests_total',
      help: 'Key-value requests answered, by operation and HTTP status.',
      labelNames: ['op', 'status'],
      registers,
    });
    this.httpRequestsRefused = new Counter({
      name: 'shoal_http_requests_refused_total',
      help: 'HTTP requests refused before routing: Host not this peer, a foreign Origin on a state change, /v1/leave without JSON.',
      registers,
    });
    this.replicationWriteDuration = new Histogram({
      name: 'shoal_replication_write_duration_seconds',
      help: 'At a primary: writes from entering the replica core to their answer at commit (every in-sync backup acknowledged).',
      // Sub-millisecond (one peer, no backups) to the 10 s bound on a write's answer.
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
      registers,
    });
    this.moveDuration = new Histogram({
      name: 'shoal_move_duration_seconds',
      help: 'Completed shard snapshot sends (replica moves), from the start of the transfer to its last acknowledged chunk.',
      // An empty shard in a fraction of a second to a large, rate-limited one in tens of minutes.
      buckets: [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800],
      registers,
    });
    this.mirrorFamilies(own);
    this.registry = Registry.merge([processMetrics(), own]);
  }

  /** The exposition text, with the mirrored families showing `snap`. */
  async render(snap: MetricsSnapshot): Promise<string> {
    // Registry.metrics() calls every collect() before its first await, so a concurrent scrape
    // cannot mix its snapshot into this one's.
    this.snapshot = snap;
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  private mirrorFamilies(registry: Registry): void {
    const metrics = this;
    const mirror = (type: 'counter' | 'gauge', name: string, help: string, read: Read, labelNames: string[] = []): void => {
      // Counters cannot be set: reset and add the current total (the services' counters only grow).
      const put = (m: Counter | Gauge, labels: Labels, v: number): void => (m instanceof Counter ? m.inc(labels, v) : m.set(labels, v));
      const collect = function (this: Counter | Gauge): void {
        this.reset();
        const s = metrics.snapshot;
        const v = s === null ? null : read(s);
        if (v === null) this.remove({});
        else if (typeof v === 'number') put(this, {}, v);
        else for (const [labels, n] of v) put(this, labels, n);
      };
      const config = { name, help, labelNames, registers: [registry], collect };
      if (type === 'counter') new Counter(config);
      else new Gauge(config);
    };
    const counter = (name: string, help: string, read: Read, labelNames?: string[]): void => mirror('counter', name, help, read, labelNames);
    const gauge = (name: string, help: string, read: Read, labelNames?: string[]): void => mirror('gauge', name, help, read, labelNames);
    /** A store family: absent while the peer has no store. */
    const store =
      (read: (st: StoreMetrics) => number | Array<[Labels, number]> | null): Read =>
      (s) =>
        s.counters.store === undefined ? null : read(s.counters.store);

    counter('shoal_membership_messages_received_total', 'Membership messages accepted from the topic.', (s) => s.counters.membership.received);
    counter('shoal_membership_messages_rejected_total', 'Membership messages dropped as malformed or forged.', (s) => s.counters.membership.rejected);
    counter('shoal_membership_messages_published_total', 'Membership messages published.', (s) => s.counters.membership.published);
    counter(
      'shoal_member_transitions_total',
      'Transitions of other members into a state, as this peer saw them.',
      (s) => Object.entries(s.counters.membership.transitions).map(([to, n]) => [{ to }, n]),
      ['to'],
    );
    gauge(
      'shoal_members',
      'Members in the local table by state.',
      (s) => (['alive', 'suspect', 'dead', 'left'] as const).map((state) => [{ state }, s.status.members.filter((m) => m.state === state).length]),
      ['state'],
    );
    counter('shoal_raft_frames_sent_total', 'Raft messages sent.', (s) => s.counters.raft.framesSent);
    counter('shoal_raft_frames_received_total', 'Raft messages received.', (s) => s.counters.raft.framesReceived);
    counter('shoal_raft_frames_dropped_total', 'Raft messages dropped (queue full or peer unreachable).', (s) => s.counters.raft.framesDropped);
    counter('shoal_raft_streams_reset_total', 'Inbound raft streams reset for a bad frame.', (s) => s.counters.raft.streamsReset);
    counter('shoal_raft_frames_rejected_total', 'Raft frames refused: sender outside the Raft configuration, term far ahead, or a snapshot that does not restore.', (s) => s.counters.raft.rejected);
    counter('shoal_raft_frames_refused_total', 'Raft frames refused before sending for exceeding the frame limit.', (s) => s.counters.raft.framesRefused);
    gauge('shoal_raft_term', 'Current Raft term.', (s) => s.status.term);
    gauge('shoal_raft_commit_index', 'Raft commit index.', (s) => s.status.commitIndex);
    gauge('shoal_raft_is_leader', '1 on the coordinator.', (s) => (s.status.role === 'leader' ? 1 : 0));

    counter('shoal_store_requests_forwarded_total', 'Client operations this peer forwarded to another peer.', store((st) => st.counters.forwarded));
    counter('shoal_store_requests_served_total', 'Operations served by a replica on this peer.', store((st) => st.counters.served));
    counter('shoal_store_lease_renewals_total', 'Lease renewals granted by the coordinator.', store((st) => st.counters.leaseRenewals));
    counter('shoal_store_lease_failures_total', 'Lease renewals that failed.', store((st) => st.counters.leaseFailures));
    gauge('shoal_store_lease_valid', '1 while this peer holds a valid primary lease.', store((st) => (st.leaseValid ? 1 : 0)));
    counter('shoal_store_snapshots_sent_total', 'Shard snapshots sent to catching-up replicas.', store((st) => st.counters.snapshotsSent));
    counter('shoal_store_snapshot_bytes_sent_total', 'Value bytes this peer sent in shard snapshots (data moved to new replicas).', store((st) => st.counters.snapshotBytesSent));
    counter(
      'shoal_store_catchup_bytes_received_total',
      'Op-log bytes this peer received for replicas not yet in sync (data moved to it through catch-up).',
      store((st) => st.counters.catchUpBytesReceived),
    );
    counter(
      'shoal_store_snapshots_resumed_total',
      'Snapshot streams that went on from the last acknowledged chunk after a break or a restart of the receiver.',
      store((st) => st.counters.snapshotsResumed),
    );
    counter('shoal_store_snapshot_bytes_resumed_total', 'Snapshot bytes already at the receiver when a stream went on (not sent again).', store((st) => st.counters.snapshotBytesResumed));
    counter(
      'shoal_store_move_seconds_total',
      'Seconds spent sending completed snapshots (with shoal_store_snapshots_sent_total: the mean move duration).',
      store((st) => st.counters.moveSecondsTotal),
    );
    counter('shoal_store_copies_deleted_total', 'Data of removed replicas deleted after the grace period (30 s).', store((st) => st.counters.copiesDeleted));
    gauge('shoal_store_moves_in_flight', "Replicas being filled (not yet in sync), cluster-wide, from this peer's map.", store((st) => st.movesInFlight));
    counter('shoal_store_snapshots_installed_total', 'Shard snapshots installed here.', store((st) => st.counters.snapshotsInstalled));
    counter('shoal_store_assignments_proposed_total', 'Shard assignment commands proposed (coordinator).', store((st) => st.counters.assignmentsProposed));
    gauge(
      'shoal_store_replicas',
      'Shard replicas held here, by role.',
      store((st) => [
        [{ role: 'primary' }, st.primaries],
        [{ role: 'any' }, st.replicas],
      ]),
      ['role'],
    );
    gauge('shoal_store_primaries_serving', 'Shards this peer serves as primary right now (lease valid, reconciled or not).', store((st) => st.serving));
    counter('shoal_replication_frames_sent_total', 'Replication frames sent (each batches the messages of one event-loop turn).', store((st) => st.replication.framesSent));
    counter('shoal_replication_frames_received_total', 'Replication frames received.', store((st) => st.replication.framesReceived));
    counter('shoal_replication_frames_dropped_total', 'Replication frames dropped (queue full or peer unreachable).', store((st) => st.replication.framesDropped));
    counter('shoal_replication_streams_reset_total', 'Inbound replication streams reset for a bad frame.', store((st) => st.replication.streamsReset));
    // Coordinator only: no sample on the other peers (a 0 there would claim to know).
    gauge('shoal_store_catchups_active', 'Replicas catching up, as the coordinator sees them (coordinator only).', store((st) => st.catchUps?.active ?? null));
    gauge('shoal_store_catchups_backing_off', 'Abandoned catch-ups waiting to be retried (coordinator only).', store((st) => st.catchUps?.abandoned ?? null));
    counter('shoal_store_catchups_abandoned_total', 'Catch-ups abandoned for making no progress (coordinator only).', store((st) => st.catchUps?.abandonedTotal ?? null));
    counter(
      'shoal_replication_messages_rejected_total',
      'Replication messages the committed cluster map does not back (sender not a replica or not the primary, epoch never reached).',
      store((st) => st.counters.replicationRejected),
    );
    counter('shoal_store_requests_rejected_total', "Store, lease and snapshot requests refused for the sender's role in the cluster map.", store((st) => st.counters.requestsRejected));
    counter('shoal_replication_messages_refused_total', 'Replication messages dropped for exceeding the frame limit (should stay 0).', store((st) => st.counters.replicationRefused));
    counter('shoal_replication_frames_refused_total', 'Replication frames refused before sending for exceeding the frame limit.', store((st) => st.replication.framesRefused));

    gauge('shoal_http_body_bytes_in_flight', 'Bytes of request bodies this server holds now (bounded: beyond the budget, 503 overloaded).', (s) => s.bodyBytesInFlight);
    // libp2p's own metrics (@libp2p/prometheus-metrics 4.x) are not wired in: that module keeps
    // its metrics in a map global to the process, so with several peers in one process the
    // second peer's libp2p metrics land in the first peer's registry (preserveExistingMetrics),
    // or each new peer clears prom-client's global default registry, which belongs to the
    // program embedding Shoal (the default). One gauge covers what operators ask first.
    gauge('shoal_libp2p_connections', 'Open libp2p connections of this peer.', (s) => s.counters.libp2pConnections ?? null);
  }
}
