import assert from 'node:assert/strict';
import type { Peer } from '../../node/index.js';
import type { ShardInfo } from '../../node/store-api.js';
import { makeTempDir, removeDir, waitFor } from './harness.js';
import { startWritableCluster } from './kv-cluster.js';

interface ErrorBody {
  error: string;
  message: string;
  [k: string]: unknown;
}

/** Check an error answer: the status and a JSON `{ error, message }` body. */
async function expectError(res: Response, status: number, error: string): Promise<ErrorBody> {
  const text = await res.text();
  assert.equal(res.status, status, `expected ${status} ${error}, got ${res.status}: ${text}`);
  assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
  const body = JSON.parse(text) as ErrorBody;
  assert.equal(body.error, error, text);
  assert.equal(typeof body.message, 'string', text);
  return body;
}

describe('HTTP key-value API: 3 peers in one process', function () {
  this.timeout(90_000);
  let dir: string;
  let peers: Peer[] = [];
  let base: string;
  const url = (key: string, query = ''): string => `${base}/v1/kv/${encodeURIComponent(key)}${query}`;
  const put = (key: string, body: string | Uint8Array, query = ''): Promise<Response> => fetch(url(key, query), { method: 'PUT', body });

  before(async () => {
    dir = await makeTempDir();
    peers = await startWritableCluster(dir);
    base = `http://${(peers[0] as Peer).httpAddress}`;
  });

  after(async () => {
    await Promise.all(peers.map((p) => p.stop().catch(() => {})));
    await removeDir(dir);
  });

  it('put, get and delete binary values; versions increase', async () => {
    const value = new Uint8Array(256).map((_, i) => i);
    const r1 = await put('bin/é/key', value);
    assert.equal(r1.status, 200, await r1.clone().text());
    const b1 = (await r1.json()) as { key: string; version: number };
    assert.equal(b1.key, 'bin/é/key');
    assert.ok(Number.isInteger(b1.version) && b1.version >= 1);

    const g1 = await fetch(url('bin/é/key'));
    assert.equal(g1.status, 200);
    assert.equal(g1.headers.get('content-type'), 'application/octet-stream');
    assert.equal(g1.headers.get('x-shoal-version'), String(b1.version));
    assert.deepEqual(new Uint8Array(await g1.arrayBuffer()), value);

    // The same key with a raw / in the path.
    const raw = await fetch(`${base}/v1/kv/bin/%C3%A9/key`);
    assert.equal(raw.status, 200);
    assert.deepEqual(new Uint8Array(await raw.arrayBuffer()), value);

    const r2 = await put('bin/é/key', new Uint8Array([0, 0, 255]));
    const b2 = (await r2.json()) as { version: number };
    assert.ok(b2.version > b1.version, 'version increases');
    assert.deepEqual(new Uint8Array(await (await fetch(url('bin/é/key'))).arrayBuffer()), new Uint8Array([0, 0, 255]));

    const d = await fetch(url('bin/é/key'), { method: 'DELETE' });
    assert.equal(d.status, 200);
    const bd = (await d.json()) as { key: string; version: number };
    assert.equal(bd.key, 'bin/é/key');
    assert.ok(bd.version > b2.version, 'a delete bumps the version');
    await expectError(await fetch(url('bin/é/key')), 404, 'not_found');
    // Deleting an absent key succeeds.
    assert.equal((await fetch(url('never-written'), { method: 'DELETE' })).status, 200);

    // Any peer answers for any key.
    for (const p of peers) {
      const r = await fetch(`http://${p.httpAddress}/v1/kv/${encodeURIComponent(`via-${p.peerId}`)}`, { method: 'PUT', body: p.peerId });
      assert.equal(r.status, 200, await r.clone().text());
    }
    for (const p of peers) assert.equal(await (await fetch(url(`via-${p.peerId}`))).text(), p.peerId);
    // An empty value is a value.
    assert.equal((await put('empty', new Uint8Array(0))).status, 200);
    const e = await fetch(url('empty'));
    assert.equal(e.status, 200);
    assert.equal((await e.arrayBuffer()).byteLength, 0);
  });

  it('compare-and-set: ifVersion matches, mismatches with 412, ifVersion=0 on an absent key', async () => {
    const created = await put('cas', 'one', '?ifVersion=0');
    assert.equal(created.status, 200, await created.clone().text());
    const v1 = ((await created.json()) as { version: number }).version;
    const again = await expectError(await put('cas', 'dup', '?ifVersion=0'), 412, 'version_mismatch');
    assert.equal(again.currentVersion, v1);
    assert.equal(again.present, true);

    const ok = await put('cas', 'two', `?ifVersion=${v1}`);
    assert.equal(ok.status, 200, await ok.clone().text());
    const v2 = ((await ok.json()) as { version: number }).version;
    assert.ok(v2 > v1);
    const stale = await expectError(await put('cas', 'three', `?ifVersion=${v1}`), 412, 'version_mismatch');
    assert.equal(stale.currentVersion, v2);
    assert.equal(stale.present, true);
    assert.equal(await (await fetch(url('cas'))).text(), 'two', 'a failed CAS writes nothing');
  });

  it('consistency=any and consistency=strong read the value', async () => {
    assert.equal((await put('read-me', 'hello')).status, 200);
    // strong: at once, from the primary.
    const strong = await fetch(url('read-me', '?consistency=strong'));
    assert.equal(strong.status, 200);
    assert.equal(await strong.text(), 'hello');
    // any: a backup applies a write when the commit point reaches it (the next append or
    // heartbeat, within 100 ms), so it may miss it for a moment (README: Reads); bounded poll.
    const any = await waitFor('an any read to see the write', async () => {
      const r = await fetch(url('read-me', '?consistency=any'));
      return r.status === 200 ? await r.text() : null;
    }, { timeoutMs: 2000, intervalMs: 20 });
    assert.equal(any, 'hello');
  });

  it('GET /metrics reports the store: replicas held, lease, forwarded and served operations', async () => {
    const text = await (await fetch(`${base}/metrics`)).text();
    const sample = (name: string): number => {
      const m = new RegExp(`^${name} (\\d+)$`, 'm').exec(text);
      assert.ok(m, `${name} in /metrics`);
      return Number(m[1]);
    };
    assert.ok(sample('shoal_store_replicas\\{role="any"\\}') > 0);
    assert.equal(sample('shoal_store_lease_valid'), 1);
    assert.ok(sample('shoal_store_requests_served_total') + sample('shoal_store_requests_forwarded_total') > 0);
    assert.ok(sample('shoal_replication_frames_sent_total') > 0);
  });

  it('GET /v1/shards lists every shard with its replicas and primary', async () => {
    const r = await fetch(`${base}/v1/shards`);
    assert.equal(r.status, 200);
    const { shards } = (await r.json()) as { shards: ShardInfo[] };
    assert.ok(shards.length > 0);
    for (const s of shards) {
      assert.ok(Number.isInteger(s.shard));
      assert.ok(Array.isArray(s.replicas) && s.replicas.length > 0);
      assert.ok(s.primary === null || s.inSync.includes(s.primary));
    }
  });

  it('rejects bad input with the right status and a JSON error, and keeps serving', async () => {
    await expectError(await fetch(`${base}/v1/kv/`), 400, 'invalid_key');
    await expectError(await fetch(`${base}/v1/kv/`, { method: 'PUT', body: 'x' }), 400, 'invalid_key');
    await expectError(await put('k'.repeat(1025), 'x'), 400, 'invalid_key');
    await expectError(await fetch(url('é'.repeat(513))), 400, 'invalid_key'); // 1026 bytes of UTF-8
    await expectError(await fetch(`${base}/v1/kv/%zz`), 400, 'invalid_key');
    await expectError(await fetch(`${base}/v1/kv/%C3`), 400, 'invalid_key');
    assert.equal((await put('k'.repeat(1024), 'x')).status, 200, 'a key of exactly 1024 bytes is fine');

    const big = await expectError(await put('big', new Uint8Array(1024 * 1024 + 1)), 413, 'value_too_large');
    assert.match(big.message, /1048576/);
    assert.equal((await put('big', new Uint8Array(1024 * 1024))).status, 200, 'exactly 1 MiB is fine');

    for (const v of ['-1', 'abc', '1.5', '', '1e2']) {
      const b = await expectError(await put('k', 'x', `?ifVersion=${encodeURIComponent(v)}`), 400, 'invalid_request');
      assert.match(b.message, /ifVersion/);
    }
    const cons = await expectError(await fetch(url('k', '?consistency=eventual')), 400, 'invalid_request');
    assert.match(cons.message, /consistency/);
    const unknown = await expectError(await fetch(url('k', '?colour=red')), 400, 'invalid_request');
    assert.match(unknown.message, /colour/);
    await expectError(await put('k', 'x', '?consistency=any'), 400, 'invalid_request');

    await expectError(await fetch(`${base}/v1/nope`), 404, 'not_found');
    await expectError(await fetch(`${base}/v1/kvs/x`), 404, 'not_found');
    const wrong = await fetch(`${base}/v1/kv/x`, { method: 'POST', body: 'x' });
    assert.equal(wrong.headers.get('allow'), 'GET, HEAD, PUT, DELETE');
    await expectError(wrong, 405, 'method_not_allowed');
    await expectError(await fetch(`${base}/v1/shards`, { method: 'DELETE' }), 405, 'method_not_allowed');

    const after = await put('still-here', 'yes');
    assert.equal(after.status, 200, await after.clone().text());
    assert.equal(await (await fetch(url('still-here'))).text(), 'yes');
    // The older routes still work.
    assert.equal((await fetch(`${base}/v1/status`)).status, 200);
    assert.equal((await fetch(`${base}/v1/cluster`)).status, 200);
    assert.equal((await fetch(`${base}/healthz`)).status, 200);
  });
});
