import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseHostPort } from '../config.js';
import type { Logger } from '../log.js';
import type { MembershipCounters } from '../membership-service.js';
import type { ChannelCounters } from '../stream-channel.js';
import { checkRequest, type GuardOptions } from './request-guard.js';
import type { PeerStatus } from '../peer.js';
import type { ClusterMapView } from '../../protocols/cluster-map/types.js';
import type { StoreLimits } from '../store-api.js';
import type { DrainStatus, MoveInfo } from '../store-service.js';
import { ClientGoneError, HttpError } from './http-error.js';
import { DASHBOARD_HEADERS, dashboardSnapshot, loadDashboardAssets, PhiHistory } from './dashboard.js';
import {
  handleKvDelete,
  handleKvGet,
  handleKvPut,
  handleShards,
  parseQuery,
  httpErrorFromStore,
  markContinueOwed,
  readBoundedBody,
  type BodyBudget,
  splitRequestTarget,
  type HttpKv,
  type KvRouteDeps,
} from './kv-routes.js';

export { ClientGoneError, HttpError };

/** Handlers answer null while the peer is still starting (the API answers 503 then). */
export interface HttpHandlers {
  status(): PeerStatus | null;
  /** What keeps the peer from doing its part (empty: healthy), or null while it starts. /healthz answers 503 with them. */
  health?(): string[] | null;
  counters(): { membership: MembershipCounters; raft: RaftCounters; store?: StoreMetrics } | null;
  clusterMap(): ClusterMapView | null;
  /** Start a graceful stop of this peer (hand over, announce left, exit); returns at once. */
  leave(): void;
  /** Change a member's capacity through the coordinator; resolves to the new map version. Throws HttpError. */
  updateMember(peerId: string, change: { capacity: number }): Promise<number>;
  /** The key-value store with its shard table (`/v1/kv/...`, `/v1/shards`); null while the peer starts (503 `starting`). */
  kv(): HttpKv | null;
  /** Limits the peer enforces on keys and values. */
  limits(): StoreLimits;
  /** Drain this peer (move its replicas to others) or stop draining; null while it starts. */
  drain?(on: boolean): DrainStatus | null;
  drainStatus?(): DrainStatus | null;
  /** Change the capacity this peer reports (its share of replicas follows); null while it starts. */
  setCapacity?(capacity: number): boolean | null;
  /** Replicas being filled; null while the peer starts. */
  moves?(): MoveInfo[] | null;
  /** Tasks (`/v1/tasks`); null while the peer starts. */
  tasks?(): HttpTasks | null;
  /** The autoscaler's mode, policy and last decisions; null while the peer starts. */
  autoscaler?(): unknown;
}

/** What the task routes need (node/task-service.ts). */
export interface HttpTasks {
  submit(body: unknown): Promise<string>;
  get(id: string): Promise<unknown>;
  list(state?: TaskStateName): Promise<unknown[]>;
  cancel(id: string): Promise<boolean>;
  schedulerStatus(): unknown;
}

export type TaskStateName = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';
const TASK_STATES: readonly TaskStateName[] = ['queued', 'running', 'succeeded', 'failed', 'cancelled'];

/** Task errors as HTTP: a bad field 400 naming it, an unknown task 404, a full queue 429, no coordinator 503. */
async function taskCall<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    const e = err as { name?: string; code?: string; field?: string; message?: string };
    if (e.name === 'TaskInputError') throw new HttpError(400, 'invalid_task', e.message ?? 'bad task', {}, { field: e.field });
    if (e.name === 'TaskError') {
      const status = e.code === 'invalid_task' ? 400 : e.code === 'not_found' ? 404 : e.code === 'queue_full' ? 429 : 503;
      throw new HttpError(status, e.code ?? 'unavailable', e.message ?? '', status === 503 || status === 429 ? { 'retry-after': '1' } : {});
    }
    throw err;
  }
}

export interface HttpServer {
  /** Bytes of request bodies held now (see HttpServerLimits.maxBodyBytesInFlight). */
  bodyBytesInFlight(): number;
  /** HOST:PORT actually bound (port 0 resolved). */
  readonly address: string;
  close(): Promise<void>;
}


