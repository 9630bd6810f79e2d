/**
 * Tasks through the library API on 3 peers in one process (issue 11): a type handled by one
 * peer only runs there; a failing attempt is retried and its reason kept; a capacity change
 * (vertical scaling) changes the task slots the peer offers, and a task that needs them is
 * placed on it. The process test (tasks-process.test.ts) covers deaths and the autoscaler.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createPeer, type Peer } from '../../node/index.js';
import { createLogger } from '../../node/log.js';
import { makeTempDir, removeDir, waitFor } from './harness.js';
import { startWritableCluster } from './kv-cluster.js';

interface WorkerView {
  id: string;
  cpu: number;
  freeCpu: number;
}

/** The coordinator's scheduler view (GET /v1/scheduler answers it on the coordinator only). */
async function schedulerWorkers(peers: Peer[]): Promise<WorkerView[] | null> {
  for (const p of peers) {
    const res = await fetch(`http://${p.httpAddress}/v1/scheduler`, { signal: AbortSignal.timeout(2000) });
    const { scheduler } = (await res.json()) as { scheduler: { workers: WorkerView[] } | null };
    if (scheduler !== null) return scheduler.workers;
  }
  return null;
}

describe('tasks: 3 peers in one process (library API)', function () {
  this.timeout(90_000);
  let dir: string;
  let peers: Peer[] = [];

  before(async () => {
    dir = await makeTempDir();
    peers = await startWritableCluster(dir);
  });

  after(async () => {
    await Promise.all(peers.map((p) => p.stop().catch(() => {})));
    await removeDir(dir);
  });

  it('a type handled on one peer runs there; result() gives the outcome; a failed attempt is retried with its reason', async () => {
    const [a, , c] = peers as [Peer, Peer, Peer];
    let runs = 0;
    c.handle('upper', async (payload, ctx) => {
      runs++;
      if ((payload as { failFirst?: boolean }).failFirst === true && ctx.attempt === 1) throw new Error('first attempt fails on purpose');
      return String((payload as { text: string }).text).toUpperCase();
    });
    const t = await a.submit({ type: 'upper', payload: { text: 'shoal' } });
    const rec = await t.result(30_000);
    assert.equal(rec.state, 'succeeded', JSON.stringify(rec));
    assert.equal(rec.result, 'SHOAL');
    assert.equal(rec.peer, c.peerId, 'only the peer that handles the type runs it');

    const t2 = await a.submit({ type: 'upper', payload: { text: 'again', failFirst: true }, maxAttempts: 3 });
    const rec2 = await t2.result(30_000);
    assert.equal(rec2.state, 'succeeded', JSON.stringify(rec2));
    assert.equal(rec2.attempts, 2);
    assert.ok(rec2.reasons.some((r) => r.includes('first attempt fails on purpose')), JSON.stringify(rec2.reasons));
    assert.equal(runs, 3);
    // Every peer reads the same record.
    assert.deepEqual((await peers[1]!.task(t2.id))?.state, 'succeeded');
  });

  it('vertical scaling: doubling a peer\'s capacity doubles its task slots, and a task needing them is placed there', async () => {
    const b = peers[1] as Peer;
    const before = await schedulerWorkers(peers);
    const slots1 = before?.find((w) => w.id === b.peerId)?.cpu;
    assert.ok(slots1 !== undefined && slots1 >= 1, JSON.stringify(before));
    const res = await fetch(`http://${b.httpAddress}/v1/capacity`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ capacity: 2 }) });
    assert.equal(res.status, 202, await res.text());
    await waitFor(
      `the coordinator to see ${b.peerId.slice(-6)} offer ${2 * slots1} task slots`,
      async () => (await schedulerWorkers(peers))?.find((w) => w.id === b.peerId)?.cpu === 2 * slots1,
      { timeoutMs: 20_000, intervalMs: 100 },
    );
    for (const w of (await schedulerWorkers(peers)) ?? []) if (w.id !== b.peerId) assert.equal(w.cpu, slots1, 'the others are unchanged');
    // Only b has that many cores free: a task that needs them runs there.
    const t = await peers[0]!.submit({ type: 'sleep', payload: { ms: 1 }, resources: { cpu: 2 * slots1, memMb: 1 } });
    const rec = await t.result(30_000);
    assert.equal(rec.state, 'succeeded', JSON.stringify(rec));
    assert.equal(rec.peer, b.peerId);
  });
});

describe('autoscaler: the exec provider runs the operator command with the desired count', function () {
  this.timeout(60_000);
  let dir: string;
  let peer: Peer | null = null;
  after(async () => {
    await peer?.stop().catch(() => {});
    await removeDir(dir);
  });

  it('one peer below --autoscale-min 2 runs the command once with {count} = 2 and SHOAL_CURRENT_PEERS = 1', async () => {
    dir = await makeTempDir();
    const out = join(dir, 'scale.log');
    peer = await createPeer(
      {
        dataDir: join(dir, 'p0'),
        listen: ['/ip4/127.0.0.1/tcp/0'],
        http: '127.0.0.1:0',
        autoscale: {
          mode: 'exec',
          minPeers: 2,
          maxPeers: 4,
          targetUtilization: 0.6,
          scaleUpWindowMs: 500,
          cooldownMs: 1000,
          execCommand: `printf '%s %s\\n' {count} "$SHOAL_CURRENT_PEERS" >> '${out}'`,
          dir: null,
        },
      },
      { log: createLogger('silent') },
    );
    await waitFor('the command to run', async () => (await readFile(out, 'utf8').catch(() => '')).length > 0, { timeoutMs: 30_000, intervalMs: 100 });
    const res = await fetch(`http://${peer.httpAddress}/v1/autoscaler`);
    const { autoscaler } = (await res.json()) as { autoscaler: { mode: string; lastProvider: string; actions: Array<{ action: string; desired: number; reason: string }> } };
    assert.equal(autoscaler.mode, 'exec');
    assert.match(autoscaler.lastProvider, /exited 0$/);
    assert.equal(autoscaler.actions[0]?.action, 'up', JSON.stringify(autoscaler.actions));
    assert.equal(autoscaler.actions[0]?.desired, 2);
    // One action at a time: while the peers have not reached 2, the command does not run again.
    await new Promise((r) => setTimeout(r, 3000));
    assert.equal(await readFile(out, 'utf8'), '2 1\n');
  });
});
