import assert from 'node:assert/strict';
import { checkRequest, hostOf } from '../../node/http/request-guard.js';

const opts = { allowedHosts: ['shoal.internal'] };
const status = (method: string, path: string, headers: Record<string, string>): number | null => checkRequest(method, path, headers, opts)?.status ?? null;

describe('HTTP request guard', () => {
  it('reads the host of a Host header: names, IPv4, IPv6 in brackets, with or without a port', () => {
    assert.equal(hostOf('127.0.0.1:7070'), '127.0.0.1');
    assert.equal(hostOf('LocalHost'), 'localhost');
    assert.equal(hostOf('[::1]:7070'), '::1');
    assert.equal(hostOf('evil.example:7070'), 'evil.example');
    for (const bad of ['', 'a b', 'x:port', '[::1', '[::1]x', 'a:1:2:3x', 'é.example']) assert.equal(hostOf(bad), null, bad);
  });

  it('accepts IP literals, localhost and allowed names; refuses other names (DNS rebinding) with 421', () => {
    for (const host of ['127.0.0.1:7070', '10.1.2.3', '[::1]:7070', 'localhost:7070', 'shoal.internal:7070']) {
      assert.equal(status('GET', '/v1/kv/a', { host }), null, host);
    }
    assert.equal(status('GET', '/v1/kv/a', { host: 'evil.example:7070' }), 421);
    assert.equal(status('GET', '/v1/kv/a', {}), 400);
    assert.equal(status('GET', '/v1/kv/a', { host: 'bad host' }), 400);
  });

  it('refuses a foreign Origin on state-changing requests (403), not on reads or without an Origin', () => {
    const host = '127.0.0.1:7070';
    assert.equal(status('PUT', '/v1/kv/a', { host, origin: 'http://evil.example' }), 403);
    assert.equal(status('DELETE', '/v1/kv/a', { host, origin: 'https://evil.example:8443' }), 403);
    assert.equal(status('PUT', '/v1/kv/a', { host, origin: 'null' }), 403);
    assert.equal(status('PUT', '/v1/kv/a', { host, origin: 'http://127.0.0.1:7070' }), null, 'the dashboard on the peer itself');
    assert.equal(status('PUT', '/v1/kv/a', { host }), null, 'CLI and programs send no Origin');
    assert.equal(status('GET', '/v1/kv/a', { host, origin: 'http://evil.example' }), null, 'a read is answered; CORS keeps the page from seeing it');
  });

  it('takes POST /v1/leave only with a JSON content type (415 otherwise: a page cannot send it cross-origin)', () => {
    const host = '127.0.0.1:7070';
    assert.equal(status('POST', '/v1/leave', { host, 'content-type': 'text/plain' }), 415);
    assert.equal(status('POST', '/v1/leave', { host }), 415);
    assert.equal(status('POST', '/v1/leave', { host, 'content-type': 'application/json; charset=utf-8' }), null);
    for (const [m, p] of [['POST', '/v1/drain'], ['POST', '/v1/capacity'], ['PUT', '/v1/cluster/members/abc']]) {
      assert.equal(status(m as string, p as string, { host, 'content-type': 'text/plain' }), 415, `${m} ${p}`);
      assert.equal(status(m as string, p as string, { host, 'content-type': 'application/json' }), null, `${m} ${p}`);
    }
  });
});

describe('HTTP request guard: bearer token', () => {
  const token = 'correct-horse-battery-staple-42';
  const withToken = { allowedHosts: [], bearerToken: token };
  const host = '127.0.0.1:7070';
  const check = (method: string, path: string, authorization?: string): number | null =>
    checkRequest(method, path, { host, ...(authorization !== undefined ? { authorization } : {}) }, withToken)?.status ?? null;

  it('needs Authorization: Bearer <token> on every route but GET/HEAD /healthz (401 otherwise)', () => {
    for (const [m, p] of [['GET', '/v1/status'], ['GET', '/metrics'], ['GET', '/v1/kv/a'], ['PUT', '/v1/kv/a'], ['POST', '/v1/leave'], ['POST', '/healthz']]) {
      assert.equal(check(m as string, p as string), 401, `${m} ${p} without a token`);
      assert.equal(check(m as string, p as string, `Bearer ${token}x`), 401, `${m} ${p} with a longer token`);
      assert.equal(check(m as string, p as string, `Bearer ${token.slice(0, -1)}`), 401, `${m} ${p} with a shorter token`);
      assert.equal(check(m as string, p as string, `Basic ${token}`), 401, `${m} ${p} with another scheme`);
      assert.equal(check(m as string, p as string, token), 401, `${m} ${p} without the scheme`);
    }
    assert.equal(check('GET', '/v1/status', `Bearer ${token}`), null);
    assert.equal(check('GET', '/v1/status', `bearer ${token}`), null, 'the scheme is case-insensitive (RFC 7235)');
    assert.equal(check('GET', '/healthz'), null);
    assert.equal(check('HEAD', '/healthz'), null);
  });

  it('the dashboard\'s static files load without the token; its data (/v1/dashboard) needs it', () => {
    for (const p of ['/', '/index.html', '/dashboard/dashboard.js', '/dashboard/dashboard.css']) {
      assert.equal(check('GET', p), null, `GET ${p}`);
      assert.equal(check('HEAD', p), null, `HEAD ${p}`);
      assert.equal(check('POST', p), 401, `POST ${p}`);
    }
    for (const p of ['/v1/dashboard', '/dashboard/../v1/status', '/dashboard/a/b', '/dashboardx']) assert.equal(check('GET', p), 401, `GET ${p}`);
  });

  it('without a configured token, no Authorization is needed', () => {
    assert.equal(checkRequest('GET', '/v1/status', { host }, { allowedHosts: [] }), null);
  });
});
