/**
 * StreamChannel between two real libp2p hosts on 127.0.0.1: one frame limit for encoder and
 * decoder, and a frame over it refused alone, without tearing down the stream or dropping the
 * frames queued around it.
 */
import assert from 'node:assert/strict';
import { generateKeyPair } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import { createHost, type Host } from '../../node/host.js';
import { createLogger } from '../../node/log.js';
import { MAX_FRAME_BYTES, StreamChannel } from '../../node/stream-channel.js';
import { waitFor } from './harness.js';

const quiet = createLogger('silent');

async function newHost(): Promise<Host> {
  const key = (await generateKeyPair('Ed25519')) as unknown as PrivateKey;
  const host = await createHost({ privateKey: key, listen: ['/ip4/127.0.0.1/tcp/0'], swarmKey: null });
  await host.start();
  return host;
}

/** A frame of `n` bytes whose first byte is `tag` and the rest a pattern. */
function frame(tag: number, n: number): Uint8Array {
  const f = new Uint8Array(n).map((_, i) => (i * 7) % 251);
  f[0] = tag;
  return f;
}

describe('stream channel: one frame limit, refused frames fail alone', function () {
  this.timeout(30_000);
  let a: Host;
  let b: Host;
  const channels: StreamChannel[] = [];

  before(async () => {
    a = await newHost();
    b = await newHost();
    await a.dial(b.getMultiaddrs()[0]!);
  });

  after(async () => {
    for (const c of channels) await c.stop().catch(() => {});
    await a?.stop();
    await b?.stop();
  });

  async function pair(protocol: string, opts: { maxFrameBytes?: number; maxQueuedBytes?: number } = {}): Promise<{ from: StreamChannel; to: StreamChannel; got: Uint8Array[] }> {
    const got: Uint8Array[] = [];
    const to = new StreamChannel({ host: b, protocol, onFrame: (_from, f) => got.push(f.slice()), maxQueuedFrames: 64, dialTimeoutMs: 2000, log: quiet, ...opts });
    const from = new StreamChannel({ host: a, protocol, onFrame: () => {}, maxQueuedFrames: 64, dialTimeoutMs: 2000, log: quiet, ...opts });
    await to.start();
    await from.start();
    channels.push(from, to);
    return { from, to, got };
  }

  it('refuses a frame over the limit by itself; the frames queued before and after it arrive on the same stream', async () => {
    const limit = 64 * 1024;
    const { from, to, got } = await pair('/shoal/test-channel-limit/1.0.0', { maxFrameBytes: limit });
    const peer = b.peerId.toString();
    // Queued in one turn: the stream opens after all three calls.
    assert.equal(from.send(peer, frame(1, 1000)), 'queued');
    assert.equal(from.send(peer, frame(2, limit + 1)), 'too-large');
    assert.equal(from.send(peer, frame(3, limit)), 'queued', 'a frame of exactly the limit is accepted by the sender');
    await waitFor('both accepted frames to arrive', () => got.length >= 2, { timeoutMs: 10_000 });
    assert.deepEqual(
      got.map((f) => [f[0], f.length]),
      [
        [1, 1000],
        [3, limit],
      ],
    );
    assert.equal(Buffer.compare(got[1]!, frame(3, limit)), 0, 'the frame at the limit arrives intact');
    assert.equal(from.counters.framesRefused, 1);
    assert.equal(from.counters.framesDropped, 0, 'nothing queued was dropped (a torn-down stream drops its queue)');
    assert.equal(to.counters.streamsReset, 0, 'the receiver reset nothing: the encoder and decoder agree on the limit');
    // The stream is still the same one and still works.
    assert.equal(from.send(peer, frame(4, 10)), 'queued');
    await waitFor('a later frame on the same channel', () => got.length === 3, { timeoutMs: 10_000 });
    assert.equal(got[2]![0], 4);
    assert.equal(from.counters.framesSent, 3);
  });

  it('with the default limit, a 5 MiB frame (over the codec default of 4 MiB) crosses beside small ones', async () => {
    assert.ok(MAX_FRAME_BYTES >= 5 * 1024 * 1024);
    const { from, to, got } = await pair('/shoal/test-channel-default/1.0.0');
    const peer = b.peerId.toString();
    assert.equal(from.send(peer, frame(1, 100)), 'queued');
    assert.equal(from.send(peer, frame(2, 5 * 1024 * 1024)), 'queued');
    assert.equal(from.send(peer, frame(3, 100)), 'queued');
    await waitFor('three frames', () => got.length === 3, { timeoutMs: 20_000 });
    assert.deepEqual(
      got.map((f) => f[0]),
      [1, 2, 3],
    );
    assert.equal(Buffer.compare(got[1]!, frame(2, 5 * 1024 * 1024)), 0);
    assert.equal(to.counters.streamsReset, 0);
    assert.equal(from.counters.framesDropped + from.counters.framesRefused, 0);
  });

  it('bounds the bytes queued for one peer: beyond maxQueuedBytes a frame is dropped, not buffered', async () => {
    const { from, got } = await pair('/shoal/test-channel-bytes/1.0.0', { maxFrameBytes: 1024 * 1024, maxQueuedBytes: 2 * 1024 * 1024 });
    const peer = b.peerId.toString();
    const results = [1, 2, 3].map((tag) => from.send(peer, frame(tag, 1024 * 1024)));
    assert.deepEqual(results, ['queued', 'queued', 'queue-full']);
    assert.equal(from.queuedBytes(peer), 2 * 1024 * 1024);
    await waitFor('the two queued frames', () => got.length === 2, { timeoutMs: 10_000 });
    assert.equal(from.counters.framesDropped, 1);
    await waitFor('the queue to empty', () => from.queuedBytes(peer) === 0, { timeoutMs: 5000 });
  });
});
