// npm run bench:large [-- --mb 200 --value-kib 1024 --clients 4 --grow 5]
// Large values through a 3-peer cluster of `shoal` processes on 127.0.0.1: the load rate in MB/s,
// put latency of the large values, and the p99 of a small-value writer alone and during the
// load; then the cluster grows and the time until every shard is settled again is measured.
// Not a test: it prints figures. Every wait is bounded; every process it starts is killed on exit.
import '../../node/polyfill.js';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { metricSum, loadLargeValues, quantile, readBack, replicationTrouble, SmallWriter, WritableWatch } from '../integration/bulk-load.js';
import { ProcessPeer } from '../integration/harness.js';
import { Cluster } from '../integration/process-cluster.js';
import type { ShardInfo } from '../../node/store-api.js';

const HELP = `Usage: npm run bench:large [-- OPTIONS]

Starts 3 shoal peers (separate processes, temp data dirs). Measures a small-value writer alone,
then loads MB of large values from concurrent clients with the small writer beside them, reads
every value back, and grows the cluster, timing until every shard has all its replicas in sync.

  --mb N           megabytes to load (default 200)
  --value-kib N    value size, KiB (default 1024)
  --clients N      concurrent large-value clients (default 4)
  --grow N         peers to grow to after the load (default 5; 3 = no growth)
  --drain          then drain the last peer (shoal drain) with the small writer running:
                   time, replicas and bytes moved, small puts refused and their latency
  --kill           then SIGKILL a peer that is not the coordinator and time until every
                   shard has all its replicas in sync again (re-replication waits
                   reReplicateAfterMs = 30 s for the peer to come back, then moves data)
  --small-seconds  seconds of the small writer alone (default 5)
  --peer-arg ARG   extra argument for every peer (repeatable), e.g. --peer-arg=--sync
  --logs DIR       write each peer's stderr (the tail kept in memory) to DIR/pN.log at the end
  --graceful-stop  stop the peers with SIGINT at the end (not SIGKILL), so that
                   NODE_OPTIONS=--cpu-prof writes their CPU profiles
  -h, --help       this help
`;

