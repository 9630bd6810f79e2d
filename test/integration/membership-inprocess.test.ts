import assert from 'node:assert/strict';
import { join } from 'node:path';
import { createPeer, type Peer } from '../../node/index.js';
import { createLogger } from '../../node/log.js';
import { getStatus, makeTempDir, removeDir, stateOf, waitFor } from './harness.js';

const quiet = createLogger('silent');

async function startPeer(dir: string, name: string, joinAddrs: string[] = []): Promise<Peer> {
  return createPeer(
    { dataDir: join(dir, name), listen: ['/ip4/127.0.0.1/tcp/0'], http: '127.0.0.1:0', join: joinAddrs },
    { log: quiet },
  );
}

describe('membership: 5 peers in one process', function () {
  this.timeout(60_000);
  let dir: string;
  const peers: Peer[] = [];

  before(async () => {
    dir = await makeTempDir();
  });

  after(async () => {
    await Promise.all(peers.map((p) => p.stop().catch(() => {})));
    await removeDir(dir);
  });

  it('all join through one seed address and each sees 5 alive', async () => {
    const seed = await startPeer(dir, 'p0');
    peers.push(seed);
    const seedAddr = seed.addrs[0] as string;
    assert.match(seedAddr, /^\/ip4\/127\.0\.0\.1\/tcp\/\d+\/p2p\/12D3/);
    for (let i = 1; i < 5; i++) peers.push(await startPeer(dir, `p${i}`, [seed.joinToken as string]));
    const ids = peers.map((p) => p.peerId);

    await waitFor(
      'every peer to see 5 alive',
      () => peers.every((p) => p.status().members.filter((m) => m.state === 'alive' && ids.includes(m.peerId)).length === 5),
      { timeoutMs: 20_000 },
    );
    // The HTTP view agrees, and each peer lists itself with its full addresses.
    for (const p of peers) {
      const s = await getStatus(p.httpAddress as string);
      assert.equal(s.peerId, p.peerId);
      assert.ok(s.addrs.every((a) => a.endsWith(`/p2p/${p.peerId}`)));
      const self = s.members.find((m) => m.peerId === p.peerId);
      assert.ok(self, 'a peer is among its own members');
      assert.equal(self.state, 'alive');
      for (const m of s.members) {
        assert.equal(typeof m.phi, 'number');
        assert.ok(Number.isFinite(m.phi));
        assert.ok(m.addrs.length > 0, `member ${m.peerId} has addresses`);
      }
    }
  });

  it('a peer that stops gracefully is seen as left, not dead', async () => {
    const leaving = peers[3] as Peer;
    await leaving.stop();
    const rest = peers.filter((p) => p !== leaving);
    await waitFor('the others to see it left', () => rest.every((p) => stateOf(p.status(), leaving.peerId) === 'left'), {
      timeoutMs: 5_000,
    });
    // It stays left (never flips to dead) for longer than detection takes, checked at every poll.
    const until = Date.now() + 3_000;
    for (let i = 0; i < 60 && Date.now() < until; i++) {
      for (const p of rest) assert.equal(stateOf(p.status(), leaving.peerId), 'left');
      await new Promise((r) => setTimeout(r, 50));
    }
  });

  it('a peer restarted on the same data dir keeps its peer id and rejoins alive with a higher incarnation', async () => {
    const old = peers[3] as Peer;
    const oldInc = (peers[0] as Peer).status().members.find((m) => m.peerId === old.peerId)?.incarnation ?? -1;
    const again = await startPeer(dir, 'p3', [(peers[0] as Peer).joinToken as string]);
    peers[3] = again;
    assert.equal(again.peerId, old.peerId);
    await waitFor('the others to see it alive again', () =>
      peers.every((p) => {
        const m = p.status().members.find((x) => x.peerId === again.peerId);
        return m !== undefined && m.state === 'alive' && m.incarnation > oldInc;
      }),
    );
  });
});
