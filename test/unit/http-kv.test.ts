import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { startHttpServer, type HttpHandlers, type HttpServer } from '../../node/http/server.js';
import { parseKey, percentDecodeUtf8, splitRequestTarget } from '../../node/http/kv-routes.js';
import { createLogger } from '../../node/log.js';
import { StoreError, type GetOptions, type GetOutcome, type KvApi, type PutOptions, type ShardInfo, type WriteOutcome } from '../../node/store-api.js';

/** An in-memory KvApi with the store's version rules, to test the HTTP mapping alone. */
class FakeKv implements KvApi {
  readonly data = new Map<string, { value: Uint8Array; version: number; present: boolean }>();
  readonly calls: Array<{ op: string; key: string; options?: unknown }> = [];
  failWith: StoreError | null = null;

  async put(key: string, value: Uint8Array | string, options: PutOptions = {}): Promise<WriteOutcome> {
    this.calls.push({ op: 'put', key, options });
    if (this.failWith !== null) throw this.failWith;
    const cur = this.data.get(key);
    const curVersion = cur?.present === true ? cur.version : 0;
    if (options.ifVersion !== undefined && options.ifVersion !== curVersion) {
      throw new StoreError('version_mismatch', `version is ${curVersion}`, { version: cur?.version ?? 0, present: cur?.present ?? false });
    }
    const bytes = typeof value === 'string' ? new TextEncoder().encode(value) : new Uint8Array(value);
    const version = (cur?.version ?? 0) + 1;
    this.data.set(key, { value: bytes, version, present: true });
    return { version };
  }

  async get(key: string, options: GetOptions = {}): Promise<GetOutcome | null> {
    this.calls.push({ op: 'get', key, options });
    if (this.failWith !== null) throw this.failWith;
    const cur = this.data.get(key);
    return cur?.present === true ? { value: cur.value, version: cur.version } : null;
  }

  async delete(key: string): Promise<WriteOutcome> {
    this.calls.push({ op: 'delete', key });
    if (this.failWith !== null) throw this.failWith;
    const version = (this.data.get(key)?.version ?? 0) + 1;
    this.data.set(key, { value: new Uint8Array(), version, present: false });
    return { version };
  }

  shards(): ShardInfo[] {
    return [{ shard: 0, replicas: ['a', 'b'], primary: 'a', inSync: ['a', 'b'], epoch: 3, seq: 7 }];
  }
}

function handlersWith(kv: FakeKv | null): HttpHandlers {
  return {
    status: () => null,
    counters: () => null,
    clusterMap: () => null,
    leave: () => {},
    updateMember: async () => 1,
    kv: () => kv,
    limits: () => ({ maxKeyBytes: 16, maxValueBytes: 1000 }),
  };
}

/** Send raw bytes on a fresh connection and return the raw answer (for targets fetch would normalise). */
function rawRequest(address: string, text: string): Promise<string> {
  const [host, port] = address.split(':') as [string, string];
  return new Promise((resolve, reject) => {
    const sock = connect(Number(port), host);
    let out = '';
    sock.setTimeout(5000, () => sock.destroy(new Error('raw request timed out')));
    sock.on('data', (d: Buffer) => (out += d.toString('latin1')));
    sock.on('end', () => resolve(out));
    sock.on('close', () => resolve(out));
    sock.on('error', reject);
    sock.write(Buffer.from(text, 'latin1'));
  });
}

