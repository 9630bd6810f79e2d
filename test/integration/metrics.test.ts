/**
 * GET /metrics of real peers, read back with a Prometheus text-format parser: what a scraper
 * sees. Three peers in this process, so each peer's registry is also checked to hold its own
 * numbers only.
 */
import assert from 'node:assert/strict';
import parse, { type PromFamily, type PromSample } from 'parse-prometheus-text-format';
import type { Peer } from '../../node/index.js';
import { makeTempDir, removeDir } from './harness.js';
import { startWritableCluster } from './kv-cluster.js';

/** The families /metrics had before prom-client, with their types: scrapers and dashboards rely on both. */
const COUNTERS = [
  'shoal_membership_messages_received_total',
  'shoal_membership_messages_rejected_total',
  'shoal_membership_messages_published_total',
  'shoal_member_transitions_total',
  'shoal_raft_frames_sent_total',
  'shoal_raft_frames_received_total',
  'shoal_raft_frames_dropped_total',
  'shoal_raft_streams_reset_total',
  'shoal_raft_frames_rejected_total',
  'shoal_raft_frames_refused_total',
  'shoal_store_requests_forwarded_total',
  'shoal_store_requests_served_total',
  'shoal_store_lease_renewals_total',
  'shoal_store_lease_failures_total',
  'shoal_store_snapshots_sent_total',
  'shoal_store_snapshot_bytes_sent_total',
  'shoal_store_catchup_bytes_received_total',
  'shoal_store_snapshots_resumed_total',
  'shoal_store_snapshot_bytes_resumed_total',
  'shoal_store_move_seconds_total',
  'shoal_store_copies_deleted_total',
  'shoal_store_snapshots_installed_total',
  'shoal_store_assignments_proposed_total',
  'shoal_replication_frames_sent_total',
  'shoal_replication_frames_received_total',
  'shoal_replication_frames_dropped_total',
  'shoal_replication_streams_reset_total',
  'shoal_store_catchups_abandoned_total',
  'shoal_replication_messages_rejected_total',
  'shoal_store_requests_rejected_total',
  'shoal_replication_messages_refused_total',
  'shoal_replication_frames_refused_total',
  'shoal_http_kv_requests_total',
  'shoal_http_requests_refused_total',
];
const GAUGES = [
  'shoal_members',
  'shoal_raft_term',
  'shoal_raft_commit_index',
  'shoal_raft_is_leader',
  'shoal_store_lease_valid',
  'shoal_store_moves_in_flight',
  'shoal_store_replicas',
  'shoal_store_primaries_serving',
  'shoal_store_catchups_active',
  'shoal_store_catchups_backing_off',
  'shoal_http_body_bytes_in_flight',
  'shoal_libp2p_connections',
];
const HISTOGRAMS = ['shoal_http_request_duration_seconds', 'shoal_replication_write_duration_seconds', 'shoal_move_duration_seconds'];
const COORDINATOR_ONLY = ['shoal_store_catchups_active', 'shoal_store_catchups_backing_off', 'shoal_store_catchups_abandoned_total'];

interface Scrape {
  text: string;
  families: Map<string, PromFamily>;
}

async function scrape(peer: Peer): Promise<Scrape> {
  const res = await fetch(`http://${peer.httpAddress as string}/metrics`, { signal: AbortSignal.timeout(5000) });
  const text = await res.text();
  assert.equal(res.status, 200, text);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  return { text, families: new Map(parse(text).map((f) => [f.name, f])) };
}

function family(s: Scrape, name: string): PromFamily {
  const f = s.families.get(name);
  assert.ok(f !== undefined, `${name} in /metrics`);
  return f;
}

/** The one unlabelled sample's value of `name`. */
function value(s: Scrape, name: string): number {
  const [m, ...rest] = family(s, name).metrics;
  assert.ok(m !== undefined && rest.length === 0 && m.value !== undefined, `${name} has one sample`);
  return Number(m.value);
}

/**
 * One series of a histogram, parsed on its own. The parser (1.1.1) folds every series of a
 * histogram family into one set of buckets and drops the sums and counts of labelled series,
 * so the series' lines are taken out here (labels matched exactly, only `le` kept) and parsed
 * as an unlabelled histogram.
 */
