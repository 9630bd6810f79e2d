/**
 * Tasks and the autoscaler across real `shoal` processes (issue 11). Three peers run with the
 * `local` autoscaler (3 to 5 peers, short windows) and one task slot each. 1,000 `sleep` tasks
 * submitted through every peer make it start two more `shoal start` processes (5 peers); a worker
 * is SIGKILLed while it runs some; every task still completes (its tasks are dispatched again
 * within seconds), none fails. Once idle, the autoscaler stops peers it started (they drain,
 * then leave) down to 3 alive. Then the coordinator is SIGKILLed under 40 more tasks (1 s each): the next
 * one rebuilds the queue from the store and every task completes. An idempotency key gives one
 * task; a bad field is a 400 naming it.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { isFinishedState, type TaskState } from '../../protocols/scheduler/index.js';
import { ProcessPeer, waitFor } from './harness.js';
import { Cluster } from './process-cluster.js';

interface Rec {
  id: string;
  state: TaskState;
  attempts: number;
  peer: string | null;
  reasons: string[];
  finishedAt?: number | null;
}

async function post(address: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`http://${address}/v1/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal: AbortSignal.timeout(20_000) });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

/** One poll: records each listed task that has finished (asking `peers` in turn); true once all have. */
async function pollFinished(ids: readonly string[], done: Map<string, Rec>, peers: readonly ProcessPeer[]): Promise<boolean> {
  for (const id of ids) {
    if (done.has(id)) continue;
    const res = await fetch(`http://${peers[done.size % peers.length]!.httpAddress}/v1/tasks/${id}`, { signal: AbortSignal.timeout(5000) }).catch(() => null);
    if (res === null || !res.ok) return false;
    const rec = (await res.json()) as Rec;
    if (!isFinishedState(rec.state)) return false;
    done.set(id, rec);
  }
  return true;
}

/** When a task's reason was written (its "(at ISO time)" suffix), ms since the epoch; 0 without one. */
const reasonAt = (reason: string): number => Date.parse(/\(at ([0-9T:.\-Z]+)\)/.exec(reason)?.[1] ?? '') || 0;

interface AutoscalerStatus {
  startedPeers: number[];
  decisions: Array<{ action: string; current: number; desired: number; reason: string }>;
  actions: Array<{ action: string; current: number; desired: number; reason: string }>;
}

async function autoscaler(address: string): Promise<AutoscalerStatus | null> {
  const res = await fetch(`http://${address}/v1/autoscaler`, { signal: AbortSignal.timeout(3000) }).catch(() => null);
  if (res === null || !res.ok) return null;
  return ((await res.json()) as { autoscaler: AutoscalerStatus }).autoscaler;
}

