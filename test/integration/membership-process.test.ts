import assert from 'node:assert/strict';
import { join } from 'node:path';
import { makeTempDir, ProcessPeer, removeDir, stateOf, waitFor } from './harness.js';

/** Every peer in `observers` shows `target` in `state` (checked over HTTP). */
async function allSee(observers: ProcessPeer[], target: string, pred: (m: { state: string; incarnation: number } | undefined) => boolean): Promise<boolean> {
  const statuses = await Promise.all(observers.map((o) => o.status()));
  return statuses.every((s) => pred(s.members.find((m) => m.peerId === target)));
}

/** A peer's own count of transitions of other members into `state` (GET /metrics). */
async function transitionsTo(peer: ProcessPeer, state: string): Promise<number> {
  const text = await (await fetch(`http://${peer.httpAddress}/metrics`)).text();
  const m = new RegExp(`^shoal_member_transitions_total\\{to="${state}"\\} (\\d+)$`, 'm').exec(text);
  assert.ok(m, `metrics of ${peer.peerId} lack transitions to ${state}`);
  return Number(m[1]);
}

describe('membership: 4 shoal processes, killed, frozen and restarted', function () {
  this.timeout(120_000);
  let dir: string;
  let peers: ProcessPeer[] = [];

  before(async () => {
    dir = await makeTempDir();
    const seed = await ProcessPeer.start(join(dir, 'p0'));
    peers.push(seed);
    const rest = await Promise.all([1, 2, 3].map((i) => ProcessPeer.start(join(dir, `p${i}`), { join: [seed.joinToken] })));
    peers.push(...rest);
    const ids = peers.map((p) => p.peerId);
    await waitFor(
      'all 4 to see 4 alive',
      async () => {
        const st = await Promise.all(peers.map((p) => p.status()));
        return st.every((s) => ids.every((id) => stateOf(s, id) === 'alive'));
      },
      { timeoutMs: 20_000 },
    );
  });

  after(async () => {
    await Promise.all(peers.map((p) => p.destroy()));
    await removeDir(dir);
  });

  it('SIGKILL: the rest see the peer dead', async () => {
    const victim = peers[3] as ProcessPeer;
    victim.signal('SIGKILL');
    await victim.waitExit();
    const rest = peers.slice(0, 3);
    await waitFor('dead at every other peer', () => allSee(rest, victim.peerId, (m) => m?.state === 'dead'), { timeoutMs: 15_000 });
  });

  it('SIGKILLed peer restarted on the same data dir returns with the same peer id', async () => {
    const old = peers[3] as ProcessPeer;
    const again = await ProcessPeer.start(old.dataDir, { join: [(peers[0] as ProcessPeer).joinToken] });
    peers[3] = again;
    assert.equal(again.peerId, old.peerId);
    await waitFor('alive again at every peer', () => allSee(peers, again.peerId, (m) => m?.state === 'alive'), { timeoutMs: 15_000 });
    // And it hears every other peer itself: a peer learns of members only from their own
    // heartbeats, never from another's digest (a stranger's digest could invent them).
    for (const other of peers) {
      await waitFor(`the restarted peer to hear ${other.peerId}`, () => allSee([again], other.peerId, (m) => m?.state === 'alive'), { timeoutMs: 15_000 });
    }
  });

  it('SIGSTOP: suspect then dead; SIGCONT: alive again with a higher incarnation', async () => {
    const frozen = peers[2] as ProcessPeer;
    const rest = peers.filter((p) => p !== frozen);
    const before = (await (peers[0] as ProcessPeer).status()).members.find((m) => m.peerId === frozen.peerId);
    assert.ok(before);
    const suspectsBefore = await Promise.all(rest.map((o) => transitionsTo(o, 'suspect')));
    frozen.signal('SIGSTOP');
    try {
      await waitFor('dead at every other peer', () => allSee(rest, frozen.peerId, (m) => m?.state === 'dead'), {
        timeoutMs: 15_000,
        intervalMs: 25,
      });
      // Every observer went through suspect on the way (its own count of transitions into
      // suspect rose; dead is final for this incarnation, so the suspicion came first).
      const suspectsAfter = await Promise.all(rest.map((o) => transitionsTo(o, 'suspect')));
      rest.forEach((o, i) => {
        assert.ok((suspectsAfter[i] as number) > (suspectsBefore[i] as number), `${o.peerId} never showed the frozen peer suspect`);
      });
    } finally {
      frozen.signal('SIGCONT');
    }
    await waitFor(
      'alive again with a higher incarnation at every peer',
      () => allSee(peers, frozen.peerId, (m) => m?.state === 'alive' && m.incarnation > before.incarnation),
      { timeoutMs: 15_000 },
    );
  });
});
