import assert from 'node:assert/strict';
import { generateKeyPair } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import * as lp from 'it-length-prefixed';
import { pipe } from 'it-pipe';
import { createHost, type Host } from '../../node/host.js';
import { createLogger } from '../../node/log.js';
import { RpcEndpoint, validateRpcLimits, type RpcHandler, type RpcLimits } from '../../node/rpc.js';
import { decodeRpcFrame, encodeErrorFrame, encodeOkFrame, encodeRequestFrame } from '../../node/rpc-codec.js';
import { waitFor } from './harness.js';

const PROTO = '/shoal/test-rpc/1.0.0';
const quiet = createLogger('silent');
const enc = new TextEncoder();
const dec = new TextDecoder();

async function newHost(key?: PrivateKey): Promise<{ host: Host; key: PrivateKey }> {
  const k = key ?? ((await generateKeyPair('Ed25519')) as unknown as PrivateKey);
  const host = await createHost({ privateKey: k, listen: ['/ip4/127.0.0.1/tcp/0'], swarmKey: null });
  await host.start();
  return { host, key: k };
}

async function newEndpoint(host: Host, handler: RpcHandler, limits: Partial<RpcLimits> = {}, protocol = PROTO): Promise<RpcEndpoint> {
  const ep = new RpcEndpoint({ host, protocol, handler, limits, log: quiet });
  await ep.start();
  return ep;
}

/** The rejection of `p`, which must reject. */
async function rejection(p: Promise<unknown>): Promise<Error & { code?: string; reason?: string; where?: string }> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  assert.fail('expected a rejection');
}

function u32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n);
  return b;
}

function readU32(b: Uint8Array): number {
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(0);
}

/** A promise and its resolver, to hold handlers until a test lets them go. */
function gate(): { wait: Promise<void>; open: () => void } {
  let open!: () => void;
  const wait = new Promise<void>((r) => (open = r));
  return { wait, open };
}

