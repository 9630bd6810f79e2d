/**
 * /healthz tells the truth (issue 9): 503 with the problems while a peer cannot do its part, 200
 * only once it can. And a peer whose newest LevelDB log was torn in half after a SIGKILL
 * restarts, catches up, and serves every key; so does one whose stored records were damaged
 * (bit flips the record checksums find).
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { join } from 'node:path';
import { openDiskStore } from '../../storage/level-store.js';
import { makeTempDir, ProcessPeer, removeDir, waitFor } from './harness.js';
import { Cluster, kvPath, request, tearNewestLevelDbLog } from './process-cluster.js';

async function health(address: string): Promise<{ status: number; problems: string[] }> {
  const res = await fetch(`http://${address}/healthz`, { signal: AbortSignal.timeout(3000) });
  const body = (await res.json()) as { problems?: string[] };
  return { status: res.status, problems: body.problems ?? [] };
}

/**
 * Polls a restarted peer until its /healthz says 200 and every key (`v:<key>`) reads back
 * through it; whenever it says 200, every key must read back (it never claims health early).
 */
async function servesEveryKeyWhenHealthy(address: string, keys: string[], agent: http.Agent): Promise<void> {
  let healthySeen = false;
  await waitFor(
    'the restarted peer to serve every key',
    async () => {
      const h = await health(address);
      let ok = 0;
      for (const key of keys) {
        const r = await request(agent, address, 'GET', kvPath(key), undefined, 3000).catch(() => null);
        if (r !== null && r.status === 200 && r.body.toString() === `v:${key}`) ok++;
      }
      if (h.status === 200) {
        healthySeen = true;
        assert.equal(ok, keys.length, `/healthz said 200 while ${keys.length - ok} keys did not read back`);
      }
      return ok === keys.length && h.status === 200;
    },
    { timeoutMs: 60_000, intervalMs: 500 },
  );
  assert.ok(healthySeen);
}

describe('health and torn logs', function () {
  this.timeout(120_000);
  const cleanup: Array<() => Promise<void>> = [];
  after(async () => {
    for (const f of cleanup.reverse()) await f().catch(() => {});
  });

  it('/healthz answers 503 naming the problem while a peer knows no coordinator, 200 on a working peer', async () => {
    const dir = await makeTempDir();
    cleanup.push(() => removeDir(dir));
    // A join address nobody answers: this peer never learns a coordinator.
    const lonely = await ProcessPeer.start(join(dir, 'lonely'), { join: ['/ip4/127.0.0.1/tcp/9/p2p/12D3KooWJmHGoTpnwbhFpWDnrD3LRNkfmZDmdnf7snitw2TV3zga'], extraArgs: ['--insecure'] });
    cleanup.push(() => lonely.destroy());
    const sick = await waitFor('503 from the lonely peer', async () => {
      const h = await health(lonely.httpAddress);
      return h.status === 503 ? h : null;
    }, { timeoutMs: 15_000, intervalMs: 250 });
    assert.ok(sick.problems.some((p) => p.includes('no coordinator')), JSON.stringify(sick.problems));
    const seed = await ProcessPeer.start(join(dir, 'seed'));
    cleanup.push(() => seed.destroy());
    await waitFor('200 from a seed that elected itself', async () => (await health(seed.httpAddress)).status === 200, { timeoutMs: 15_000, intervalMs: 250 });
  });

  it('a peer whose newest LevelDB log is cut in half after SIGKILL restarts, catches up and serves every key; /healthz is 200 only when it does', async () => {
    const c = await Cluster.create();
    cleanup.push(() => c.destroy());
    await c.startPeers(3);
    await c.waitSettled('start', 60_000);
    const agent = new http.Agent({ keepAlive: true });
    cleanup.push(async () => agent.destroy());
    const keys = Array.from({ length: 200 }, (_, k) => `torn-${k}`);
    for (const key of keys) assert.equal((await request(agent, c.peers[0]!.httpAddress, 'PUT', kvPath(key), Buffer.from(`v:${key}`), 5000)).status, 200);
    const coordinator = (await c.status(c.peers[0]!)).coordinator;
    const i = c.peers.findIndex((p) => p.peerId !== coordinator);
    const victim = c.peers[i]!;
    victim.signal('SIGKILL');
    await victim.waitExit();
    tearNewestLevelDbLog(victim.dataDir);
    const again = await ProcessPeer.start(victim.dataDir, { join: [c.peers.find((p) => p !== victim)!.joinToken] });
    c.peers[i] = again;
    await servesEveryKeyWhenHealthy(again.httpAddress, keys, agent);
    await c.waitSettled('after the torn restart', 60_000);
  });

  it('a peer whose stored Raft entry and shard log groups have a flipped bit restarts, cuts the damaged records, and serves every key', async () => {
    const c = await Cluster.create();
    cleanup.push(() => c.destroy());
    await c.startPeers(3);
    await c.waitSettled('start', 60_000);
    const agent = new http.Agent({ keepAlive: true });
    cleanup.push(async () => agent.destroy());
    const keys = Array.from({ length: 200 }, (_, k) => `rot-${k}`);
    for (const key of keys) assert.equal((await request(agent, c.peers[0]!.httpAddress, 'PUT', kvPath(key), Buffer.from(`v:${key}`), 5000)).status, 200);
    const coordinator = (await c.status(c.peers[0]!)).coordinator;
    const i = c.peers.findIndex((p) => p.peerId !== coordinator);
    const victim = c.peers[i]!;
    victim.signal('SIGKILL');
    await victim.waitExit();
    // Flip one bit in the newest Raft entry and in the newest op-log group of every shard.
    const store = await openDiskStore(victim.dataDir);
    let damagedGroups = 0;
    try {
      const flip = async (view: ReturnType<typeof store.sublevel>, key: string): Promise<void> => {
        const b = Uint8Array.from((await view.get(key))!);
        b[b.length - 1] = (b[b.length - 1] as number) ^ 0x04;
        await view.put(key, b, { sync: true });
      };
      const raft = store.sublevel('raft');
      let lastEntry: string | null = null;
      for await (const [key] of raft.iterate({ gt: 'e', lt: 'f' })) lastEntry = key;
      assert.ok(lastEntry !== null, 'a raft entry to damage');
      await flip(raft, lastEntry);
      const shards = store.sublevel('shards');
      const newest = new Map<string, string>();
      for await (const [key] of shards.iterate()) if (/^[0-9a-f]{4}l/.test(key)) newest.set(key.slice(0, 4), key);
      for (const key of newest.values()) await flip(shards, key);
      damagedGroups = newest.size;
    } finally {
      await store.close();
    }
    assert.ok(damagedGroups > 0, 'shard log groups to damage');
    const again = await ProcessPeer.start(victim.dataDir, { join: [c.peers.find((p) => p !== victim)!.joinToken] });
    c.peers[i] = again;
    await servesEveryKeyWhenHealthy(again.httpAddress, keys, agent);
    assert.match(again.stderr, /raft log: a damaged entry was found at open/);
    const repaired = again.stderr.split('\n').filter((l) => l.includes('shard log: damaged records found at open were removed')).length;
    assert.equal(repaired, damagedGroups, `every damaged shard log was cut (${repaired} of ${damagedGroups})`);
    await c.waitSettled('after the damaged restart', 60_000);
    // Writes go on through it.
    for (const key of keys.slice(0, 20)) assert.equal((await request(agent, again.httpAddress, 'PUT', kvPath(key), Buffer.from('again'), 5000)).status, 200);
  });
});