describe('HTTP server bounds', function () {
  this.timeout(20_000);
  const quiet = createLogger('silent');

  it('holds at most maxBodyBytesInFlight of request bodies: beyond it 503 overloaded, and the budget comes back', async () => {
    const kv = new FakeKv();
    const handlers = { ...handlersWith(kv), limits: () => ({ maxKeyBytes: 16, maxValueBytes: 1024 * 1024 }) };
    const server = await startHttpServer('127.0.0.1:0', handlers, quiet, { allowedHosts: [] }, { maxConnections: 64, maxBodyBytesInFlight: 1024 * 1024 });
    try {
      const [host, port] = server.address.split(':') as [string, string];
      // A slow client holds 600 KB of a 700 KB body.
      const slow = connect(Number(port), host);
      let slowOut = '';
      slow.on('data', (d: Buffer) => (slowOut += d.toString('latin1')));
      slow.write(`PUT /v1/kv/slow HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 700000\r\n\r\n`);
      slow.write(Buffer.alloc(600_000, 97));
      const inFlight = async (): Promise<number> => server.bodyBytesInFlight();
      for (let i = 0; i < 200 && (await inFlight()) < 600_000; i++) await new Promise((r) => setTimeout(r, 10));
      assert.equal(await inFlight(), 600_000, 'the server holds the slow body so far');
      // Another 700 KB body would pass the 1 MiB budget: refused at once, before it is read.
      const refused = await fetch(`http://${server.address}/v1/kv/other`, { method: 'PUT', body: Buffer.alloc(700_000, 98) });
      assert.equal(refused.status, 503);
      assert.equal(((await refused.json()) as { error: string }).error, 'overloaded');
      assert.equal(refused.headers.get('retry-after'), '1');
      // The slow one finishes: stored, and its bytes go back to the budget.
      slow.write(Buffer.alloc(100_000, 97));
      await waitUntil(() => /^HTTP\/1.1 200/.test(slowOut), 5000);
      slow.destroy();
      const again = await fetch(`http://${server.address}/v1/kv/other`, { method: 'PUT', body: Buffer.alloc(900_000, 98) });
      assert.equal(again.status, 200, 'the budget came back');
      assert.equal(await inFlight(), 0);
    } finally {
      await server.close();
    }
  });
});