describe('rpc over long-lived libp2p streams', function () {
  this.timeout(15_000);
  let a: Host;
  let b: Host;
  let ea: RpcEndpoint;
  let eb: RpcEndpoint;
  /** b's behaviour; each test sets what it needs. */
  let serveB: RpcHandler;
  const extra: Array<{ stop(): void | Promise<void> }> = [];

  before(async () => {
    a = (await newHost()).host;
    b = (await newHost()).host;
    ea = await newEndpoint(a, async () => enc.encode('a'));
    eb = await newEndpoint(b, (from, body, signal) => serveB(from, body, signal));
    await a.dial(b.getMultiaddrs()[0]!);
  });

  after(async () => {
    for (const x of extra.reverse()) await Promise.resolve(x.stop()).catch(() => {});
    await ea?.stop();
    await eb?.stop();
    await a?.stop();
    await b?.stop();
  });

  it('round trip, with the authenticated sender; requests to self run the local handler', async () => {
    serveB = async (from, body) => enc.encode(`${from}:${dec.decode(body)}`);
    const answer = await ea.request(b.peerId.toString(), enc.encode('hello'), { timeoutMs: 2000 });
    assert.equal(dec.decode(answer), `${a.peerId.toString()}:hello`);
    assert.equal(dec.decode(await ea.request(a.peerId.toString(), enc.encode('x'))), 'a');
    assert.equal(ea.counters.streamsOpened, 1);
  });

  it('a 1 MiB body round-trips; one over maxFrameBytes is refused before sending', async () => {
    serveB = async (_from, body) => body;
    const big = new Uint8Array(1024 * 1024).map((_, i) => i % 251);
    const echoed = await ea.request(b.peerId.toString(), big, { timeoutMs: 5000 });
    assert.equal(Buffer.compare(echoed, big), 0);
    const sent = ea.counters.requestsSent;
    const err = await rejection(ea.request(b.peerId.toString(), new Uint8Array(ea.limits.maxFrameBytes)));
    assert.equal(err.name, 'RpcTooLargeError');
    assert.equal(ea.counters.requestsSent, sent);
  });

  it('200 concurrent requests with shuffled delays are multiplexed on one stream and matched by id', async () => {
    const n = 200;
    // Deterministic shuffle of delays 0..49 ms so answers come back out of order.
    let seed = 12345;
    const delays = Array.from({ length: n }, (_, i) => i % 50);
    for (let i = n - 1; i > 0; i--) {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      const j = seed % (i + 1);
      [delays[i], delays[j]] = [delays[j]!, delays[i]!];
    }
    const order: number[] = [];
    serveB = async (_from, body) => {
      const i = readU32(body);
      await new Promise((r) => setTimeout(r, delays[i]));
      order.push(i);
      return u32(i * 3 + 1);
    };
    const opened = ea.counters.streamsOpened;
    const answers = await Promise.all(Array.from({ length: n }, (_, i) => ea.request(b.peerId.toString(), u32(i), { timeoutMs: 5000 })));
    answers.forEach((ans, i) => assert.equal(readU32(ans), i * 3 + 1, `answer ${i}`));
    assert.notDeepEqual(order, [...order].sort((x, y) => x - y), 'answers were served out of order');
    assert.equal(ea.counters.streamsOpened, opened, 'no new stream was opened');
    assert.equal(ea.inFlight(b.peerId.toString()), 0);
  });

  it('a handler error comes back as RpcRemoteError with its code; one without a code as internal', async () => {
    serveB = async (_from, body) => {
      if (dec.decode(body) === 'coded') throw Object.assign(new Error('not the primary of shard 7'), { code: 'NOT_PRIMARY' });
      throw new Error('secret internal detail');
    };
    const coded = await rejection(ea.request(b.peerId.toString(), enc.encode('coded')));
    assert.equal(coded.name, 'RpcRemoteError');
    assert.equal(coded.code, 'NOT_PRIMARY');
    assert.equal(coded.message, 'not the primary of shard 7');
    const plain = await rejection(ea.request(b.peerId.toString(), enc.encode('plain')));
    assert.equal(plain.name, 'RpcRemoteError');
    assert.equal(plain.code, 'internal');
    assert.ok(!plain.message.includes('secret'));
  });

  it('timeout → RpcTimeoutError, the entry is cleaned up, the late answer is dropped and counted; abort likewise', async () => {
    const slow = gate();
    serveB = async () => {
      await slow.wait; // ignores its signal on purpose
      return enc.encode('late');
    };
    const to = b.peerId.toString();
    const lateBefore = ea.counters.lateResponses;
    const t0 = Date.now();
    const err = await rejection(ea.request(to, enc.encode('x'), { timeoutMs: 100 }));
    assert.equal(err.name, 'RpcTimeoutError');
    assert.equal(err.reason, 'timeout');
    assert.ok(Date.now() - t0 < 1000);
    assert.equal(ea.inFlight(to), 0);
    // b's deadline (sent in the frame) fires right after a's and answers rpc.deadline: late at a.
    await waitFor('the late answer to be counted', () => ea.counters.lateResponses === lateBefore + 1, { timeoutMs: 3000, intervalMs: 10 });
    assert.ok(eb.counters.handlerDeadlines >= 1);

    const ac = new AbortController();
    const pending = ea.request(to, enc.encode('y'), { timeoutMs: 5000, signal: ac.signal });
    ac.abort();
    const aborted = await rejection(pending);
    assert.equal(aborted.name, 'RpcTimeoutError');
    assert.equal(aborted.reason, 'aborted');
    assert.equal(ea.inFlight(to), 0);
    slow.open();
    // The stream is still good.
    serveB = async () => enc.encode('ok');
    assert.equal(dec.decode(await ea.request(to, enc.encode('z'))), 'ok');
  });

  it('overload: local in-flight limit and the remote per-stream limit', async () => {
    const proto = '/shoal/test-rpc-limits/1.0.0';
    const hold = gate();
    let running = 0;
    const ebl = await newEndpoint(
      b,
      async () => {
        running++;
        await hold.wait;
        return enc.encode('done');
      },
      { maxInFlightPerStream: 2 },
      proto,
    );
    extra.push(ebl);
    const eal = await newEndpoint(a, async () => new Uint8Array(0), { maxInFlightPerPeer: 3 }, proto);
    extra.push(eal);
    const to = b.peerId.toString();
    const first = [eal.request(to, u32(1)), eal.request(to, u32(2))];
    await waitFor('two handlers running at b', () => running === 2, { timeoutMs: 3000, intervalMs: 10 });
    const third = eal.request(to, u32(3));
    const fourth = await rejection(eal.request(to, u32(4)));
    assert.equal(fourth.name, 'RpcOverloadedError');
    assert.equal(fourth.where, 'local');
    const thirdErr = await rejection(third);
    assert.equal(thirdErr.name, 'RpcOverloadedError');
    assert.equal(thirdErr.where, 'remote');
    assert.equal(ebl.counters.inboundOverloaded, 1);
    assert.equal(running, 2, 'the refused request never reached the handler');
    hold.open();
    for (const ans of await Promise.all(first)) assert.equal(dec.decode(ans), 'done');

    // Bytes queued to one peer are bounded too: pushed in one tick, before the writer takes any.
    const proto2 = '/shoal/test-rpc-bytes/1.0.0';
    extra.push(await newEndpoint(b, async () => enc.encode('done'), {}, proto2));
    const eaq = await newEndpoint(a, async () => new Uint8Array(0), { maxQueuedBytesPerPeer: 2 * 1024 * 1024 + 100 }, proto2);
    extra.push(eaq);
    const mib = new Uint8Array(1024 * 1024);
    const queued = [eaq.request(to, mib), eaq.request(to, mib)];
    const overBytes = await rejection(eaq.request(to, mib));
    assert.equal(overBytes.name, 'RpcOverloadedError');
    assert.equal(overBytes.where, 'local');
    for (const ans of await Promise.all(queued)) assert.equal(dec.decode(ans), 'done');
  });

  it('garbage, duplicate-id and oversized frames reset the stream, are counted, and b keeps serving', async () => {
    serveB = async (_from, body) => body;
    const { host: rogue } = await newHost();
    extra.push(rogue);
    const addr = b.getMultiaddrs()[0]!;
    const resetBefore = eb.counters.streamsReset;
    const s1 = await rogue.dialProtocol(addr, PROTO);
    await pipe([new Uint8Array([0x7f, 1, 2, 3, 4, 5])], (src) => lp.encode(src), s1.sink).catch(() => {});
    const s2 = await rogue.dialProtocol(addr, PROTO);
    const dup = encodeRequestFrame(5, 1000, enc.encode('d'));
    await pipe([dup, dup], (src) => lp.encode(src), s2.sink).catch(() => {});
    const s3 = await rogue.dialProtocol(addr, PROTO);
    // A length prefix of 2^32 - 1: refused by the prefix alone, over maxFrameBytes.
    await pipe([Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0x0f])], s3.sink).catch(() => {});
    await waitFor('3 streams reset at b', () => eb.counters.streamsReset >= resetBefore + 3, { timeoutMs: 3000, intervalMs: 10 });
    assert.equal(dec.decode(await ea.request(b.peerId.toString(), enc.encode('still here'))), 'still here');
  });

  it('inbound streams beyond maxInboundStreams are refused and counted', async () => {
    const proto = '/shoal/test-rpc-streams/1.0.0';
    const ebs = await newEndpoint(b, async (_f, body) => body, { maxInboundStreams: 1 }, proto);
    extra.push(ebs);
    const { host: rogue } = await newHost();
    extra.push(rogue);
    const addr = b.getMultiaddrs()[0]!;
    const s1 = await rogue.dialProtocol(addr, proto);
    const s2 = await rogue.dialProtocol(addr, proto);
    await waitFor('the second stream to be refused', () => ebs.counters.inboundStreamsRefused === 1, { timeoutMs: 3000, intervalMs: 10 });
    s1.abort(new Error('done'));
    s2.abort(new Error('done'));
  });

  it('a bad answer resets the caller stream: pending requests fail RpcUnavailableError', async () => {
    const proto = '/shoal/test-rpc-rogue/1.0.0';
    const { host: rogue } = await newHost();
    extra.push(rogue);
    // Answers an id that was never sent.
    await rogue.handle(proto, ({ stream }) => {
      void pipe([encodeOkFrame(999, new Uint8Array(0))], (src) => lp.encode(src), stream.sink).catch(() => {});
    });
    const eal = await newEndpoint(a, async () => new Uint8Array(0), {}, proto);
    extra.push(eal);
    await a.dial(rogue.getMultiaddrs()[0]!);
    const err = await rejection(eal.request(rogue.peerId.toString(), enc.encode('q'), { timeoutMs: 5000 }));
    assert.equal(err.name, 'RpcUnavailableError');
    assert.equal(eal.counters.streamsReset, 1);
  });

  it('a stream is rotated after maxRequestsPerStream and the old one closes cleanly', async () => {
    const proto = '/shoal/test-rpc-rotate/1.0.0';
    const ebr = await newEndpoint(b, async (_f, body) => body, {}, proto);
    extra.push(ebr);
    const ear = await newEndpoint(a, async () => new Uint8Array(0), { maxRequestsPerStream: 3 }, proto);
    extra.push(ear);
    for (let i = 0; i < 10; i++) assert.equal(readU32(await ear.request(b.peerId.toString(), u32(i))), i);
    assert.equal(ear.counters.streamsOpened, 4);
    assert.equal(ear.counters.streamsFailed + ear.counters.streamsReset, 0);
    assert.equal(ebr.counters.streamsReset, 0);
    const open = (): number => a.getConnections(b.peerId).flatMap((c) => c.streams).filter((st) => st.protocol === proto).length;
    await waitFor('the rotated streams to close', () => open() === 1, { timeoutMs: 3000, intervalMs: 10 });
  });

  it('remote host stopped mid-request → RpcUnavailableError quickly; after a restart a new request works', async () => {
    const { host: c, key } = await newHost();
    extra.push(c);
    const started = gate();
    const ec = await newEndpoint(c, (_from, _body, signal) => {
      started.open();
      return new Promise((_resolve, reject) => signal.addEventListener('abort', () => reject(signal.reason as Error), { once: true }));
    });
    extra.push(ec);
    await a.dial(c.getMultiaddrs()[0]!);
    const to = c.peerId.toString();
    const timeoutMs = 8000;
    const pending = [1, 2, 3].map((i) => rejection(ea.request(to, u32(i), { timeoutMs })));
    await started.wait;
    const t0 = Date.now();
    await c.stop();
    const errs = await Promise.all(pending);
    const elapsedMs = Date.now() - t0;
    for (const e of errs) assert.equal(e.name, 'RpcUnavailableError');
    console.log(`      ${errs.length} pending requests rejected ${elapsedMs} ms after the remote host stopped (timeout ${timeoutMs} ms)`);
    assert.ok(elapsedMs < 1000, `rejected after ${elapsedMs} ms, want far below the ${timeoutMs} ms timeout`);
    assert.equal(ea.inFlight(to), 0);
    await ec.stop();
    // The stream resets a moment before libp2p drops the dead connection; a dial in
    // between would reuse it and fail once (callers retry). A restart takes longer.
    await waitFor('a to drop its connection to c', () => a.getConnections(c.peerId).length === 0, { timeoutMs: 3000, intervalMs: 10 });

    const { host: c2 } = await newHost(key);
    extra.push(c2);
    const ec2 = await newEndpoint(c2, async () => enc.encode('back'));
    extra.push(ec2);
    await a.dial(c2.getMultiaddrs()[0]!);
    const opened = ea.counters.streamsOpened;
    assert.equal(dec.decode(await ea.request(to, enc.encode('again'), { timeoutMs: 3000 })), 'back');
    assert.equal(ea.counters.streamsOpened, opened + 1);
  });

  it('latency: 2,000 sequential round trips (printed, not asserted)', async () => {
    serveB = async (_from, body) => body;
    const n = 2000;
    const to = b.peerId.toString();
    const body = enc.encode('ping-ping-ping-ping');
    const samples: number[] = [];
    let ok = 0;
    for (let i = 0; i < n; i++) {
      const t = process.hrtime.bigint();
      const ans = await ea.request(to, body, { timeoutMs: 2000 });
      samples.push(Number(process.hrtime.bigint() - t) / 1e6);
      if (ans.length === body.length) ok++;
    }
    samples.sort((x, y) => x - y);
    const pct = (p: number): string => samples[Math.min(n - 1, Math.floor(p * n))]!.toFixed(3);
    console.log(`      rpc round trip over ${n} sequential requests: p50 ${pct(0.5)} ms, p90 ${pct(0.9)} ms, p99 ${pct(0.99)} ms`);
    assert.equal(ok, n);
  });
});