/** An error body is always JSON `{ error, message }`. */
export function sendError(res: ServerResponse, status: number, error: string, message: string, headers: Record<string, string> = {}): void {
  sendJson(res, status, { error, message }, headers);
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

type MetricType = 'counter' | 'gauge';

/** One Prometheus metric family: HELP, TYPE and its samples (label string → value). */
function family(name: string, type: MetricType, help: string, samples: Array<[string, number]>): string[] {
  return [`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, ...samples.map(([labels, v]) => `${name}${labels} ${v}`)];
}

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

function storeLines(st: StoreMetrics): string[] {
  const c = st.counters;
  return [
    ...family('shoal_store_requests_forwarded_total', 'counter', 'Client operations this peer forwarded to another peer.', [['', c.forwarded]]),
    ...family('shoal_store_requests_served_total', 'counter', 'Operations served by a replica on this peer.', [['', c.served]]),
    ...family('shoal_store_lease_renewals_total', 'counter', 'Lease renewals granted by the coordinator.', [['', c.leaseRenewals]]),
    ...family('shoal_store_lease_failures_total', 'counter', 'Lease renewals that failed.', [['', c.leaseFailures]]),
    ...family('shoal_store_lease_valid', 'gauge', '1 while this peer holds a valid primary lease.', [['', st.leaseValid ? 1 : 0]]),
    ...family('shoal_store_snapshots_sent_total', 'counter', 'Shard snapshots sent to catching-up replicas.', [['', c.snapshotsSent]]),
    ...family('shoal_store_snapshot_bytes_sent_total', 'counter', 'Value bytes this peer sent in shard snapshots (data moved to new replicas).', [['', c.snapshotBytesSent]]),
    ...family('shoal_store_catchup_bytes_received_total', 'counter', 'Op-log bytes this peer received for replicas not yet in sync (data moved to it through catch-up).', [['', c.catchUpBytesReceived]]),
    ...family('shoal_store_snapshots_resumed_total', 'counter', 'Snapshot streams that went on from the last acknowledged chunk after a break or a restart of the receiver.', [['', c.snapshotsResumed]]),
    ...family('shoal_store_snapshot_bytes_resumed_total', 'counter', 'Snapshot bytes already at the receiver when a stream went on (not sent again).', [['', c.snapshotBytesResumed]]),
    ...family('shoal_store_move_seconds_total', 'counter', 'Seconds spent sending completed snapshots (with shoal_store_snapshots_sent_total: the mean move duration).', [['', c.moveSecondsTotal]]),
    ...family('shoal_store_copies_deleted_total', 'counter', 'Data of removed replicas deleted after the grace period (30 s).', [['', c.copiesDeleted]]),
    ...family('shoal_store_moves_in_flight', 'gauge', 'Replicas being filled (not yet in sync), cluster-wide, from this peer\'s map.', [['', st.movesInFlight]]),
    ...family('shoal_store_snapshots_installed_total', 'counter', 'Shard snapshots installed here.', [['', c.snapshotsInstalled]]),
    ...family('shoal_store_assignments_proposed_total', 'counter', 'Shard assignment commands proposed (coordinator).', [['', c.assignmentsProposed]]),
    ...family('shoal_store_replicas', 'gauge', 'Shard replicas held here, by role.', [
      ['{role="primary"}', st.primaries],
      ['{role="any"}', st.replicas],
    ]),
    ...family('shoal_store_primaries_serving', 'gauge', 'Shards this peer serves as primary right now (lease valid, reconciled or not).', [['', st.serving]]),
    ...family('shoal_replication_frames_sent_total', 'counter', 'Replication frames sent (each batches the messages of one event-loop turn).', [['', st.replication.framesSent]]),
    ...family('shoal_replication_frames_received_total', 'counter', 'Replication frames received.', [['', st.replication.framesReceived]]),
    ...family('shoal_replication_frames_dropped_total', 'counter', 'Replication frames dropped (queue full or peer unreachable).', [['', st.replication.framesDropped]]),
    ...family('shoal_replication_streams_reset_total', 'counter', 'Inbound replication streams reset for a bad frame.', [['', st.replication.streamsReset]]),
    ...(st.catchUps === null
      ? []
      : [
          ...family('shoal_store_catchups_active', 'gauge', 'Replicas catching up, as the coordinator sees them (coordinator only).', [['', st.catchUps.active]]),
          ...family('shoal_store_catchups_backing_off', 'gauge', 'Abandoned catch-ups waiting to be retried (coordinator only).', [['', st.catchUps.abandoned]]),
          ...family('shoal_store_catchups_abandoned_total', 'counter', 'Catch-ups abandoned for making no progress (coordinator only).', [['', st.catchUps.abandonedTotal]]),
        ]),
    ...family('shoal_replication_messages_rejected_total', 'counter', 'Replication messages the committed cluster map does not back (sender not a replica or not the primary, epoch never reached).', [['', c.replicationRejected]]),
    ...family('shoal_store_requests_rejected_total', 'counter', 'Store, lease and snapshot requests refused for the sender\'s role in the cluster map.', [['', c.requestsRejected]]),
    ...family('shoal_replication_messages_refused_total', 'counter', 'Replication messages dropped for exceeding the frame limit (should stay 0).', [['', c.replicationRefused]]),
    ...family('shoal_replication_frames_refused_total', 'counter', 'Replication frames refused before sending for exceeding the frame limit.', [['', st.replication.framesRefused]]),
  ];
}

function metricsText(
  { membership: m, raft, store }: { membership: MembershipCounters; raft: RaftCounters; store?: StoreMetrics },
  status: PeerStatus,
): string {
  const byState = new Map<string, number>();
  for (const mem of status.members) byState.set(mem.state, (byState.get(mem.state) ?? 0) + 1);
  const states = ['alive', 'suspect', 'dead', 'left'];
  const lines = [
    ...family('shoal_membership_messages_received_total', 'counter', 'Membership messages accepted from the topic.', [['', m.received]]),
    ...family('shoal_membership_messages_rejected_total', 'counter', 'Membership messages dropped as malformed or forged.', [['', m.rejected]]),
    ...family('shoal_membership_messages_published_total', 'counter', 'Membership messages published.', [['', m.published]]),
    ...family(
      'shoal_member_transitions_total',
      'counter',
      'Transitions of other members into a state, as this peer saw them.',
      Object.entries(m.transitions).map(([state, n]) => [`{to="${state}"}`, n]),
    ),
    ...family('shoal_members', 'gauge', 'Members in the local table by state.', states.map((st) => [`{state="${st}"}`, byState.get(st) ?? 0])),
    ...family('shoal_raft_frames_sent_total', 'counter', 'Raft messages sent.', [['', raft.framesSent]]),
    ...family('shoal_raft_frames_received_total', 'counter', 'Raft messages received.', [['', raft.framesReceived]]),
    ...family('shoal_raft_frames_dropped_total', 'counter', 'Raft messages dropped (queue full or peer unreachable).', [['', raft.framesDropped]]),
    ...family('shoal_raft_streams_reset_total', 'counter', 'Inbound raft streams reset for a bad frame.', [['', raft.streamsReset]]),
    ...family('shoal_raft_frames_rejected_total', 'counter', 'Raft frames refused: sender outside the Raft configuration, term far ahead, or a snapshot that does not restore.', [['', raft.rejected]]),
    ...family('shoal_raft_frames_refused_total', 'counter', 'Raft frames refused before sending for exceeding the frame limit.', [['', raft.framesRefused]]),
    ...family('shoal_raft_term', 'gauge', 'Current Raft term.', [['', status.term]]),
    ...family('shoal_raft_commit_index', 'gauge', 'Raft commit index.', [['', status.commitIndex]]),
    ...family('shoal_raft_is_leader', 'gauge', '1 on the coordinator.', [['', status.role === 'leader' ? 1 : 0]]),
    ...(store === undefined ? [] : storeLines(store)),
  ];
  return lines.join('\n') + '\n';
}

/**
 * A handler; `params` holds the raw (still percent-encoded) captured path segments. Thrown
 * HttpErrors and StoreErrors become JSON errors.
 */
type Handler = (req: IncomingMessage, res: ServerResponse, params: string[]) => void | Promise<void>;

/** Largest JSON request body, bytes. */
const MAX_JSON_BODY_BYTES = 64 * 1024;

/** Read and parse a JSON body (bounded); 400 or 413 on bad input. */
export async function readJsonBody(req: IncomingMessage, maxBytes = MAX_JSON_BODY_BYTES): Promise<unknown> {
  const body = await readBoundedBody(req, maxBytes, () => new HttpError(413, 'too_large', `request body over ${maxBytes} bytes`));
  try {
    return JSON.parse(body.toString('utf8')) as unknown;
  } catch {
    throw new HttpError(400, 'bad_request', 'request body is not valid JSON');
  }
}

function notStarting<T>(value: T | null): T {
  if (value === null) throw new HttpError(503, 'starting', 'the peer is starting', { 'retry-after': '1' });
  return value;
}

/** Serve the HTTP API on HOST:PORT. Resolves once listening; rejects with the listen error (e.g. EADDRINUSE). */
/** Bounds of one HTTP server (DESIGN §5: a limit on everything). */
export interface HttpServerLimits {
  /** Open connections at once; more are closed as they arrive. Default 512. */
  maxConnections: number;
  /** Bytes of request bodies held at once, all requests together; beyond it 503 `overloaded`. Default 64 MiB: 64 maximal values in flight. */
  maxBodyBytesInFlight: number;
}

export const DEFAULT_HTTP_SERVER_LIMITS: Readonly<HttpServerLimits> = Object.freeze({ maxConnections: 512, maxBodyBytesInFlight: 64 * 1024 * 1024 });

export async function startHttpServer(
  hostPort: string,
  handlers: HttpHandlers,
  log: Logger,
  guard: GuardOptions = { allowedHosts: [] },
  limits: HttpServerLimits = DEFAULT_HTTP_SERVER_LIMITS,
): Promise<HttpServer> {
  const { host, port } = parseHostPort(hostPort, 'http');
  const bodyBudget: BodyBudget = { maxBytes: limits.maxBodyBytesInFlight, usedBytes: 0 };
  const kvDeps: KvRouteDeps = { kv: () => handlers.kv(), limits: () => handlers.limits(), bodyBudget };
  /** Answered KV requests by operation and status, for /metrics. */
  const kvRequests = new Map<string, number>();
  const countKv = (res: ServerResponse, op: string): void => {
    res.once('finish', () => {
      const k = `{op="${op}",status="${res.statusCode}"}`;
      kvRequests.set(k, (kvRequests.get(k) ?? 0) + 1);
    });
  };

  /** Requests refused before routing (Host, Origin, content type: see request-guard.ts). */
  let refused = 0;

  // The dashboard (node/http/dashboard.ts): its files, and each member's phi sampled every second.
  const assets = loadDashboardAssets();
  if (typeof assets === 'string') log.warn('dashboard unavailable', { reason: assets });
  const phiHistory = new PhiHistory();
  const phiSampler = setInterval(() => {
    try {
      const st = handlers.status();
      if (st !== null) phiHistory.record(st.members);
    } catch (err) {
      log.debug('phi sample failed', { err });
    }
  }, 1000);
  phiSampler.unref();
  const serveAsset: Handler = (req, s) => {
    const { path } = splitRequestTarget(req.url);
    if (typeof assets === 'string') throw new HttpError(503, 'dashboard_unavailable', assets);
    const a = assets.get(path === '/index.html' ? '/' : path);
    if (a === undefined) throw new HttpError(404, 'not_found', `no dashboard file ${path}`);
    s.writeHead(200, { ...DASHBOARD_HEADERS, 'content-type': a.type, 'content-length': a.body.length });
    s.end(req.method === 'HEAD' ? undefined : a.body);
  };

  const routes: Array<{ pattern: RegExp; methods: Record<string, Handler> }> = [
    { pattern: /^\/(?:index\.html)?$/, methods: { GET: serveAsset, HEAD: serveAsset } },
    { pattern: /^\/dashboard\/[^/]+$/, methods: { GET: serveAsset, HEAD: serveAsset } },
    {
      pattern: /^\/v1\/dashboard$/,
      methods: { GET: (_q, s) => sendJson(s, 200, notStarting(dashboardSnapshot(handlers, phiHistory)), { 'cache-control': 'no-store' }) },
    },
    { pattern: /^\/v1\/status$/, methods: { GET: (_q, s) => sendJson(s, 200, notStarting(handlers.status())) } },
    {
      pattern: /^\/healthz$/,
      methods: {
        GET: (_q, s) => {
          const problems = handlers.health?.() ?? ['the peer is starting'];
          if (problems.length === 0) return sendJson(s, 200, { ok: true });
          sendJson(s, 503, { ok: false, problems }, { 'retry-after': '1' });
        },
      },
    },
    {
      pattern: /^\/metrics$/,
      methods: {
        GET: (_q, s) => {
          const text =
            metricsText(notStarting(handlers.counters()), notStarting(handlers.status())) +
            family('shoal_http_kv_requests_total', 'counter', 'Key-value requests answered, by operation and HTTP status.', [...kvRequests].sort()).join('\n') +
            '\n' +
            family('shoal_http_body_bytes_in_flight', 'gauge', 'Bytes of request bodies this server holds now (bounded: beyond the budget, 503 overloaded).', [['', bodyBudget.usedBytes]]).join('\n') +
            '\n' +
            family('shoal_http_requests_refused_total', 'counter', 'HTTP requests refused before routing: Host not this peer, a foreign Origin on a state change, /v1/leave without JSON.', [['', refused]]).join('\n') +
            '\n';
          s.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
          s.end(text);
        },
      },
    },
    {
      pattern: /^\/v1\/leave$/,
      methods: {
        POST: (_q, s) => {
          handlers.leave();
          sendJson(s, 202, { leaving: true });
        },
      },
    },
    {
      pattern: /^\/v1\/drain$/,
      methods: {
        GET: (_q, s) => sendJson(s, 200, notStarting(handlers.drainStatus?.() ?? null)),
        POST: async (req, s) => {
          const body = await readJsonBody(req);
          const cancel = (body as { cancel?: unknown } | null)?.cancel;
          if (typeof body !== 'object' || body === null || Array.isArray(body) || (cancel !== undefined && typeof cancel !== 'boolean')) {
            throw new HttpError(400, 'bad_request', 'expected a JSON body {} to drain, or { "cancel": true } to stop draining');
          }
          sendJson(s, 202, notStarting(handlers.drain?.(cancel !== true) ?? null));
        },
      },
    },
    {
      pattern: /^\/v1\/capacity$/,
      methods: {
        POST: async (req, s) => {
          const body = await readJsonBody(req);
          const capacity = (body as { capacity?: unknown } | null)?.capacity;
          if (typeof body !== 'object' || body === null || Array.isArray(body) || typeof capacity !== 'number' || !Number.isFinite(capacity) || capacity <= 0 || capacity > 1024) {
            throw new HttpError(400, 'bad_request', 'expected a JSON body { "capacity": <number above 0, at most 1024> }');
          }
          notStarting(handlers.setCapacity?.(capacity) ?? null);
          sendJson(s, 202, { capacity });
        },
      },
    },
    {
      pattern: /^\/v1\/tasks$/,
      methods: {
        POST: async (req, s) => {
          const body = await readJsonBody(req);
          const id = await taskCall(() => notStarting(handlers.tasks?.() ?? null).submit(body));
          sendJson(s, 202, { id });
        },
        GET: async (req, s) => {
          const q = parseQuery((req.url ?? '').split('?')[1] ?? '', ['state'], 'GET');
          const state = q.get('state');
          if (state !== undefined && !(TASK_STATES as readonly string[]).includes(state)) {
            throw new HttpError(400, 'invalid_request', `state must be one of ${TASK_STATES.join(', ')}, got ${JSON.stringify(state)}`);
          }
          const tasks = await taskCall(() => notStarting(handlers.tasks?.() ?? null).list(state as TaskStateName | undefined));
          sendJson(s, 200, { tasks });
        },
      },
    },
    {
      pattern: /^\/v1\/tasks\/([^/]{1,64})$/,
      methods: {
        GET: async (_q, s, [id]) => {
          const rec = await taskCall(() => notStarting(handlers.tasks?.() ?? null).get(id as string));
          if (rec === null) throw new HttpError(404, 'not_found', `no task ${id as string}`);
          sendJson(s, 200, rec);
        },
        DELETE: async (_q, s, [id]) => {
          const cancelled = await taskCall(() => notStarting(handlers.tasks?.() ?? null).cancel(id as string));
          sendJson(s, 200, { id, cancelled });
        },
      },
    },
    { pattern: /^\/v1\/autoscaler$/, methods: { GET: (_q, s) => sendJson(s, 200, { autoscaler: notStarting(handlers.autoscaler?.() ?? null) }) } },
    { pattern: /^\/v1\/scheduler$/, methods: { GET: (_q, s) => sendJson(s, 200, { scheduler: notStarting(handlers.tasks?.() ?? null).schedulerStatus() }) } },
    { pattern: /^\/v1\/moves$/, methods: { GET: (_q, s) => sendJson(s, 200, { moves: notStarting(handlers.moves?.() ?? null) }) } },
    { pattern: /^\/v1\/cluster$/, methods: { GET: (_q, s) => sendJson(s, 200, notStarting(handlers.clusterMap())) } },
    {
      pattern: /^\/v1\/cluster\/members\/([^/]{1,256})$/,
      methods: {
        PUT: async (req, s, [rawPeerId]) => {
          let peerId: string;
          try {
            peerId = decodeURIComponent(rawPeerId as string);
          } catch {
            throw new HttpError(400, 'bad_request', 'the peer id is not well-formed percent-encoding');
          }
          const body = await readJsonBody(req);
          const capacity = (body as { capacity?: unknown } | null)?.capacity;
          if (typeof body !== 'object' || body === null || Array.isArray(body) || typeof capacity !== 'number' || !Number.isFinite(capacity) || capacity <= 0) {
            throw new HttpError(400, 'bad_request', 'expected a JSON body { "capacity": <positive number> }');
          }
          const version = await handlers.updateMember(peerId, { capacity });
          sendJson(s, 200, { ok: true, clusterMapVersion: version });
        },
      },
    },
    // The key is the rest of the path (raw `/` kept, `%2F` decoded); `/v1/kv` and `/v1/kv/` name the empty key (400).
    {
      pattern: /^\/v1\/kv(?:\/.*)?$/s,
      methods: {
        GET: (q, s) => (countKv(s, 'get'), handleKvGet(q, s, kvDeps)),
        HEAD: (q, s) => (countKv(s, 'get'), handleKvGet(q, s, kvDeps)),
        PUT: (q, s) => (countKv(s, 'put'), handleKvPut(q, s, kvDeps)),
        DELETE: (q, s) => (countKv(s, 'delete'), handleKvDelete(q, s, kvDeps)),
      },
    },
    { pattern: /^\/v1\/shards$/, methods: { GET: (q, s) => handleShards(q, s, kvDeps) } },
  ];

  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const fail = (err: unknown): void => {
      if (err instanceof ClientGoneError || res.destroyed || req.socket.destroyed) {
        // Nobody is left to answer.
        res.destroy();
        return;
      }
      if (res.headersSent) {
        res.destroy();
        return;
      }
      const httpErr = err instanceof HttpError ? err : httpErrorFromStore(err);
      if (httpErr !== null) {
        return sendJson(res, httpErr.status, { error: httpErr.code, message: httpErr.message, ...httpErr.extra }, httpErr.headers);
      }
      log.error('http handler failed', { err });
      sendError(res, 500, 'internal', 'internal error');
    };
    try {
      const { path } = splitRequestTarget(req.url);
      const refusal = checkRequest(req.method ?? '', path, req.headers, guard);
      if (refusal !== null) {
        refused++;
        return sendError(res, refusal.status, refusal.code, refusal.message, refusal.status === 401 ? { 'www-authenticate': 'Bearer realm="shoal"' } : {});
      }
      let match: RegExpExecArray | null = null;
      const route = routes.find((r) => (match = r.pattern.exec(path)) !== null);
      if (route === undefined || match === null) return sendError(res, 404, 'not_found', `no route ${path}`);
      const handler = route.methods[req.method ?? ''];
      if (handler === undefined) {
        return sendError(res, 405, 'method_not_allowed', `${req.method} is not allowed on ${path}`, {
          allow: Object.keys(route.methods).join(', '),
        });
      }
      const params = (match as RegExpExecArray).slice(1);
      Promise.resolve()
        .then(() => handler(req, res, params))
        .catch(fail);
    } catch (err) {
      fail(err);
    }
  };
  const server: Server = createServer(onRequest);
  // `Expect: 100-continue`: the 100 goes out only when a handler reads the body (see readBoundedBody).
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    markContinueOwed(req, res);
    onRequest(req, res);
  });
  server.maxConnections = limits.maxConnections;
  server.keepAliveTimeout = 5000;
  server.headersTimeout = 10000;
  server.requestTimeout = 30000;

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => log.error('http server error', { err }));
  const addr = server.address() as AddressInfo;
  const shownHost = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  return {
    bodyBytesInFlight: () => bodyBudget.usedBytes,
    address: `${shownHost}:${addr.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        clearInterval(phiSampler);
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