const { values } = parseArgs({
  options: {
    mb: { type: 'string', default: '200' },
    'value-kib': { type: 'string', default: '1024' },
    clients: { type: 'string', default: '4' },
    grow: { type: 'string', default: '5' },
    drain: { type: 'boolean', default: false },
    kill: { type: 'boolean', default: false },
    'small-seconds': { type: 'string', default: '5' },
    'peer-arg': { type: 'string', multiple: true, default: [] },
    logs: { type: 'string' },
    'graceful-stop': { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (values.help) {
  process.stdout.write(HELP);
  process.exit(0);
}
const mb = Number(values.mb);
const valueKiB = Number(values['value-kib']);
const clients = Number(values.clients);
const growTo = Number(values.grow);
const smallSeconds = Number(values['small-seconds']);
if (
  !(mb > 0 && mb <= 10_000) ||
  !(Number.isInteger(valueKiB) && valueKiB >= 1 && valueKiB <= 1024) ||
  !(Number.isInteger(clients) && clients >= 1 && clients <= 64) ||
  !(Number.isInteger(growTo) && growTo >= 3 && growTo <= 9) ||
  !(smallSeconds >= 0 && smallSeconds <= 600)
) {
  process.stderr.write(`bad option\n${HELP}`);
  process.exit(2);
}

const log = (s: string): void => void process.stderr.write(`${s}\n`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const ms = (x: number): string => (Number.isFinite(x) ? `${x.toFixed(1)} ms` : '-');

let cluster: Cluster | null = null;
const hardLimit = setTimeout(
  () => {
    log('hard time limit reached, giving up');
    void cluster?.destroy().finally(() => process.exit(3));
  },
  (60 + mb * 3 + 600) * 1000,
);
hardLimit.unref();
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    log(`${sig}: stopping the peers`);
    void (cluster?.destroy() ?? Promise.resolve()).finally(() => process.exit(130));
  });
}

/** Stream resets and dropped replication frames summed over the peers (NaN if a peer does not answer). */
async function streamResets(c: Cluster): Promise<{ resets: number; dropped: number }> {
  try {
    return await replicationTrouble(c.peers.map((p) => p.httpAddress));
  } catch (err) {
    log(`metrics: ${(err as Error).message}`);
    return { resets: NaN, dropped: NaN };
  }
}

function balance(table: ShardInfo[], peers: readonly string[]): { max: number; mean: number } {
  const held = new Map<string, number>(peers.map((p) => [p, 0]));
  for (const s of table) for (const r of s.replicas) held.set(r, (held.get(r) ?? 0) + 1);
  const counts = [...held.values()];
  return { max: Math.max(...counts), mean: counts.reduce((a, b) => a + b, 0) / counts.length };
}

async function main(): Promise<void> {
  const c = (cluster = await Cluster.create((values['peer-arg'] as string[]) ?? []));
  await c.startPeers(3);
  await c.waitSettled('start', 60_000);
  const addrs = (): string[] => c.peers.map((p) => p.httpAddress);

  const small = new SmallWriter(addrs());
  small.start();
  await sleep(smallSeconds * 1000);
  const alone = await small.stop();

  const watch = new WritableWatch(addrs);
  watch.start();
  small.start();
  const load = await loadLargeValues({
    targets: addrs(),
    totalBytes: mb * 1024 * 1024,
    valueBytes: valueKiB * 1024,
    clients,
    keyPrefix: 'big-',
    requestTimeoutMs: 30_000,
    maxAttemptsPerKey: 20,
    deadlineMs: (mb * 3 + 60) * 1000,
  });
  const during = await small.stop();
  const duringFailures = JSON.stringify(Object.fromEntries(small.failures));
  await watch.stop();
  const afterLoad = await streamResets(c);
  const loadMBps = load.bytesAcked / 1024 / 1024 / (load.elapsedMs / 1000);
  log(`load done: ${loadMBps.toFixed(1)} MB/s, ${load.acked.size} acknowledged, failures ${JSON.stringify(Object.fromEntries(load.failures))}`);

  const t0 = performance.now();
  const bad = await readBack(addrs(), load.acked, 30_000);
  const readMs = performance.now() - t0;

  /** Bytes moved to new replicas so far, cluster-wide: snapshot values sent plus catch-up received. */
  const moved = async (): Promise<number> =>
    (await Promise.all(c.peers.map(async (p) => (await metricSum(p.httpAddress, 'shoal_store_snapshot_bytes_sent_total')) + (await metricSum(p.httpAddress, 'shoal_store_catchup_bytes_received_total'))))).reduce((a, b) => a + b, 0);
  let growMs = NaN;
  let growMB = NaN;
  let bal = { max: NaN, mean: NaN };
  let duringGrow: number[] = [];
  let growFailures = '{}';
  if (growTo > 3) {
    const before = await moved();
    small.failures.clear();
    small.start();
    const g0 = performance.now();
    const seed = c.peers[0] as ProcessPeer;
    for (let i = c.peers.length; i < growTo; i++) {
      c.peers.push(await ProcessPeer.start(join(c.dir, `p${i}`), { join: [seed.joinToken], extraArgs: c.extraArgs }));
    }
    try {
      await c.waitSettled('grown', (mb * 2 + 120) * 1000);
      growMs = performance.now() - g0;
      growMB = ((await moved()) - before) / 1048576;
    } catch (err) {
      log(`the grown cluster did not settle: ${(err as Error).message.slice(0, 4000)}`);
    }
    duringGrow = await small.stop();
    growFailures = JSON.stringify(Object.fromEntries(small.failures));
    bal = balance(await c.shards(seed), c.peers.map((p) => p.peerId));
  }
  const afterGrow = await streamResets(c);
  let drainLine = 'no drain';
  if (values.drain) {
    const target = c.peers[c.peers.length - 1] as ProcessPeer;
    const bytesBefore = await moved();
    small.failures.clear();
    small.start();
    const d0 = performance.now();
    const post = await fetch(`http://${target.httpAddress}/v1/drain`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    const first = (await post.json()) as { replicas: number };
    let st = { replicas: first.replicas, done: false };
    const deadline = Date.now() + (mb * 2 + 120) * 1000;
    while (!st.done && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 250));
      st = (await (await fetch(`http://${target.httpAddress}/v1/drain`)).json()) as { replicas: number; done: boolean };
    }
    const drainMs = performance.now() - d0;
    const duringDrain = await small.stop();
    const bytesAfter = await moved();
    const movedMB = (bytesAfter - bytesBefore) / 1048576;
    drainLine =
      `drain of ${c.label(target.peerId)} (it held ${first.replicas} replicas): ` +
      `${st.done ? `done in ${(drainMs / 1000).toFixed(1)} s` : `NOT done after ${(drainMs / 1000).toFixed(1)} s (${st.replicas} left)`}; ` +
      `${movedMB.toFixed(1)} MB moved (snapshots + catch-up) (${(movedMB / (drainMs / 1000)).toFixed(1)} MB/s); ` +
      `small puts during it n=${duringDrain.length} p50 ${ms(quantile(duringDrain, 0.5))} p99 ${ms(quantile(duringDrain, 0.99))}; refused or failed ${JSON.stringify(Object.fromEntries(small.failures))}`;
  }
  let killLine = 'no kill';
  if (values.kill) {
    const st = await c.status(c.peers[0] as ProcessPeer);
    const victim = c.peers.find((p) => p.peerId !== st.coordinator) as ProcessPeer;
    const held = (await c.shards(c.peers[0] as ProcessPeer)).filter((x) => x.replicas.includes(victim.peerId)).length;
    const bytesBefore = await moved();
    small.failures.clear();
    small.start();
    const k0 = performance.now();
    victim.signal('SIGKILL');
    await victim.waitExit();
    c.peers.splice(c.peers.indexOf(victim), 1);
    c.retired.push(victim);
    let killMs = NaN;
    try {
      await c.waitSettled('re-replicated', (mb * 3 + 180) * 1000);
      killMs = performance.now() - k0;
    } catch (err) {
      log(`the cluster did not re-replicate: ${(err as Error).message.slice(0, 4000)}`);
    }
    const duringKill = await small.stop();
    const movedMB = ((await moved()) - bytesBefore) / 1048576;
    killLine =
      `SIGKILL of ${c.label(victim.peerId)} (it held ${held} replicas): ` +
      `${Number.isFinite(killMs) ? `every shard fully replicated again after ${(killMs / 1000).toFixed(1)} s` : 'NOT re-replicated'} ` +
      `(of which reReplicateAfterMs 30 s waiting for it to return), ${movedMB.toFixed(1)} MB moved; ` +
      `small puts meanwhile n=${duringKill.length} p50 ${ms(quantile(duringKill, 0.5))} p99 ${ms(quantile(duringKill, 0.99))}; refused or failed ${JSON.stringify(Object.fromEntries(small.failures))}`;
  }
  small.close();

  const lines = [
    `large values: ${load.acked.size} × ${valueKiB} KiB acknowledged (${(load.bytesAcked / 1048576).toFixed(1)} MB) in ${(load.elapsedMs / 1000).toFixed(1)} s = ${loadMBps.toFixed(1)} MB/s, ${clients} clients`,
    `  large put latency p50 ${ms(quantile(load.latenciesMs, 0.5))}, p99 ${ms(quantile(load.latenciesMs, 0.99))}, max ${ms(quantile(load.latenciesMs, 1))}`,
    `  failed attempts: ${JSON.stringify(Object.fromEntries(load.failures))}; abandoned keys: ${load.abandoned.length}`,
    `small puts alone:       n=${alone.length} p50 ${ms(quantile(alone, 0.5))} p99 ${ms(quantile(alone, 0.99))}`,
    `small puts during load: n=${during.length} p50 ${ms(quantile(during, 0.5))} p99 ${ms(quantile(during, 0.99))} max ${ms(quantile(during, 1))}; failures ${duringFailures}`,
    `writable shards during the load: min ${watch.minWritable} of ${watch.shardCount} (${watch.degradedPolls} of ${watch.polls} polls degraded)`,
    `stream resets after the load: ${afterLoad.resets}; replication frames dropped: ${afterLoad.dropped}`,
    `read back: ${load.acked.size - bad.length} of ${load.acked.size} equal in ${(readMs / 1000).toFixed(1)} s${bad.length > 0 ? `; first bad: ${bad.slice(0, 5).join('; ')}` : ''}`,
    growTo > 3
      ? `grow 3 → ${growTo}: settled in ${Number.isFinite(growMs) ? `${(growMs / 1000).toFixed(1)} s, ${growMB.toFixed(1)} MB moved (${(growMB / (growMs / 1000)).toFixed(1)} MB/s)` : 'NOT settled'}; replicas per peer max/mean ${(bal.max / bal.mean).toFixed(2)} (${bal.max} / ${bal.mean.toFixed(1)}); stream resets ${afterGrow.resets}, frames dropped ${afterGrow.dropped}`
      : 'no growth',
    growTo > 3 ? `small puts during the grow: n=${duringGrow.length} p50 ${ms(quantile(duringGrow, 0.5))} p99 ${ms(quantile(duringGrow, 0.99))} (alone: p99 ${ms(quantile(alone, 0.99))}); refused or failed ${growFailures}` : '',
    drainLine,
    killLine,
  ];
  process.stdout.write(lines.join('\n') + '\n');
}

main()
  .catch((err: unknown) => {
    log(`bench failed: ${(err as Error).stack ?? String(err)}`);
    process.exitCode = 1;
  })
  .finally(async () => {
    if (values.logs !== undefined && cluster !== null) {
      await mkdir(values.logs, { recursive: true });
      for (const [i, p] of cluster.peers.entries()) await writeFile(join(values.logs, `p${i}.log`), p.stderr);
    }
    if (values['graceful-stop'] && cluster !== null) {
      for (const p of cluster.peers) p.signal('SIGINT');
      await Promise.all(cluster.peers.map((p) => p.waitExit(20_000)));
    }
    await cluster?.destroy();
    process.exit();
  });