describe('rpc frame codec and limits', () => {
  it('validateRpcLimits fills defaults and names a bad field', () => {
    assert.equal(validateRpcLimits().maxFrameBytes, 2 * 1024 * 1024);
    assert.throws(() => validateRpcLimits({ maxInFlightPerPeer: 0 }), { name: 'ConfigError', field: 'maxInFlightPerPeer' });
    assert.throws(() => validateRpcLimits({ maxQueuedBytesPerPeer: 1024 }), { name: 'ConfigError', field: 'maxQueuedBytesPerPeer' });
  });

  it('round-trips every frame type', () => {
    assert.deepEqual(decodeRpcFrame(encodeRequestFrame(7, 1500, enc.encode('body'))), { type: 'request', id: 7, timeoutMs: 1500, body: enc.encode('body') });
    assert.deepEqual(decodeRpcFrame(encodeOkFrame(0xffff_ffff, new Uint8Array(0))), { type: 'ok', id: 0xffff_ffff, body: new Uint8Array(0) });
    assert.deepEqual(decodeRpcFrame(encodeErrorFrame(3, 'NOT_PRIMARY', 'shard 7 ü')), { type: 'error', id: 3, code: 'NOT_PRIMARY', message: 'shard 7 ü' });
  });

  it('cuts a long error message at a character boundary', () => {
    const f = decodeRpcFrame(encodeErrorFrame(1, 'x', 'é'.repeat(2000)));
    assert.equal(f.type === 'error' && f.message, 'é'.repeat(512));
  });

  it('rejects malformed frames with InvalidMessageError', () => {
    const good = encodeErrorFrame(1, 'code', 'msg');
    const cases: Array<[string, Uint8Array]> = [
      ['empty', new Uint8Array(0)],
      ['short header', Uint8Array.from([1, 0, 0, 0])],
      ['unknown type', Uint8Array.from([9, 0, 0, 0, 1])],
      ['id 0', Uint8Array.from([2, 0, 0, 0, 0])],
      ['request without timeout', Uint8Array.from([1, 0, 0, 0, 1, 0, 0])],
      ['request with timeout 0', Uint8Array.from([1, 0, 0, 0, 1, 0, 0, 0, 0])],
      ['error without code length', Uint8Array.from([3, 0, 0, 0, 1])],
      ['error code length 0', Uint8Array.from([3, 0, 0, 0, 1, 0, 0, 0])],
      ['error code length 65', Uint8Array.from([3, 0, 0, 0, 1, 65])],
      ['error truncated', good.subarray(0, good.length - 1)],
      ['error trailing byte', Uint8Array.from([...good, 0])],
      ['error code bad char', Uint8Array.from([3, 0, 0, 0, 1, 1, 0x20, 0, 0])],
      ['error message bad utf-8', Uint8Array.from([3, 0, 0, 0, 1, 1, 0x61, 0, 1, 0xff])],
      ['error message too long', Uint8Array.from([3, 0, 0, 0, 1, 1, 0x61, 0x04, 0x01, ...new Uint8Array(1025)])],
    ];
    for (const [what, bytes] of cases) assert.throws(() => decodeRpcFrame(bytes), { name: 'InvalidMessageError' }, what);
  });
});
