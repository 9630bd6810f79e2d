import assert from 'node:assert/strict';
import { join } from 'node:path';
import { createPeer, type Peer } from '../../node/index.js';
import { createLogger } from '../../node/log.js';
import { makeTempDir, removeDir, waitFor } from './harness.js';

const quiet = createLogger('silent');

function startPeer(dir: string, name: string, joinAddrs: string[] = []): Promise<Peer> {
  return createPeer({ dataDir: join(dir, name), listen: ['/ip4/127.0.0.1/tcp/0'], http: '127.0.0.1:0', join: joinAddrs }, { log: quiet });
}

describe('coordinator: 4 peers in one process', function () {
  this.timeout(60_000);
  let dir: string;
  const peers: Peer[] = [];
  const leader = (): Peer => {
    const id = (peers[0] as Peer).status().coordinator;
    const p = peers.find((x) => x.peerId === id);
    assert.ok(p, 'a coordinator is elected');
    return p;
  };

  before(async () => {
    dir = await makeTempDir();
    peers.push(await startPeer(dir, 'p0'));
    for (let i = 1; i < 4; i++) peers.push(await startPeer(dir, `p${i}`, [(peers[0] as Peer).joinToken as string]));
  });

  after(async () => {
    await Promise.all(peers.map((p) => p.stop().catch(() => {})));
    await removeDir(dir);
  });

  it('the first peer bootstraps; the coordinator keeps 3 voters and makes the 4th a learner; all agree on the map', async () => {
    await waitFor(
      'one coordinator, 3 voters, 1 learner and 4 map members everywhere',
      () => {
        const st = peers.map((p) => p.status());
        const first = st[0]!;
        return (
          first.coordinator !== null &&
          first.voters.length === 3 &&
          first.learners.length === 1 &&
          st.every(
            (s) =>
              s.coordinator === first.coordinator &&
              s.term === first.term &&
              JSON.stringify(s.voters) === JSON.stringify(first.voters) &&
              s.clusterMapVersion === first.clusterMapVersion,
          )
        );
      },
      { timeoutMs: 20_000 },
    );
    await waitFor('4 members in every map', async () => {
      const maps = await Promise.all(peers.map(async (p) => (await (await fetch(`http://${p.httpAddress}/v1/cluster`)).json()) as { members: object }));
      return maps.every((m) => Object.keys(m.members).length === 4);
    });
    const st = peers.map((p) => p.status());
    const roles = st.map((s) => s.role).sort();
    assert.deepEqual(roles, ['follower', 'follower', 'leader', 'learner']);
    assert.ok(st[0]!.voters.includes((peers[0] as Peer).peerId), 'the bootstrap peer is a voter');
  });

  it('PUT /v1/cluster/members/{id} on the coordinator commits a map change that every peer applies', async () => {
    const l = leader();
    const target = (peers[2] as Peer).peerId;
    const res = await fetch(`http://${l.httpAddress}/v1/cluster/members/${target}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ capacity: 2 }),
    });
    assert.equal(res.status, 200, await res.clone().text());
    const body = (await res.json()) as { clusterMapVersion: number };
    await waitFor('every peer to apply it', async () => {
      const maps = await Promise.all(peers.map(async (p) => (await (await fetch(`http://${p.httpAddress}/v1/cluster`)).json()) as { version: number; members: Record<string, { capacity: number }> }));
      return maps.every((m) => m.version >= body.clusterMapVersion && m.members[target]?.capacity === 2);
    });
  });

  it('answers bad requests with the right 4xx and a follower with 503 naming the coordinator', async () => {
    const l = leader();
    const follower = peers.find((p) => p !== l && p.status().role === 'follower') as Peer;
    const put = (p: Peer, id: string, body: string) =>
      fetch(`http://${p.httpAddress}/v1/cluster/members/${id}`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body });
    const notLeader = await put(follower, l.peerId, '{"capacity":3}');
    assert.equal(notLeader.status, 503);
    assert.equal(notLeader.headers.get('x-shoal-coordinator'), l.peerId);
    assert.equal(((await notLeader.json()) as { error: string }).error, 'not_coordinator');
    for (const bad of ['not json', '{"capacity":-1}', '{"capacity":"2"}', '[]']) {
      const r = await put(l, l.peerId, bad);
      assert.equal(r.status, 400, bad);
      assert.equal(((await r.json()) as { error: string }).error, 'bad_request');
    }
    const unknown = await put(l, '12D3KooWUnknownPeerUnknownPeerUnknownPeerUnknownPeer', '{"capacity":2}');
    assert.equal(unknown.status, 404);
    const big = await put(l, l.peerId, JSON.stringify({ capacity: 2, pad: 'x'.repeat(70_000) }));
    assert.equal(big.status, 413);
    assert.equal((await fetch(`http://${l.httpAddress}/v1/cluster`, { method: 'DELETE' })).status, 405);
  });

  it('a coordinator that stops gracefully hands over and is removed from the voters; the learner is promoted', async () => {
    const old = leader();
    const oldTerm = old.status().term;
    await old.stop();
    peers.splice(peers.indexOf(old), 1);
    await waitFor(
      'a new coordinator, the old one gone from the configuration, 3 voters again',
      () => {
        const st = peers.map((p) => p.status());
        const f = st[0]!;
        return (
          f.coordinator !== null &&
          f.coordinator !== old.peerId &&
          f.term > oldTerm &&
          !f.voters.includes(old.peerId) &&
          !f.learners.includes(old.peerId) &&
          f.voters.length === 3 &&
          st.every((s) => s.coordinator === f.coordinator && s.voters.length === 3)
        );
      },
      { timeoutMs: 15_000 },
    );
  });
});
