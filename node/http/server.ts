import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseHostPort } from '../config.js';
import type { Logger } from '../log.js';
import { PeerMetrics, type HttpOp, type PeerCounters } from '../metrics.js';
import { performance } from 'node:perf_hooks';
import { checkRequest, type GuardOptions } from './request-guard.js';
import type { PeerStatus } from '../peer.js';
import type { ClusterMapView } from '../../protocols/cluster-map/types.js';
import type { StoreLimits } from '../store-api.js';
import type { DrainStatus, MoveInfo } from '../store-service.js';
import { ClientGoneError, HttpError } from './http-error.js';
import { DASHBOARD_ASSET_PATH, DASHBOARD_HEADERS, dashboardSnapshot, loadDashboardAssets, PhiHistory } from './dashboard.js';
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
  counters(): PeerCounters | null;
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

export type { RaftCounters, StoreMetrics } from '../metrics.js';

/**
 * A handler; `params` holds the raw (still percent-encoded) captured path segments. Thrown
 * HttpErrors and StoreErrors become JSON errors.
 */
type Handler = (req: IncomingMessage, res: ServerResponse, params: string[]) => void | Promise<void>;
type Route = { pattern: RegExp; methods: Record<string, Handler> };

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
  metrics: PeerMetrics = new PeerMetrics(),
): Promise<HttpServer> {
  const { host, port } = parseHostPort(hostPort, 'http');
  const bodyBudget: BodyBudget = { maxBytes: limits.maxBodyBytesInFlight, usedBytes: 0 };
  const kvDeps: KvRouteDeps = { kv: () => handlers.kv(), limits: () => handlers.limits(), bodyBudget };
  // The key is the rest of the path (raw `/` kept, `%2F` decoded); `/v1/kv` and `/v1/kv/` name the empty key (400).
  const kvRoute: Route = {
    pattern: /^\/v1\/kv(?:\/.*)?$/s,
    methods: {
      GET: (q, s) => handleKvGet(q, s, kvDeps),
      HEAD: (q, s) => handleKvGet(q, s, kvDeps),
      PUT: (q, s) => handleKvPut(q, s, kvDeps),
      DELETE: (q, s) => handleKvDelete(q, s, kvDeps),
    },
  };

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
  const serveAsset: Handler = (req, s, [path = '/']) => {
    if (typeof assets === 'string') throw new HttpError(503, 'dashboard_unavailable', assets);
    const a = assets.get(path === '/index.html' ? '/' : path);
    if (a === undefined) throw new HttpError(404, 'not_found', `no dashboard file ${path}`);
    s.writeHead(200, { ...DASHBOARD_HEADERS, 'content-type': a.type, 'content-length': a.body.length });
    s.end(req.method === 'HEAD' ? undefined : a.body);
  };

  const kvOps: Record<string, HttpOp> = { GET: 'get', HEAD: 'get', PUT: 'put', DELETE: 'delete' };
  const routes: Route[] = [
    { pattern: DASHBOARD_ASSET_PATH, methods: { GET: serveAsset, HEAD: serveAsset } },
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
        GET: async (_q, s) => {
          const text = await metrics.render({
            counters: notStarting(handlers.counters()),
            status: notStarting(handlers.status()),
            bodyBytesInFlight: bodyBudget.usedBytes,
          });
          s.writeHead(200, { 'content-type': metrics.contentType, 'content-length': Buffer.byteLength(text) });
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
    kvRoute,
    { pattern: /^\/v1\/shards$/, methods: { GET: (q, s) => handleShards(q, s, kvDeps) } },
  ];

  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const startedMs = performance.now();
    /** The key-value operation once the request is routed to one; `other` for every other request. */
    let op: HttpOp = 'other';
    res.once('finish', () => {
      const status = res.statusCode;
      metrics.httpRequestDuration.observe({ op, status: `${Math.floor(status / 100)}xx` }, (performance.now() - startedMs) / 1000);
      if (op !== 'other') metrics.httpKvRequests.inc({ op, status: String(status) });
    });
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
        metrics.httpRequestsRefused.inc();
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
      if (route === kvRoute) op = kvOps[req.method ?? ''] ?? 'other';
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
