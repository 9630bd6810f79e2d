/**
 * Yamux window updates between two real libp2p hosts on 127.0.0.1 (node/yamux-window.ts): a
 * stream carrying many small messages sends a window update per half window consumed, not one
 * per message; a transfer of several windows still completes, byte for byte.
 */
import assert from 'node:assert/strict';
import { generateKeyPair } from '@libp2p/crypto/keys';
import type { PrivateKey, Stream } from '@libp2p/interface';
import { StreamState, YamuxStream } from '@chainsafe/libp2p-yamux/stream';
import { pushable } from 'it-pushable';
import { createHost, type Host } from '../../node/host.js';
import { windowUpdateDue, yamuxWindowThresholdInstalled } from '../../node/yamux-window.js';
import { waitFor } from './harness.js';

async function newHost(): Promise<Host> {
  const key = (await generateKeyPair('Ed25519')) as unknown as PrivateKey;
  const host = await createHost({ privateKey: key, listen: ['/ip4/127.0.0.1/tcp/0'], swarmKey: null });
  await host.start();
  return host;
}

/** Yamux frame type of a window update (the spec's 0x1). */
const WINDOW_UPDATE = 1;

describe('yamux window updates: one per half window, not one per message', function () {
  this.timeout(30_000);
  let a: Host;
  let b: Host;

  before(async () => {
    a = await newHost();
    b = await newHost();
    await a.dial(b.getMultiaddrs()[0]!);
  });

  after(async () => {
    await a?.stop();
    await b?.stop();
  });

  it('the rule: SYN/ACK owed or half the window consumed', () => {
    assert.equal(windowUpdateDue(StreamState.Init, 262_144, 262_144), true);
    assert.equal(windowUpdateDue(StreamState.SYNReceived, 262_144, 262_144), true);
    assert.equal(windowUpdateDue(StreamState.Established, 262_144, 262_144 - 100), false);
    assert.equal(windowUpdateDue(StreamState.Established, 262_144, 262_144 / 2 + 1), false);
    assert.equal(windowUpdateDue(StreamState.Established, 262_144, 262_144 / 2), true);
    assert.equal(windowUpdateDue(StreamState.Established, 262_144, 0), true);
  });

  /**
   * Opens a stream a → b whose reader (on b) counts the window updates b sends, then writes
   * `messages` chunks of `bytes` each, one per turn, and waits until b has read them all.
   */
  async function transfer(protocol: string, messages: number, bytes: number): Promise<{ updates: number; received: Uint8Array[] }> {
    const received: Uint8Array[] = [];
    let updates = 0;
    let done!: () => void;
    const finished = new Promise<void>((resolve) => (done = resolve));
    await b.handle(protocol, ({ stream }) => {
      assert.ok(stream instanceof YamuxStream, 'the inbound stream is a YamuxStream (the object the threshold patches)');
      const s = stream as unknown as { sendFrame: (header: { type: number }, body?: unknown) => void };
      const send = s.sendFrame;
      s.sendFrame = (header, body) => {
        if (header.type === WINDOW_UPDATE) updates++;
        send(header, body);
      };
      void (async () => {
        for await (const chunk of stream.source) received.push(chunk.subarray());
        done();
      })();
    });
    const stream: Stream = await a.dialProtocol(b.peerId, protocol);
    const out = pushable<Uint8Array>();
    const sink = stream.sink(out);
    for (let i = 0; i < messages; i++) {
      out.push(new Uint8Array(bytes).fill(i % 251));
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    out.end();
    await sink;
    await waitFor(`b to read ${messages} messages`, () => received.reduce((n, c) => n + c.length, 0) >= messages * bytes, { timeoutMs: 20_000 });
    await Promise.race([finished, new Promise((resolve) => setTimeout(resolve, 2000))]);
    await b.unhandle(protocol);
    return { updates, received };
  }

  it('500 small messages: a handful of window updates instead of about 500', async () => {
    assert.equal(yamuxWindowThresholdInstalled(), true);
    const { updates, received } = await transfer('/shoal/test-yamux-small/1.0.0', 500, 100);
    assert.equal(received.reduce((n, c) => n + c.length, 0), 500 * 100);
    // 50 KB through a 256 KiB window: the ACK of the stream's opening and at most a close.
    assert.ok(updates <= 3, `${updates} window updates for 500 messages`);
  });

  it('4 MiB in 16 KiB writes (16 initial windows) arrives whole: the sender never stalls for good', async () => {
    const { updates, received } = await transfer('/shoal/test-yamux-bulk/1.0.0', 256, 16 * 1024);
    const all = Buffer.concat(received);
    assert.equal(all.length, 256 * 16 * 1024);
    for (let i = 0; i < 256; i++) assert.equal(all[i * 16 * 1024 + 5], i % 251, `message ${i} intact`);
    // More than the initial window went through, so updates were sent (fewer as the window grows).
    assert.ok(updates >= 2 && updates <= 64, `${updates} window updates for 16 initial windows`);
  });
});
