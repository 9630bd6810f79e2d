// npm run bench:checks [-- --seconds 5 --rounds 5 --concurrency 16]
// What the trust checks of issue 9 cost. Not a test: it prints numbers.
//  1. Per-operation cost of the record checksum (CRC-32) and of the HTTP request guard.
//  2. Puts/s of a default (secured: cluster key, map checks, checksums) 3-peer cluster against
//     an --insecure one (no cluster key; the map checks and checksums stay: they cannot be
//     turned off), in alternating rounds on this machine, and their ratio.
import '../../node/polyfill.js';
import http from 'node:http';
import { parseArgs } from 'node:util';
import { checkRequest } from '../../node/http/request-guard.js';
import { crc32, crc32Portable } from '../../storage/checksum.js';
import { Cluster, kvPath, request } from '../integration/process-cluster.js';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '5' },
    rounds: { type: 'string', default: '5' },
    concurrency: { type: 'string', default: '16' },
  },
});
const seconds = Number(values.seconds);
const rounds = Number(values.rounds);
const concurrency = Number(values.concurrency);

function perOpNs(label: string, n: number, fn: () => void): number {
  for (let i = 0; i < Math.min(n, 1000); i++) fn();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) fn();
  const ns = Number(process.hrtime.bigint() - t0) / n;
  console.log(`  ${label.padEnd(44)} ${ns < 10_000 ? `${ns.toFixed(0)} ns` : `${(ns / 1000).toFixed(1)} µs`}`);
  return ns;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? (s[(s.length - 1) / 2] as number) : ((s[s.length / 2 - 1] as number) + (s[s.length / 2] as number)) / 2;
}

async function putRound(address: string, agent: http.Agent, round: number): Promise<{ ops: number; errors: number }> {
  const deadline = Date.now() + seconds * 1000;
  let ops = 0;
  let errors = 0;
  const value = Buffer.alloc(100, 'x');
  await Promise.all(
    Array.from({ length: concurrency }, async (_, w) => {
      for (let i = 0; Date.now() < deadline && i < 1_000_000; i++) {
        const r = await request(agent, address, 'PUT', kvPath(`r${round}-w${w}-${i % 500}`), value, 5000).catch(() => null);
        if (r !== null && r.status === 200) ops++;
        else errors++;
      }
    }),
  );
  return { ops: ops / seconds, errors };
}

async function main(): Promise<void> {
  console.log('Per-operation cost (this process, one core):');
  const small = new Uint8Array(100).fill(7);
  const big = new Uint8Array(1024 * 1024).fill(7);
  perOpNs('crc32, 100 B record', 200_000, () => crc32(small));
  const bigNs = perOpNs('crc32, 1 MiB record', 300, () => crc32(big));
  console.log(`  (crc32 of 1 MiB: ${((1024 * 1024) / bigNs * 1000).toFixed(0)} MB/s; portable fallback: ${((1024 * 1024) / perOpNs('crc32 portable fallback, 1 MiB', 20, () => crc32Portable(big)) * 1000).toFixed(0)} MB/s)`);
  const headers = { host: '127.0.0.1:7070', authorization: 'Bearer correct-horse-battery-staple-42', 'content-type': 'application/json' };
  perOpNs('HTTP guard, no token', 200_000, () => checkRequest('PUT', '/v1/kv/a', headers, { allowedHosts: [] }));
  perOpNs('HTTP guard, bearer token', 200_000, () => checkRequest('PUT', '/v1/kv/a', headers, { allowedHosts: [], bearerToken: 'correct-horse-battery-staple-42' }));

  console.log(`\nPuts/s, 3 peers each, 100 B values, concurrency ${concurrency}, a warm-up round each, then ${rounds} rounds of ${seconds} s alternating:`);
  const secured = await Cluster.create(['--log-level', 'error']);
  const insecure = await Cluster.create(['--log-level', 'error', '--insecure']);
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency * 2 });
  try {
    await secured.startPeers(3);
    await insecure.startPeers(3);
    await secured.waitSettled('secured start', 90_000);
    await insecure.waitSettled('insecure start', 90_000);
    // One uncounted round each first: JIT, LevelDB's first compactions, connection set-up.
    for (const c of [secured, insecure]) await putRound(c.peers[0]!.httpAddress, agent, -1);
    const a: number[] = [];
    const b: number[] = [];
    for (let r = 0; r < rounds; r++) {
      // Alternate which goes first, so drift on a shared machine hits both alike.
      const order = r % 2 === 0 ? (['secured', 'insecure'] as const) : (['insecure', 'secured'] as const);
      for (const which of order) {
        const c = which === 'secured' ? secured : insecure;
        const res = await putRound(c.peers[r % 3]!.httpAddress, agent, r);
        (which === 'secured' ? a : b).push(res.ops);
        console.log(`  round ${r + 1} ${which.padEnd(8)} ${res.ops.toFixed(0).padStart(6)} puts/s${res.errors > 0 ? `  (${res.errors} failed)` : ''}`);
      }
    }
    const ma = median(a);
    const mb = median(b);
    console.log(`\n  median secured ${ma.toFixed(0)} puts/s, insecure ${mb.toFixed(0)} puts/s: secured/insecure = ${(ma / mb).toFixed(3)} (cost of the cluster key ${((1 - ma / mb) * 100).toFixed(1)} %)`);
  } finally {
    agent.destroy();
    await secured.destroy();
    await insecure.destroy();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
