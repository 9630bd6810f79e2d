/** A small in-process cluster whose shards are all writable, for the key-value tests. */
import { join } from 'node:path';
import { createPeer, type Peer } from '../../node/index.js';
import { createLogger } from '../../node/log.js';
import type { ShardSummary } from '../../node/store-api.js';
import { waitFor } from './harness.js';

const quiet = createLogger('silent');

export function startKvPeer(dir: string, name: string, joinAddrs: string[] = []): Promise<Peer> {
  return createPeer({ dataDir: join(dir, name), listen: ['/ip4/127.0.0.1/tcp/0'], http: '127.0.0.1:0', join: joinAddrs }, { log: quiet });
}

/** Wait (bounded) until `GET /v1/status` of the peer at `httpAddress` shows every shard writable. */
export async function waitAllShardsWritable(httpAddress: string, timeoutMs = 30_000): Promise<void> {
  await waitFor(
    'every shard writable (GET /v1/status shards.writableShards === shardCount)',
    async () => {
      const res = await fetch(`http://${httpAddress}/v1/status`, { signal: AbortSignal.timeout(2000) });
      const { shards } = (await res.json()) as { shards?: ShardSummary | null };
      return shards != null && shards.shardCount > 0 && shards.writableShards === shards.shardCount;
    },
    { timeoutMs, intervalMs: 100 },
  );
}

/** Three peers in this process (the second and third join the first); resolves once every shard is writable. */
export async function startWritableCluster(dir: string): Promise<Peer[]> {
  const peers: Peer[] = [await startKvPeer(dir, 'p0')];
  const seed = peers[0] as Peer;
  try {
    for (let i = 1; i < 3; i++) peers.push(await startKvPeer(dir, `p${i}`, [seed.joinToken as string]));
    await waitAllShardsWritable(seed.httpAddress as string);
  } catch (err) {
    await Promise.all(peers.map((p) => p.stop().catch(() => {})));
    throw err;
  }
  return peers;
}
