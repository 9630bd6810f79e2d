import { readFile } from 'node:fs/promises';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { generateKeyPair } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import { multiaddr } from '@multiformats/multiaddr';
import * as lp from 'it-length-prefixed';
import { pipe } from 'it-pipe';
import { createPeer, type Peer } from '../../node/index.js';
import { createHost, type Host } from '../../node/host.js';
import { createLogger } from '../../node/log.js';
import { MEMBERSHIP_TOPIC } from '../../node/membership-service.js';
import { encodeMembershipMessage } from '../../protocols/membership/codec.js';
import { encodeRaftMessage, RAFT_PROTOCOL_ID } from '../../protocols/raft/codec.js';
import { makeTempDir, removeDir, stateOf, waitFor } from './harness.js';

async function metric(peer: Peer, name: string): Promise<number> {
  const text = await (await fetch(`http://${peer.httpAddress}/metrics`)).text();
  const m = new RegExp(`^${name.replace(/[{}"]/g, (c) => `\\${c}`)} (\\d+)$`, 'm').exec(text);
  return m === null ? NaN : Number(m[1]);
}

describe('bad messages from a connected peer', function () {
  this.timeout(60_000);
  let dir: string;
  let a: Peer;
  let b: Peer;
  let rogue: Host;

  before(async () => {
    dir = await makeTempDir();
    const quiet = createLogger('silent');
    a = await createPeer({ dataDir: join(dir, 'a'), listen: ['/ip4/127.0.0.1/tcp/0'], http: '127.0.0.1:0' }, { log: quiet });
    b = await createPeer(
      { dataDir: join(dir, 'b'), listen: ['/ip4/127.0.0.1/tcp/0'], http: '127.0.0.1:0', join: [a.joinToken as string] },
      { log: quiet },
    );
    await waitFor('a and b see each other', () => stateOf(a.status(), b.peerId) === 'alive' && stateOf(b.status(), a.peerId) === 'alive');
    const key = (await generateKeyPair('Ed25519')) as unknown as PrivateKey;
    // The rogue holds the cluster key (a member gone bad): past the network key, the frames themselves are checked.
    rogue = await createHost({ privateKey: key, listen: ['/ip4/127.0.0.1/tcp/0'], swarmKey: await readFile(join(dir, 'a', 'cluster.key')) });
    await rogue.start();
    rogue.services.pubsub.subscribe(MEMBERSHIP_TOPIC);
    await rogue.dial(multiaddr(a.addrs[0] as string));
    await waitFor('the rogue to see a subscribed', () =>
      rogue.services.pubsub.getSubscribers(MEMBERSHIP_TOPIC).some((p) => p.toString() === a.peerId),
    );
  });

  after(async () => {
    await rogue?.stop();
    await b?.stop();
    await a?.stop();
    await removeDir(dir);
  });

  it('garbage and forged membership messages are dropped and counted; the peer keeps working', async () => {
    const before = await metric(a, 'shoal_membership_messages_rejected_total');
    const pubsub = rogue.services.pubsub;
    await pubsub.publish(MEMBERSHIP_TOPIC, new TextEncoder().encode('this is not json'));
    await pubsub.publish(MEMBERSHIP_TOPIC, new TextEncoder().encode('{"kind":"heartbeat","peerId":42}'));
    // Forged: a valid heartbeat that claims to come from b, signed by the rogue.
    const forged = encodeMembershipMessage({
      kind: 'heartbeat',
      peerId: b.peerId,
      incarnation: 999,
      addrs: [],
      load: { eventLoopDelayMs: 0, rssBytes: 0, cpuPercent: 0 },
    });
    await pubsub.publish(MEMBERSHIP_TOPIC, forged);
    // Forged verdict: "b is dead", claimed by a.
    await pubsub.publish(MEMBERSHIP_TOPIC, encodeMembershipMessage({ kind: 'dead', from: a.peerId, peerId: b.peerId, incarnation: 999 }));
    await waitFor('4 rejections counted at a', async () => (await metric(a, 'shoal_membership_messages_rejected_total')) >= before + 4);
    // Nothing of it took effect: b is alive at its real incarnation, a still serves.
    const viewOfB = a.status().members.find((m) => m.peerId === b.peerId);
    assert.equal(viewOfB?.state, 'alive');
    assert.notEqual(viewOfB?.incarnation, 999);
    assert.equal((await fetch(`http://${a.httpAddress}/healthz`)).status, 200);
  });

  it('garbage and forged raft frames reset the stream and never reach the core', async () => {
    const termBefore = a.status().term;
    // Garbage frame.
    const s1 = await rogue.dialProtocol(multiaddr(a.addrs[0] as string), RAFT_PROTOCOL_ID);
    await pipe([new Uint8Array([1, 2, 3, 4, 5])], (src) => lp.encode(src), s1.sink).catch(() => {});
    // A vote request for a huge term that claims to come from b.
    const forged = encodeRaftMessage({
      type: 'vote',
      from: b.peerId,
      to: a.peerId,
      term: 1_000_000,
      pre: false,
      lastIndex: 1_000_000,
      lastTerm: 1_000_000,
      transfer: true,
    });
    const s2 = await rogue.dialProtocol(multiaddr(a.addrs[0] as string), RAFT_PROTOCOL_ID);
    await pipe([forged], (src) => lp.encode(src), s2.sink).catch(() => {});
    // An oversized frame (over the 16 MiB limit) is refused by the length prefix alone.
    const s3 = await rogue.dialProtocol(multiaddr(a.addrs[0] as string), RAFT_PROTOCOL_ID);
    await pipe([Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0x0f])], s3.sink).catch(() => {});
    await waitFor('3 raft streams reset at a', async () => (await metric(a, 'shoal_raft_streams_reset_total')) >= 3);
    assert.ok(a.status().term < 1_000_000, 'the forged term never reached the core');
    assert.ok(a.status().term >= termBefore);
    assert.equal(stateOf(a.status(), b.peerId), 'alive');
  });
});
