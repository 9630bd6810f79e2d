/**
 * What every HTTP request must show before a route sees it (DESIGN §4a, issue 9): a Host header
 * naming this peer (an IP literal, `localhost`, or a name the operator allowed), so a web page
 * whose own name was made to resolve to 127.0.0.1 (DNS rebinding) is refused; and, on requests
 * that change state, no foreign Origin, so another site's page cannot make the operator's
 * browser write keys or stop the peer. The admin actions (`POST /v1/leave`, `/v1/drain`,
 * `/v1/capacity`, `PUT /v1/cluster/members/{id}`) also need a JSON content type, which a page
 * cannot send cross-origin without a preflight this server never answers.
 *
 * A pure function of the request's method, path and headers; the server maps a refusal to 4xx.
 */
import { timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';
import { isDashboardAssetPath } from './dashboard.js';

export interface GuardOptions {
  /** Host names (lower case, without port) accepted besides IP literals and `localhost`. */
  allowedHosts: readonly string[];
  /**
   * When set (`--http-token-file`), every request except `GET`/`HEAD` of `/healthz` and of the
   * dashboard's static files (`/`, `/dashboard/*`) must carry
   * `Authorization: Bearer <token>`; otherwise 401.
   */
  bearerToken?: string | null;
}

export interface GuardRefusal {
  status: 400 | 401 | 403 | 415 | 421;
  code: string;
  message: string;
}

const STATE_CHANGING = new Set(['POST', 'PUT', 'DELETE', 'PATCH']);
/** Admin actions a web page must not be able to trigger with a simple (preflight-free) request. */
const ADMIN_POSTS = new Set(['/v1/leave', '/v1/drain', '/v1/capacity']);

/** The host part of a Host header value (`name:port`, `[v6]:port`, `name`), lower case; null when malformed. */
export function hostOf(value: string): string | null {
  const v = value.trim().toLowerCase();
  if (v.length === 0 || v.length > 260) return null;
  if (v.startsWith('[')) {
    const end = v.indexOf(']');
    if (end < 0) return null;
    const rest = v.slice(end + 1);
    if (rest !== '' && !/^:\d{1,5}$/.test(rest)) return null;
    return v.slice(1, end);
  }
  const colon = v.lastIndexOf(':');
  const host = colon < 0 ? v : v.slice(0, colon);
  if (colon >= 0 && !/^\d{1,5}$/.test(v.slice(colon + 1))) return null;
  if (!/^[a-z0-9.-]+$/.test(host)) return null;
  return host;
}

function hostAllowed(host: string, opts: GuardOptions): boolean {
  return isIP(host) !== 0 || host === 'localhost' || opts.allowedHosts.includes(host);
}

/** A bearer token as `--http-token-file` holds it (trimmed): 16 to 4096 visible ASCII characters. */
export function isValidHttpToken(token: string): boolean {
  return /^[\x21-\x7e]{16,4096}$/.test(token);
}

/** Constant-time comparison of an Authorization header with the expected bearer token. */
function bearerMatches(header: string | undefined, token: string): boolean {
  if (header === undefined) return false;
  const m = /^Bearer +(\S+) *$/i.exec(header);
  if (m === null) return false;
  const got = Buffer.from(m[1] as string);
  const want = Buffer.from(token);
  // Compare equal-length buffers only; the length itself is not secret (tokens are >= 16 characters).
  return got.length === want.length && timingSafeEqual(got, want);
}

/** Null when the request may proceed; otherwise why not. */
export function checkRequest(
  method: string,
  path: string,
  headers: { host?: string | undefined; origin?: string | undefined; 'content-type'?: string | undefined; authorization?: string | undefined },
  opts: GuardOptions,
): GuardRefusal | null {
  const rawHost = headers.host;
  if (rawHost === undefined) return { status: 400, code: 'bad_request', message: 'a Host header is required' };
  const host = hostOf(rawHost);
  if (host === null) return { status: 400, code: 'bad_request', message: 'the Host header is malformed' };
  if (!hostAllowed(host, opts)) {
    return {
      status: 421,
      code: 'misdirected_request',
      message: `Host ${JSON.stringify(host)} is not this peer: use its IP address or localhost, or allow the name with --http-allowed-host`,
    };
  }
  const token = opts.bearerToken ?? null;
  // /healthz and the dashboard's static files (no cluster data in them) need no token.
  const open = (method === 'GET' || method === 'HEAD') && (path === '/healthz' || isDashboardAssetPath(path));
  if (token !== null && !open && !bearerMatches(headers.authorization, token)) {
    return {
      status: 401,
      code: 'unauthorized',
      message:
        headers.authorization === undefined
          ? 'this peer needs Authorization: Bearer <token> (the --http-token-file of the peer; shoal commands take --http-token-file)'
          : 'the bearer token is wrong',
    };
  }
  if (STATE_CHANGING.has(method) && headers.origin !== undefined) {
    let originHost: string | null = null;
    try {
      const u = new URL(headers.origin);
      if (u.protocol === 'http:' || u.protocol === 'https:') originHost = hostOf(u.host);
    } catch {
      originHost = null;
    }
    if (originHost === null || !hostAllowed(originHost, opts)) {
      return { status: 403, code: 'forbidden_origin', message: `requests from the web origin ${JSON.stringify(headers.origin)} may not change state` };
    }
  }
  if ((method === 'POST' && ADMIN_POSTS.has(path)) || (method === 'PUT' && path.startsWith('/v1/cluster/members/'))) {
    const type = (headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    if (type !== 'application/json') {
      return { status: 415, code: 'unsupported_media_type', message: `${method} ${path} needs Content-Type: application/json (the shoal commands send it)` };
    }
  }
  return null;
}
