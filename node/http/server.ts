import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseHostPort } from '../config.js';
import type { Logger } from '../log.js';
import type { MembershipCounters } from '../membership-service.js';
import type { PeerStatus } from '../peer.js';

/** Handlers answer null while the peer is still starting (the API answers 503 then). */
export interface HttpHandlers {
  status(): PeerStatus | null;
  counters(): MembershipCounters | null;
}

export interface HttpServer {
  /** HOST:PORT actually bound (port 0 resolved). */
  readonly address: string;
  close(): Promise<void>;
}

type Route = (req: IncomingMessage, res: ServerResponse) => void;

/** An error body is always JSON `{ error, message }`. */
export function sendError(res: ServerResponse, status: number, error: string, message: string, headers: Record<string, string> = {}): void {
  sendJson(res, status, { error, message }, headers);
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

function metricsText(counters: MembershipCounters, status: PeerStatus): string {
  const byState = new Map<string, number>();
  for (const m of status.members) byState.set(m.state, (byState.get(m.state) ?? 0) + 1);
  const lines = [
    '# HELP shoal_membership_messages_received_total Membership messages accepted from the topic.',
    '# TYPE shoal_membership_messages_received_total counter',
    `shoal_membership_messages_received_total ${counters.received}`,
    '# HELP shoal_membership_messages_rejected_total Membership messages dropped as malformed or forged.',
    '# TYPE shoal_membership_messages_rejected_total counter',
    `shoal_membership_messages_rejected_total ${counters.rejected}`,
    '# HELP shoal_membership_messages_published_total Membership messages published.',
    '# TYPE shoal_membership_messages_published_total counter',
    `shoal_membership_messages_published_total ${counters.published}`,
    '# HELP shoal_member_transitions_total Transitions of other members into a state, as this peer saw them.',
    '# TYPE shoal_member_transitions_total counter',
    ...Object.entries(counters.transitions).map(([s, n]) => `shoal_member_transitions_total{to="${s}"} ${n}`),
    '# HELP shoal_members Members in the local table by state.',
    '# TYPE shoal_members gauge',
    ...['alive', 'suspect', 'dead', 'left'].map((s) => `shoal_members{state="${s}"} ${byState.get(s) ?? 0}`),
  ];
  return lines.join('\n') + '\n';
}

/** Serve the HTTP API on HOST:PORT. Resolves once listening; rejects with the listen error (e.g. EADDRINUSE). */
export async function startHttpServer(hostPort: string, handlers: HttpHandlers, log: Logger): Promise<HttpServer> {
  const { host, port } = parseHostPort(hostPort, 'http');
  const routes = new Map<string, Map<string, Route>>([
    [
      '/v1/status',
      new Map([
        [
          'GET',
          (_q, s) => {
            const status = handlers.status();
            if (status === null) return sendError(s, 503, 'starting', 'the peer is starting', { 'retry-after': '1' });
            sendJson(s, 200, status);
          },
        ],
      ]),
    ],
    ['/healthz', new Map([['GET', (_q, s) => sendJson(s, 200, { ok: true })]])],
    [
      '/metrics',
      new Map([
        [
          'GET',
          (_q, s) => {
            const counters = handlers.counters();
            const status = handlers.status();
            if (counters === null || status === null) return sendError(s, 503, 'starting', 'the peer is starting', { 'retry-after': '1' });
            const text = metricsText(counters, status);
            s.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
            s.end(text);
          },
        ],
      ]),
    ],
  ]);

  const server: Server = createServer((req, res) => {
    try {
      const path = new URL(req.url ?? '/', 'http://x').pathname;
      const methods = routes.get(path);
      if (methods === undefined) return sendError(res, 404, 'not_found', `no route ${path}`);
      const route = methods.get(req.method ?? '');
      if (route === undefined) {
        return sendError(res, 405, 'method_not_allowed', `${req.method} is not allowed on ${path}`, {
          allow: [...methods.keys()].join(', '),
        });
      }
      route(req, res);
    } catch (err) {
      log.error('http handler failed', { err });
      if (!res.headersSent) sendError(res, 500, 'internal', 'internal error');
      else res.destroy();
    }
  });
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
    address: `${shownHost}:${addr.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