/** Polls `check` every 10 ms for up to `ms` (a bounded wait for a condition; no fixed sleep). */
async function waitUntil(check: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  for (let i = 0; i < ms / 10 + 1 && Date.now() < deadline; i++) {
    if (check()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('HTTP key-value routes (fake store)', function () {
  this.timeout(20_000);
  const quiet = createLogger('silent');
  let kv: FakeKv;
  let server: HttpServer;
  let base: string;

  beforeEach(async () => {
    kv = new FakeKv();
    server = await startHttpServer('127.0.0.1:0', handlersWith(kv), quiet);
    base = `http://${server.address}`;
  });
  afterEach(async () => {
    await server.close();
  });

  const json = async (res: Response): Promise<Record<string, unknown>> => {
    assert.match(res.headers.get('content-type') ?? '', /application\/json/);
    return (await res.json()) as Record<string, unknown>;
  };
  const expectError = async (res: Response, status: number, error: string): Promise<Record<string, unknown>> => {
    assert.equal(res.status, status, `expected ${status} ${error}`);
    const body = await json(res);
    assert.equal(body.error, error);
    assert.equal(typeof body.message, 'string');
    return body;
  };

  it('parses keys from the raw path: %2F and raw / both work, UTF-8 is checked', () => {
    const limits = { maxKeyBytes: 16, maxValueBytes: 10 };
    assert.equal(parseKey('a%2Fb', limits), 'a/b');
    assert.equal(parseKey('a/b', limits), 'a/b');
    assert.equal(parseKey('%E2%82%AC', limits), '€');
    assert.equal(parseKey('\u00e2\u0082\u00ac', limits), '€', 'raw UTF-8 bytes arrive as latin1 chars');
    assert.equal(percentDecodeUtf8('%EF%BB%BFx'), '\ufeffx', 'a leading BOM is part of the key');
    for (const bad of ['%', '%4', '%zz', '%C3', '%FF', '%ED%A0%80']) assert.equal(percentDecodeUtf8(bad), null, bad);
    assert.throws(() => parseKey('', limits), { code: 'invalid_key' });
    assert.throws(() => parseKey('x'.repeat(17), limits), { code: 'invalid_key' });
    assert.equal(parseKey('x'.repeat(16), limits), 'x'.repeat(16));
    assert.throws(() => parseKey('%E2%82%AC'.repeat(6), limits), { code: 'invalid_key' }, '18 bytes, 6 characters');
    assert.deepEqual(splitRequestTarget('/v1/kv/a?b=1#c'), { path: '/v1/kv/a', query: 'b=1' });
    assert.deepEqual(splitRequestTarget('http://h:1/v1/kv/../x'), { path: '/v1/kv/../x', query: '' });
  });

  it('put, get, delete a binary value; versions; CAS; consistency', async () => {
    const value = new Uint8Array([0, 255, 1, 254, 10, 13]);
    const put = await fetch(`${base}/v1/kv/a%2Fb`, { method: 'PUT', body: value });
    assert.equal(put.status, 200);
    assert.deepEqual(await json(put), { key: 'a/b', version: 1 });
    const get = await fetch(`${base}/v1/kv/a/b`);
    assert.equal(get.status, 200);
    assert.equal(get.headers.get('content-type'), 'application/octet-stream');
    assert.equal(get.headers.get('x-shoal-version'), '1');
    assert.deepEqual(new Uint8Array(await get.arrayBuffer()), value);
    const cas = await fetch(`${base}/v1/kv/a%2Fb?ifVersion=1`, { method: 'PUT', body: 'x' });
    assert.deepEqual(await json(cas), { key: 'a/b', version: 2 });
    const stale = await expectError(await fetch(`${base}/v1/kv/a%2Fb?ifVersion=1`, { method: 'PUT', body: 'y' }), 412, 'version_mismatch');
    assert.equal(stale.currentVersion, 2);
    assert.equal(stale.present, true);
    const any = await fetch(`${base}/v1/kv/a%2Fb?consistency=any`);
    assert.equal(await any.text(), 'x');
    assert.deepEqual(kv.calls.at(-1), { op: 'get', key: 'a/b', options: { consistency: 'any' } });
    const del = await fetch(`${base}/v1/kv/a%2Fb`, { method: 'DELETE' });
    assert.deepEqual(await json(del), { key: 'a/b', version: 3 });
    await expectError(await fetch(`${base}/v1/kv/a%2Fb`), 404, 'not_found');
    const head = await fetch(`${base}/v1/kv/nope`, { method: 'HEAD' });
    assert.equal(head.status, 404);
    const empty = await fetch(`${base}/v1/kv/e`, { method: 'PUT' });
    assert.equal(empty.status, 200);
    assert.equal((await fetch(`${base}/v1/kv/e`)).headers.get('content-length'), '0');
    const shards = await json(await fetch(`${base}/v1/shards`));
    assert.equal((shards.shards as ShardInfo[])[0]?.primary, 'a');
  });

  it('rejects bad input with the right status and a JSON error', async () => {
    await expectError(await fetch(`${base}/v1/kv/`), 400, 'invalid_key');
    await expectError(await fetch(`${base}/v1/kv`, { method: 'PUT', body: 'x' }), 400, 'invalid_key');
    await expectError(await fetch(`${base}/v1/kv/${'k'.repeat(17)}`), 400, 'invalid_key');
    await expectError(await fetch(`${base}/v1/kv/%zz`), 400, 'invalid_key');
    await expectError(await fetch(`${base}/v1/kv/%C3%28`), 400, 'invalid_key');
    for (const v of ['-1', 'abc', '1.5', '', '1e3', '+1', '0x10', '99999999999999999']) {
      const b = await expectError(await fetch(`${base}/v1/kv/k?ifVersion=${encodeURIComponent(v)}`, { method: 'PUT', body: 'x' }), 400, 'invalid_request');
      assert.match(b.message as string, /ifVersion/);
    }
    await expectError(await fetch(`${base}/v1/kv/k?consistency=linearizable`), 400, 'invalid_request');
    const unk = await expectError(await fetch(`${base}/v1/kv/k?frob=1`), 400, 'invalid_request');
    assert.match(unk.message as string, /frob/);
    await expectError(await fetch(`${base}/v1/kv/k?ifVersion=1`), 400, 'invalid_request');
    await expectError(await fetch(`${base}/v1/kv/k?consistency=any`, { method: 'PUT', body: 'x' }), 400, 'invalid_request');
    await expectError(await fetch(`${base}/v1/kv/k?ifVersion=1`, { method: 'DELETE' }), 400, 'invalid_request');
    await expectError(await fetch(`${base}/v1/kv/k?ifVersion=1&ifVersion=2`, { method: 'PUT', body: 'x' }), 400, 'invalid_request');
    const big = await expectError(await fetch(`${base}/v1/kv/k`, { method: 'PUT', body: new Uint8Array(1001) }), 413, 'value_too_large');
    assert.match(big.message as string, /1000/);
    const wrong = await expectError(await fetch(`${base}/v1/kv/k`, { method: 'POST', body: 'x' }), 405, 'method_not_allowed');
    assert.equal(wrong.error, 'method_not_allowed');
    const w2 = await fetch(`${base}/v1/kv/k`, { method: 'PATCH', body: 'x' });
    assert.equal(w2.status, 405);
    assert.equal(w2.headers.get('allow'), 'GET, HEAD, PUT, DELETE');
    await expectError(await fetch(`${base}/v1/kvx`), 404, 'not_found');
    await expectError(await fetch(`${base}/v1/shards`, { method: 'POST' }), 405, 'method_not_allowed');
    assert.equal(kv.calls.length, 0, 'no bad request reached the store');
    // Exactly at the limits is fine.
    assert.equal((await fetch(`${base}/v1/kv/${'k'.repeat(16)}`, { method: 'PUT', body: new Uint8Array(1000) })).status, 200);
    assert.equal((await fetch(`${base}/v1/kv/k?ifVersion=0`, { method: 'PUT', body: 'x' })).status, 200);
  });

  it('a streamed (chunked) body over the limit is 413 without reading it all', async () => {
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(ctl) {
        if (sent >= 64 * 1024 * 1024) return ctl.close();
        sent += 64 * 1024;
        ctl.enqueue(new Uint8Array(64 * 1024));
      },
    });
    const res = await fetch(`${base}/v1/kv/k`, { method: 'PUT', body, duplex: 'half' } as RequestInit);
    await expectError(res, 413, 'value_too_large');
    assert.ok(sent < 64 * 1024 * 1024, `the client stopped early (sent ${sent})`);
    assert.equal((await fetch(`${base}/v1/kv/k`, { method: 'PUT', body: 'ok' })).status, 200, 'still serving');
  });

  it('maps StoreErrors: 503 with Retry-After, 400 from the store', async () => {
    kv.failWith = new StoreError('not_enough_replicas', 'only 1 in sync', undefined, 2.5);
    const r = await expectError(await fetch(`${base}/v1/kv/k`, { method: 'PUT', body: 'x' }), 503, 'not_enough_replicas');
    assert.equal(r.message, 'only 1 in sync');
    kv.failWith = new StoreError('indeterminate', 'primary died');
    const r2 = await fetch(`${base}/v1/kv/k`, { method: 'DELETE' });
    assert.equal(r2.headers.get('retry-after'), '1');
    await expectError(r2, 503, 'indeterminate');
    kv.failWith = new StoreError('invalid_key', 'bad');
    const r3 = await fetch(`${base}/v1/kv/k`);
    assert.equal(r3.headers.get('retry-after'), null);
    await expectError(r3, 400, 'invalid_key');
    kv.failWith = new StoreError('not_enough_replicas', 'x', undefined, 2.5);
    assert.equal((await fetch(`${base}/v1/kv/k`)).headers.get('retry-after'), '3');
    kv.failWith = Object.assign(new Error('boom'), {}) as StoreError;
    await expectError(await fetch(`${base}/v1/kv/k`), 500, 'internal');
  });

  it('a client that aborts mid-body does not crash the server; raw targets keep their dots', async () => {
    // Cut the connection mid-body.
    await new Promise<void>((resolve) => {
      const [host, port] = server.address.split(':') as [string, string];
      const sock = connect(Number(port), host, () => {
        sock.write('PUT /v1/kv/abort HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 500\r\n\r\nxxxx');
        setTimeout(() => {
          sock.destroy();
          resolve();
        }, 50);
      });
    });
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(kv.calls.length, 0);
    const dots = await rawRequest(server.address, 'PUT /v1/kv/a/../b HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\nConnection: close\r\n\r\nz');
    assert.match(dots, /^HTTP\/1.1 200/);
    assert.ok(kv.data.has('a/../b'));
    const pct = await rawRequest(server.address, 'GET /v1/kv/%E2%82%AC/%2e%2e HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
    assert.match(pct, /^HTTP\/1.1 404/);
    assert.deepEqual(kv.calls.at(-1), { op: 'get', key: '€/..', options: {} });
  });

  it('answers 503 starting while the store is not ready', async () => {
    await server.close();
    server = await startHttpServer('127.0.0.1:0', handlersWith(null), quiet);
    const r = await fetch(`http://${server.address}/v1/kv/k`);
    assert.equal(r.headers.get('retry-after'), '1');
    await expectError(r, 503, 'starting');
    await expectError(await fetch(`http://${server.address}/v1/shards`), 503, 'starting');
    await expectError(await fetch(`http://${server.address}/metrics`), 503, 'starting');
    await expectError(await fetch(`http://${server.address}/v1/kv/k`, { method: 'PUT', body: 'x' }), 503, 'starting');
    await expectError(await fetch(`http://${server.address}/v1/kv/${'k'.repeat(17)}`), 400, 'invalid_key');
  });
});