describe('tasks: 1,000 tasks, the local autoscaler grows 3 -> 5 and back, a worker and then the coordinator killed mid-run', function () {
  this.timeout(240_000);
  let cluster: Cluster | null = null;
  const startedPids = new Set<number>();
  after(async () => {
    for (const p of cluster?.peers ?? []) for (const pid of (await autoscaler(p.httpAddress).catch(() => null))?.startedPeers ?? []) startedPids.add(pid);
    const killStarted = (): void => {
      for (const pid of startedPids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone already
        }
      }
    };
    killStarted();
    const dir = cluster?.dir;
    await cluster?.destroy();
    // A coordinator's autoscaler may start peers while the others are being stopped, and peers a
    // killed coordinator started outlive it: every process whose data dir is under this test's
    // dir goes (bounded: a few rounds).
    if (dir !== undefined) {
      for (let round = 0; round < 5; round++) {
        const r = spawnSync('pkill', ['-9', '-f', `${dir}/`]);
        if (r.status !== 0) break; // none matched
        await new Promise((res) => setTimeout(res, 200));
      }
    }
  });

  it("every task completes once a dead worker's tasks are dispatched again; none fails; idempotency keys dedupe", async () => {
    const c = (cluster = await Cluster.create([
      '--task-slots',
      '1',
      '--autoscale',
      'local',
      '--autoscale-min',
      '3',
      '--autoscale-max',
      '5',
      '--autoscale-up-window-ms',
      '2000',
      '--autoscale-down-window-ms',
      '5000',
      '--autoscale-cooldown-ms',
      '3000',
    ]));
    await c.startPeers(3);
    await c.waitWritable('3 peers', c.peers, 90_000);
    const alive = async (): Promise<number> => {
      const p = c.peers.find((x) => x.running)!;
      return (await c.status(p)).members.filter((m) => m.state === 'alive').length;
    };

    const bad = await post(c.peers[1]!.httpAddress, { type: 'sleep', priority: 'high' });
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error, 'invalid_task');
    assert.match(String(bad.json.message), /priority/);
    const once = await post(c.peers[1]!.httpAddress, { type: 'sleep', payload: { ms: 1 }, idempotencyKey: 'same' });
    const twice = await post(c.peers[2]!.httpAddress, { type: 'sleep', payload: { ms: 1 }, idempotencyKey: 'same' });
    assert.equal(once.status, 202);
    assert.equal(twice.json.id, once.json.id, 'one task per idempotency key');

    const st = await c.status(c.peers[0]!);
    const ids: string[] = [];
    const queue = Array.from({ length: 1000 }, (_, i) => i);
    await Promise.all(
      Array.from({ length: 8 }, async (_, w) => {
        for (let guard = 0; guard < 2000 && queue.length > 0; guard++) {
          const i = queue.shift()!;
          const r = await post(c.peers[(i + w) % 3]!.httpAddress, { type: 'sleep', payload: { ms: 50 }, timeoutMs: 20_000, maxAttempts: 5 });
          assert.equal(r.status, 202, JSON.stringify(r.json));
          ids.push(String(r.json.id));
        }
      }),
    );
    // The queue asks for peers: the coordinator's autoscaler starts two.
    await waitFor('the autoscaler to grow the cluster to 5 peers', async () => (await alive()) >= 5, { timeoutMs: 60_000, intervalMs: 250 });
    for (const p of c.peers) for (const pid of (await autoscaler(p.httpAddress))?.startedPeers ?? []) startedPids.add(pid);
    // A worker that is neither the coordinator nor the peer we ask is killed while it runs tasks.
    const victim = c.peers.find((p, i) => i !== 0 && p.peerId !== st.coordinator)!;
    await waitFor(
      'the victim to run tasks',
      async () => {
        const coord = c.peers.find((p) => p.peerId === st.coordinator)!;
        const res = await fetch(`http://${coord.httpAddress}/v1/scheduler`);
        const { scheduler } = (await res.json()) as { scheduler: { workers: Array<{ id: string; running: number }> } | null };
        return (scheduler?.workers.find((x) => x.id === victim.peerId)?.running ?? 0) > 0;
      },
      { timeoutMs: 60_000, intervalMs: 50 },
    );
    const killedAtWall = Date.now();
    victim.signal('SIGKILL');
    const killedAt = performance.now();
    await victim.waitExit();
    const live = c.peers.filter((p) => p !== victim);
    const coordPeer = c.peers.find((p) => p.peerId === st.coordinator)!;
    const done = new Map<string, Rec>();
    await waitFor('every task to finish', () => pollFinished(ids, done, live), { timeoutMs: 180_000, intervalMs: 500 }).catch(async (err: Error) => {
      const res = await fetch(`http://${coordPeer.httpAddress}/v1/scheduler`).catch(() => null);
      const sch = res === null ? null : ((await res.json()) as { scheduler: { queued: number; running: number; workers: unknown[]; decisions: unknown[] } | null }).scheduler;
      const m = (await c.status(coordPeer)).members.map((x) => `${x.peerId.slice(-6)}:${x.state}`).join(' ');
      const a = await autoscaler(coordPeer.httpAddress);
      throw new Error(
        `${err.message}\n${done.size} done; members: ${m}\nscheduler: queued ${sch?.queued} running ${sch?.running} workers ${JSON.stringify(sch?.workers)}\nlast decisions: ${JSON.stringify(sch?.decisions.slice(-4)).slice(0, 1500)}\nautoscaler: ${JSON.stringify(a?.actions)}\n${coordPeer.stderr.slice(-3000)}`,
      );
    });
    const failed = [...done.values()].filter((r) => r.state !== 'succeeded');
    assert.deepEqual(failed.map((r) => `${r.id} ${r.state} ${r.reasons.join('; ')}`), [], 'none failed');
    const moved = [...done.values()].filter((r) => r.reasons.some((x) => x.includes(victim.peerId))) as Array<Rec & { startedAt: number }>;
    // When the scheduler gave up each attempt on the killed worker (its reason carries the time),
    // and when the task's last attempt started (it waits for a free slot like every queued task).
    const givenUpMs = moved.map((r) => {
      const at = reasonAt(r.reasons.find((x) => x.includes(victim.peerId)) ?? '');
      return at === 0 ? Infinity : at - killedAtWall;
    });
    const redispatchMs = Math.max(...givenUpMs);
    const restartedMs = Math.max(...moved.map((r) => r.startedAt - killedAtWall));
    console.log(
      `      ${done.size} tasks succeeded; ${moved.length} were on the killed worker: queued again ${givenUpMs.map((x) => `${x} ms`).join(', ')} after the kill, the last running again after ${restartedMs} ms; all done ${((performance.now() - killedAt) / 1000).toFixed(1)} s after it; reasons: ${moved.map((r) => r.reasons.join(' / ')).join(' | ').slice(0, 600)}`,
    );
    assert.ok(moved.length > 0, 'some tasks were dispatched again after the kill');
    assert.ok(moved.every((r) => r.peer !== victim.peerId));
    // Silence of 3 s makes a worker dead to the scheduler; allow for a loaded machine.
    assert.ok(redispatchMs <= 10_000, `queued again within 10 s of the kill (${redispatchMs} ms)`);
    // Idle: the autoscaler stops peers it started (they drain first) until 3 are alive.
    await waitFor('the autoscaler to shrink the cluster back to 3 alive peers', async () => (await alive()) <= 3, { timeoutMs: 90_000, intervalMs: 500 }).catch(async (err: Error) => {
      const a = await autoscaler(coordPeer.httpAddress);
      const m = (await c.status(coordPeer)).members.map((x) => `${x.peerId.slice(-6)}:${x.state}`).join(' ');
      throw new Error(`${err.message}\nmembers: ${m}\nautoscaler: ${JSON.stringify(a?.actions)}\nlast: ${JSON.stringify(a?.decisions.slice(-3))}`);
    });
    const decisions = (await autoscaler(coordPeer.httpAddress))?.actions ?? [];
    console.log(`      autoscaler actions: ${decisions.filter((d) => d.action !== 'none').map((d) => `${d.action} ${d.current}->${d.desired} (${d.reason})`).join(' | ')}`);
    assert.ok(decisions.some((d) => d.action === 'up'), 'a scale-up decision');
    assert.ok(decisions.some((d) => d.action === 'down'), 'a scale-down decision');

    // The coordinator SIGKILLed while tasks are queued and running on it and the others: the
    // next coordinator rebuilds the queue from the store, gives up the dead one's attempts once
    // it stays silent, and every task completes.
    for (const pid of (await autoscaler(coordPeer.httpAddress))?.startedPeers ?? []) startedPids.add(pid);
    const asker0 = c.peers.find((p) => p.running)!;
    await waitFor(
      'three live voters (so the coordinator can be replaced)',
      async () => {
        const s = await c.status(asker0);
        const aliveIds = new Set(s.members.filter((m) => m.state === 'alive').map((m) => m.peerId));
        return s.voters.length === 3 && s.voters.every((v) => aliveIds.has(v));
      },
      { timeoutMs: 60_000, intervalMs: 250 },
    );
    const leaderId = (await c.status(asker0)).coordinator;
    const leader = c.peers.find((p) => p.peerId === leaderId && p.running);
    const asker = c.peers.find((p) => p.running && p !== leader);
    assert.ok(leader !== undefined && asker !== undefined, `the coordinator ${leaderId} is one of the first peers`);
    const ids2: string[] = [];
    for (let i = 0; i < 40; i++) {
      const r = await post(asker.httpAddress, { type: 'sleep', payload: { ms: 1000 }, timeoutMs: 20_000, maxAttempts: 5 });
      assert.equal(r.status, 202, JSON.stringify(r.json));
      ids2.push(String(r.json.id));
    }
    // Kill it while a task it dispatched to itself is stored as running there and has most of
    // its second to go (the next coordinator must then give that attempt up and run it again).
    let onDead: string | null = null;
    await waitFor(
      'the coordinator to be running one of them itself, recorded in the store',
      async () => {
        const res = await fetch(`http://${leader.httpAddress}/v1/scheduler`);
        const { scheduler } = (await res.json()) as { scheduler: { decisions: Array<{ decision: { kind: string; taskId: string; worker?: string } }> } | null };
        const mine = (scheduler?.decisions ?? []).filter((d) => d.decision.kind === 'dispatch' && d.decision.worker === leader.peerId).pop();
        if (mine === undefined) return false;
        const rec = (await (await fetch(`http://${asker.httpAddress}/v1/tasks/${mine.decision.taskId}`)).json()) as Rec & { startedAt: number | null };
        if (rec.state !== 'running' || rec.peer !== leader.peerId || rec.startedAt === null || Date.now() - rec.startedAt > 400) return false;
        onDead = rec.id;
        return true;
      },
      { timeoutMs: 30_000, intervalMs: 20 },
    );
    const killedWall2 = Date.now();
    leader.signal('SIGKILL');
    const leaderKilledAt = performance.now();
    await leader.waitExit();
    const done2 = new Map<string, Rec>();
    await waitFor('every task to finish under the next coordinator', () => pollFinished(ids2, done2, [asker]), { timeoutMs: 120_000, intervalMs: 500 });
    const failed2 = [...done2.values()].filter((r) => r.state !== 'succeeded');
    assert.deepEqual(failed2.map((r) => `${r.id} ${r.state} ${r.reasons.join('; ')}`), [], 'none failed after the coordinator died');
    // Attempts given up on the dead coordinator after it was killed (their reasons carry the time).
    const onLeader = [...done2.values()].filter((r) => r.reasons.some((x) => x.includes(leader.peerId) && reasonAt(x) >= killedWall2));
    const newLeader = (await c.status(asker)).coordinator;
    console.log(
      `      coordinator killed: ${done2.size} tasks succeeded ${((performance.now() - leaderKilledAt) / 1000).toFixed(1)} s later under coordinator ${newLeader?.slice(-6)}; ${onLeader.length} attempts on the dead one were run again`,
    );
    assert.notEqual(newLeader, leader.peerId);
    assert.ok(onLeader.length > 0, 'the attempts running on the killed coordinator were dispatched again');
    assert.ok(
      onLeader.some((r) => r.id === onDead),
      `the task running on the coordinator when it was killed was run again: ${JSON.stringify(done2.get(onDead ?? ''))}`,
    );
    // Nothing completes on a dead peer: a task that succeeded there finished before the kill
    // (its outcome may be recorded a moment later by the next coordinator).
    const afterDeath = [...done2.values()].filter((r) => r.peer === leader.peerId && (r.finishedAt ?? 0) > killedWall2 + 2000);
    assert.deepEqual(afterDeath, [], 'no task finished on the killed coordinator after its death');
  });
});