function histogramSeries(s: Scrape, name: string, labels: Record<string, string> = {}): PromSample | null {
  const lines = [`# TYPE ${name} histogram`];
  for (const line of s.text.split('\n')) {
    const m = /^([a-z_]+)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (m === null || ![`${name}_bucket`, `${name}_sum`, `${name}_count`].includes(m[1] as string)) continue;
    const { le, ...rest } = Object.fromEntries([...(m[2] ?? '').matchAll(/([a-z_]+)="([^"]*)"/g)].map(([, k, v]) => [k as string, v as string]));
    const same = Object.keys(rest).length === Object.keys(labels).length && Object.entries(labels).every(([k, v]) => rest[k] === v);
    if (same) lines.push(`${m[1] as string}${le === undefined ? '' : `{le="${le}"}`} ${m[3] as string}`);
  }
  if (lines.length === 1) return null;
  const [f, ...others] = parse(lines.join('\n') + '\n');
  assert.ok(f !== undefined && others.length === 0 && f.type === 'HISTOGRAM' && f.metrics.length === 1, `${name}${JSON.stringify(labels)} parses as one histogram`);
  return f.metrics[0] as PromSample;
}

/** Checks a histogram series is well formed (cumulative buckets, `+Inf` equal to the count); returns its count. */
function checkHistogram(what: string, h: PromSample): number {
  assert.ok(h.buckets !== undefined && h.count !== undefined && h.sum !== undefined, `${what}: buckets, sum and count`);
  const buckets = Object.entries(h.buckets)
    .map(([le, n]) => [le === '+Inf' ? Number.POSITIVE_INFINITY : Number(le), Number(n)] as const)
    .sort((a, b) => a[0] - b[0]);
  assert.ok(buckets.length >= 2, `${what}: several buckets`);
  for (let i = 1; i < buckets.length; i++) {
    assert.ok((buckets[i] as readonly [number, number])[1] >= (buckets[i - 1] as readonly [number, number])[1], `${what}: buckets cumulative ${JSON.stringify(h.buckets)}`);
  }
  const inf = buckets.at(-1) as readonly [number, number];
  assert.equal(inf[0], Number.POSITIVE_INFINITY, `${what}: a +Inf bucket`);
  const count = Number(h.count);
  assert.equal(inf[1], count, `${what}: +Inf bucket equals the count`);
  assert.ok(Number(h.sum) >= 0, `${what}: sum`);
  return count;
}

describe('GET /metrics in the Prometheus text format: 3 peers in one process', function () {
  this.timeout(90_000);
  let dir: string;
  let peers: Peer[] = [];
  const PUTS = 40;
  const GETS = 25;

  before(async () => {
    dir = await makeTempDir();
    peers = await startWritableCluster(dir);
    // Every key-value request goes to the first peer: the others' HTTP histograms must not see them.
    const base = `http://${(peers[0] as Peer).httpAddress as string}/v1/kv`;
    for (let i = 0; i < PUTS; i++) {
      const r = await fetch(`${base}/metrics-${i}`, { method: 'PUT', body: `value ${i}` });
      assert.equal(r.status, 200, await r.text());
    }
    for (let i = 0; i < GETS; i++) {
      const r = await fetch(`${base}/metrics-${i}`);
      assert.equal(r.status, 200, await r.text());
    }
  });

  after(async () => {
    await Promise.all(peers.map((p) => p.stop().catch(() => {})));
    await removeDir(dir);
  });

  it('shows the default process metrics', async () => {
    const s = await scrape(peers[0] as Peer);
    assert.equal(family(s, 'process_cpu_seconds_total').type, 'COUNTER');
    assert.ok(value(s, 'process_cpu_seconds_total') > 0);
    assert.equal(family(s, 'nodejs_eventloop_lag_seconds').type, 'GAUGE');
    assert.equal(family(s, 'nodejs_heap_size_used_bytes').type, 'GAUGE');
    assert.ok(value(s, 'nodejs_heap_size_used_bytes') > 0);
  });

  it('keeps every shoal_ family with its type and labels, on every peer', async () => {
    let coordinatorSeen = false;
    for (const peer of peers) {
      const s = await scrape(peer);
      for (const name of COUNTERS) assert.equal(family(s, name).type, 'COUNTER', name);
      for (const name of GAUGES) assert.equal(family(s, name).type, 'GAUGE', name);
      const labelsOf = (name: string, key: string): string[] => family(s, name).metrics.map((m) => m.labels?.[key] ?? '?').sort();
      assert.deepEqual(labelsOf('shoal_members', 'state'), ['alive', 'dead', 'left', 'suspect']);
      assert.deepEqual(labelsOf('shoal_member_transitions_total', 'to'), ['alive', 'dead', 'left', 'suspect']);
      assert.deepEqual(labelsOf('shoal_store_replicas', 'role'), ['any', 'primary']);
      assert.equal(value(s, 'shoal_store_lease_valid'), 1);
      assert.ok(value(s, 'shoal_replication_frames_sent_total') > 0);
      assert.ok(value(s, 'shoal_raft_term') >= 1);
      assert.ok(value(s, 'shoal_libp2p_connections') >= 2, 'connected to the two other peers');
      // Catch-ups are the coordinator's to report: no sample (not a 0) elsewhere.
      const leader = value(s, 'shoal_raft_is_leader') === 1;
      const withSamples = COORDINATOR_ONLY.filter((name) => family(s, name).metrics.length > 0);
      if (!leader) assert.deepEqual(withSamples, [], 'no catch-up samples off the coordinator');
      else if (withSamples.length === COORDINATOR_ONLY.length) coordinatorSeen = true;
    }
    assert.ok(coordinatorSeen, 'the coordinator reports its catch-ups');
  });

  it('has the three histograms, well formed, with the puts and gets observed', async () => {
    const first = await scrape(peers[0] as Peer);
    for (const name of HISTOGRAMS) assert.equal(family(first, name).type, 'HISTOGRAM', name);

    const httpPut = histogramSeries(first, 'shoal_http_request_duration_seconds', { op: 'put', status: '2xx' });
    assert.ok(httpPut !== null, 'HTTP put durations');
    assert.equal(checkHistogram('http put', httpPut), PUTS);
    const httpGet = histogramSeries(first, 'shoal_http_request_duration_seconds', { op: 'get', status: '2xx' });
    assert.ok(httpGet !== null, 'HTTP get durations');
    assert.equal(checkHistogram('http get', httpGet), GETS);
    // The scrapes of this test are requests too.
    const other = histogramSeries(first, 'shoal_http_request_duration_seconds', { op: 'other', status: '2xx' });
    assert.ok(other !== null && checkHistogram('http other', other) > 0);
    const kvPuts = family(first, 'shoal_http_kv_requests_total').metrics.find((m) => m.labels?.op === 'put' && m.labels.status === '200');
    assert.equal(Number(kvPuts?.value), PUTS);

    // Each put is observed at its shard's primary, which may be any of the three.
    let writes = 0;
    for (const peer of peers) {
      const s = peer === peers[0] ? first : await scrape(peer);
      const w = histogramSeries(s, 'shoal_replication_write_duration_seconds');
      assert.ok(w !== null, 'replication write durations');
      writes += checkHistogram('replication write', w);
      const moves = histogramSeries(s, 'shoal_move_duration_seconds');
      assert.ok(moves !== null, 'move durations');
      assert.equal(checkHistogram('move', moves), value(s, 'shoal_store_snapshots_sent_total'), 'one observation per completed snapshot send');
      if (peer !== peers[0]) {
        assert.equal(histogramSeries(s, 'shoal_http_request_duration_seconds', { op: 'put', status: '2xx' }), null, 'another peer saw no HTTP put');
        assert.deepEqual(family(s, 'shoal_http_kv_requests_total').metrics, [], 'nor any key-value request');
      }
    }
    assert.ok(writes >= PUTS, `every put observed at its primary (${writes} writes)`);
  });
});
