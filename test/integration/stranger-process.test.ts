/**
 * Attacks on a running cluster (issue 9) by a stranger: a libp2p node with its own identity that
 * was never a member, reaching 3 `shoal` processes on 127.0.0.1 (default options: secured by a generated cluster
 * key). Without the key it cannot connect at all; the attacks are then made holding the key (a
 * leaked join token), where the checks of each frame against the cluster map stop them. Also a
 * web page's requests over HTTP. Each attack is tried as the issue describes it;
 * the cluster must keep one agreed coordinator at the same term, its members and map, every
 * acknowledged write (also after the attacked shard's primary is killed), and refuse the HTTP
 * requests.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateKeyPair } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import { multiaddr } from '@multiformats/multiaddr';
import { createHost, type Host } from '../../node/host.js';
import { createLogger } from '../../node/log.js';
import { MEMBERSHIP_TOPIC } from '../../node/membership-service.js';
import { RpcEndpoint } from '../../node/rpc.js';
import { encodeFrame, FrameKind, STORE_BULK_PROTOCOL_ID, STORE_PROTOCOL_ID } from '../../node/store-wire.js';
import { StreamChannel } from '../../node/stream-channel.js';
import { encodeClusterCommand } from '../../protocols/cluster-map/commands.js';
import { encodeMembershipMessage } from '../../protocols/membership/codec.js';
import { shardOf } from '../../protocols/placement/index.js';
import { encodeRaftMessage, RAFT_PROTOCOL_ID } from '../../protocols/raft/codec.js';
import { encodeReplicationMessage, REPLICATION_PROTOCOL_ID } from '../../protocols/replication/codec.js';
import { metricSum, readBack } from './bulk-load.js';
import { waitFor, type ProcessPeer } from './harness.js';
import { Cluster, kvPath, request } from './process-cluster.js';

const quiet = createLogger('silent');
const enc = new TextEncoder();

/** One HTTP request with the headers a web page (or a rebinding page) would send. */
function rawHttp(address: string, method: string, path: string, headers: Record<string, string>, body = ''): Promise<number> {
  const colon = address.lastIndexOf(':');
  return new Promise((resolve, reject) => {
    const req = http.request({ host: address.slice(0, colon), port: Number(address.slice(colon + 1)), method, path, headers, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.setTimeout(5000, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(body);
  });
}

/** Frames of one length-prefixed channel (its sends, not its handler) from the stranger. */
function channelFrom(host: Host, protocol: string): StreamChannel {
  return new StreamChannel({ host, protocol, onFrame: () => {}, maxQueuedFrames: 256, dialTimeoutMs: 3000, log: quiet });
}

describe('a stranger and a web page attack a running cluster', function () {
  this.timeout(180_000);
  let cluster: Cluster | null = null;
  let stranger: Host | null = null;
  const extra: Array<{ stop(): void | Promise<void> }> = [];

  after(async () => {
    for (const x of extra) await Promise.resolve(x.stop()).catch(() => {});
    await Promise.resolve(stranger?.stop()).catch(() => {});
    await cluster?.destroy();
  });

  it('changes nothing: same coordinator and term, same members and map, every acknowledged write kept, HTTP refused', async () => {
    const c = (cluster = await Cluster.create());
    await c.startPeers(3);
    await c.waitSettled('start', 60_000);
    const [p0, p1, p2] = c.peers as [ProcessPeer, ProcessPeer, ProcessPeer];
    const agent = new http.Agent({ keepAlive: true });
    // Acknowledged writes to protect.
    const acked = new Map<string, string>();
    const { createHash } = await import('node:crypto');
    for (let k = 0; k < 50; k++) {
      const key = `kept-${k}`;
      const value = `value ${k}`;
      const reply = await request(agent, p0.httpAddress, 'PUT', kvPath(key), Buffer.from(value), 5000);
      assert.equal(reply.status, 200);
      acked.set(key, createHash('sha256').update(value).digest('hex'));
    }
    const before = await c.status(p0);
    const mapBefore = (await (await fetch(`http://${p0.httpAddress}/v1/cluster`)).json()) as { members: Record<string, { capacity: number; status: string }> };

    // Without the cluster key a stranger cannot even finish a connection (the pnet handshake fails).
    const keyless = await createHost({ privateKey: (await generateKeyPair('Ed25519')) as unknown as PrivateKey, listen: ['/ip4/127.0.0.1/tcp/0'], swarmKey: null });
    await keyless.start();
    try {
      for (const p of c.peers) {
        await assert.rejects(keyless.dial(multiaddr(p.joinAddr), { signal: AbortSignal.timeout(5000) }), 'a peer without the key connected');
      }
    } finally {
      await keyless.stop();
    }
    // The stranger: its own identity, but holding the cluster key (a leaked join token), so the
    // checks below are the ones that stop it: Noise identity against roles in the cluster map.
    const leakedKey = await readFile(join(p0.dataDir, 'cluster.key'));
    stranger = await createHost({ privateKey: (await generateKeyPair('Ed25519')) as unknown as PrivateKey, listen: ['/ip4/127.0.0.1/tcp/0'], swarmKey: leakedKey });
    await stranger.start();
    const me = stranger.peerId.toString();
    for (const p of c.peers) await stranger.dial(multiaddr(p.joinAddr));

    // 1. A vote at term 2^53 - 1 with the transfer flag; 2. a heartbeat and an append at term + 1
    // carrying a map command; 3. a snapshot that does not restore — to every peer.
    const raft = channelFrom(stranger, RAFT_PROTOCOL_ID);
    extra.push(raft);
    const term = before.term;
    for (const p of c.peers) {
      raft.send(p.peerId, encodeRaftMessage({ type: 'vote', from: me, to: p.peerId, term: Number.MAX_SAFE_INTEGER, pre: false, lastIndex: 1e9, lastTerm: 1e9, transfer: true }));
      raft.send(p.peerId, encodeRaftMessage({ type: 'heartbeat', from: me, to: p.peerId, term: term + 1, commit: before.commitIndex + 1 }));
    }
    // Separate streams: each refusal resets the stream it came on.
    for (const p of c.peers) {
      const ch = channelFrom(stranger, RAFT_PROTOCOL_ID);
      extra.push(ch);
      ch.send(
        p.peerId,
        encodeRaftMessage({
          type: 'append',
          from: me,
          to: p.peerId,
          term: term + 1,
          prevIndex: before.commitIndex,
          prevTerm: term,
          entries: [{ index: before.commitIndex + 1, term: term + 1, type: 'normal', data: encodeClusterCommand({ type: 'update-member', peerId: p1.peerId, capacity: 99 }) }],
          commit: before.commitIndex + 1,
        }),
      );
      const ch2 = channelFrom(stranger, RAFT_PROTOCOL_ID);
      extra.push(ch2);
      ch2.send(p.peerId, encodeRaftMessage({ type: 'snapshot', from: me, to: p.peerId, term: term + 1, snapshot: { index: 1e6, term: term + 1, config: { voters: [me], learners: [] }, data: enc.encode('not a map') } }));
    }

    // 4. Store: a forged append at a higher epoch to a backup of a busy shard, and forged
    // snapshot frames replacing its data.
    const table = await c.shards(p0);
    const shard = shardOf('kept-0', table.length);
    const a = table[shard]!;
    const backup = a.replicas.find((r) => r !== a.primary)!;
    const repl = channelFrom(stranger, REPLICATION_PROTOCOL_ID);
    extra.push(repl);
    repl.send(
      backup,
      (() => {
        const m = encodeReplicationMessage({
          type: 'append',
          shard,
          epoch: a.epoch + 5,
          from: me,
          to: backup,
          epochStartSeq: 0,
          prevSeq: 0,
          prevEpoch: 0,
          groups: [{ seq: 1, epoch: a.epoch + 5, ops: [{ kind: 'put', key: 'kept-0', value: enc.encode('forged'), version: 99 }] }],
          commitSeq: 1,
        });
        const framed = new Uint8Array(4 + m.length);
        new DataView(framed.buffer).setUint32(0, m.length);
        framed.set(m, 4);
        return framed;
      })(),
    );
    const bulk = new RpcEndpoint({ host: stranger, protocol: STORE_BULK_PROTOCOL_ID, handler: async () => new Uint8Array(0), log: quiet });
    const store = new RpcEndpoint({ host: stranger, protocol: STORE_PROTOCOL_ID, handler: async () => new Uint8Array(0), log: quiet });
    extra.push(bulk, store);
    await bulk.start();
    await store.start();
    await assert.rejects(bulk.request(backup, encodeFrame(FrameKind.snapBegin, { shard, epoch: a.epoch + 1, from: me, seq: 1000, seqEpoch: a.epoch + 1 }), { timeoutMs: 5000 }));
    await assert.rejects(bulk.request(backup, encodeFrame(FrameKind.snapChunk, { shard, entries: [['forged-key', 1, 6]] }, enc.encode('forged')), { timeoutMs: 5000 }));
    await assert.rejects(bulk.request(backup, encodeFrame(FrameKind.snapEnd, { shard }), { timeoutMs: 5000 }));
    // 6c. Key-value frames over libp2p, no HTTP: refused (retryable `unavailable`), nothing written.
    const kvAnswer = await store.request(p1.peerId, encodeFrame(FrameKind.kv, { op: 'put', key: 'forged-kv' }, enc.encode('x')), { timeoutMs: 5000 });
    assert.match(new TextDecoder().decode(kvAnswer), /unavailable/);

    // 5. Gossip: a `dead` verdict about p1 at incarnation 2^53 - 1, and digests naming 1,000 fake members.
    stranger.services.pubsub.subscribe(MEMBERSHIP_TOPIC);
    await waitFor('the stranger to have mesh peers on the membership topic', () => stranger!.services.pubsub.getSubscribers(MEMBERSHIP_TOPIC).length > 0, { timeoutMs: 10_000 });
    const publish = (m: Parameters<typeof encodeMembershipMessage>[0]): Promise<unknown> => stranger!.services.pubsub.publish(MEMBERSHIP_TOPIC, encodeMembershipMessage(m)).catch(() => null);
    await publish({ kind: 'dead', from: me, peerId: p1.peerId, incarnation: Number.MAX_SAFE_INTEGER });
    await publish({ kind: 'suspect', from: me, peerId: p2.peerId, incarnation: Number.MAX_SAFE_INTEGER });
    for (let chunk = 0; chunk < 10; chunk++) {
      await publish({ kind: 'digest', from: me, members: Array.from({ length: 100 }, (_, k) => ({ peerId: `12D3KooWFake${chunk}x${k}`, state: 'alive' as const, incarnation: 0, addrs: [] })) });
    }

    // 6a, 6b. A web page: POST /v1/leave as text/plain; a rebinding page's Host; a foreign Origin.
    assert.equal(await rawHttp(p2.httpAddress, 'POST', '/v1/leave', { 'content-type': 'text/plain', host: p2.httpAddress }, 'bye'), 415);
    assert.equal(await rawHttp(p2.httpAddress, 'GET', kvPath('kept-1'), { host: 'evil.example:7070' }), 421);
    assert.equal(await rawHttp(p2.httpAddress, 'PUT', kvPath('kept-1'), { host: p2.httpAddress, origin: 'http://evil.example' }, 'forged'), 403);

    // Let everything land, then look.
    await waitFor('the raft refusals to be counted on every peer', async () => {
      for (const p of c.peers) if ((await metricSum(p.httpAddress, 'shoal_raft_frames_rejected_total')) < 1) return false;
      return true;
    });
    await new Promise((r) => setTimeout(r, 3000)); // gossip and elections would have acted by now (both sub-second here)
    const after = await Promise.all(c.peers.map((p) => c.status(p)));
    for (const s of after) {
      assert.equal(s.coordinator, before.coordinator, 'the same coordinator everywhere');
      assert.equal(s.term, before.term, 'no term change');
      assert.deepEqual(s.members.map((m) => m.peerId).sort(), c.peers.map((p) => p.peerId).sort(), 'no fake member, no stranger');
      assert.ok(s.members.every((m) => m.state === 'alive'), `all alive: ${JSON.stringify(s.members.map((m) => [m.peerId.slice(-4), m.state]))}`);
    }
    const mapAfter = (await (await fetch(`http://${p0.httpAddress}/v1/cluster`)).json()) as { members: Record<string, { capacity: number; status: string }> };
    assert.deepEqual(mapAfter.members, mapBefore.members, 'the map members (and capacities) are unchanged');
    assert.ok(p2.running, 'the peer did not leave');
    const backupHttp = c.peers.find((p) => p.peerId === backup)!.httpAddress;
    assert.ok((await metricSum(backupHttp, 'shoal_replication_messages_rejected_total')) >= 1, 'the forged append was refused and counted');
    assert.ok((await metricSum(backupHttp, 'shoal_store_requests_rejected_total')) >= 3, 'the forged snapshot frames were refused and counted');

    // Every acknowledged write, now and after the attacked shard's primary is killed.
    assert.deepEqual(await readBack([p0.httpAddress], acked, 5000), []);
    assert.equal((await request(agent, p0.httpAddress, 'GET', kvPath('forged-kv'), undefined, 5000)).status, 404);
    const primary = c.peers.find((p) => p.peerId === a.primary)!;
    primary.signal('SIGKILL');
    await primary.waitExit();
    const survivors = c.peers.filter((p) => p !== primary).map((p) => p.httpAddress);
    await waitFor('a new primary for the attacked shard', async () => (await request(agent, survivors[0]!, 'GET', kvPath('kept-0'), undefined, 3000)).status === 200, { timeoutMs: 30_000, intervalMs: 200 });
    assert.deepEqual(await readBack(survivors, acked, 5000), [], 'every acknowledged write reads back after the failover');
    agent.destroy();
  });
});
