/**
 * Every decoder of bytes a peer receives or a user pastes, fuzzed (fast-check, issue 9): random
 * input, and valid encodings cut, extended, or with bytes changed, must decode to a value that
 * encodes again, or throw the decoder's own error (InvalidMessageError, ConfigError) — never
 * another error, never a hang. The replication codec and join tokens have their own files
 * (replication-codec-fuzz, join-token). `npm test` runs a few hundred cases per property;
 * `npm run fuzz` runs SHOAL_FUZZ_RUNS (default there 20000).
 */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { decodeClusterCommand, encodeClusterCommand } from '../../protocols/cluster-map/commands.js';
import type { ClusterCommand } from '../../protocols/cluster-map/types.js';
import { decodeMembershipMessage, encodeMembershipMessage } from '../../protocols/membership/codec.js';
import type { MembershipMessage } from '../../protocols/membership/types.js';
import { decodeRaftMessage, encodeRaftMessage } from '../../protocols/raft/codec.js';
import { decodeConfChange, encodeConfChange } from '../../protocols/raft/conf-change.js';
import type { RaftMessage } from '../../protocols/raft/types.js';
import { decodeRpcFrame, encodeErrorFrame, encodeOkFrame, encodeRequestFrame } from '../../node/rpc-codec.js';
import { decodeFrame, encodeFrame, FrameKind } from '../../node/store-wire.js';
import { decodeKvRequest, decodeOpReply, encodeKvRequest, encodeOpReply } from '../../node/kv-frames.js';
import { decodeRenewal } from '../../node/shard-control-service.js';
import { parseTaskSubmission } from '../../protocols/scheduler/task-spec.js';

const RUNS = Number(process.env.SHOAL_FUZZ_RUNS ?? 300);
const PEER = '12D3KooWGRUVh8J4Qa7Y2kzB9u2nFJXc8E5ZpH1tXo6m3yq4rSdT';
const OTHER = '12D3KooWQzZ1x8dK3Xc2bVh9Jm5Lp7Rt4Ny6Ws8Ea1Gu3Fi5Ho7K';
const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);

interface Decoder {
  name: string;
  decode(b: Uint8Array): unknown;
  /** Valid encodings to mutate. */
  seeds: Uint8Array[];
  /** Error names the decoder may throw for bad input. */
  errors: string[];
}

const membershipSeeds: MembershipMessage[] = [
  { kind: 'heartbeat', peerId: PEER, incarnation: 3, addrs: ['/ip4/127.0.0.1/tcp/4001'], load: { eventLoopDelayMs: 1.25, rssBytes: 52_428_800, cpuPercent: 140 } },
  { kind: 'suspect', from: PEER, peerId: OTHER, incarnation: 0 },
  { kind: 'dead', from: PEER, peerId: OTHER, incarnation: 9 },
  { kind: 'left', peerId: PEER, incarnation: 7 },
  { kind: 'digest', from: PEER, members: [{ peerId: PEER, state: 'alive', incarnation: 1, addrs: ['/ip4/127.0.0.1/tcp/4001'] }, { peerId: OTHER, state: 'suspect', incarnation: 2, addrs: [] }] },
];

const raftSeeds: RaftMessage[] = [
  {
    type: 'append',
    from: 'a',
    to: 'b',
    term: 2,
    prevIndex: 4,
    prevTerm: 1,
    entries: [
      { index: 5, term: 2, type: 'normal', data: bytes('hello') },
      { index: 6, term: 2, type: 'conf-change', data: encodeConfChange({ type: 'add-learner', node: 'c' }) },
    ],
    commit: 3,
  },
  { type: 'append-response', from: 'b', to: 'a', term: 2, index: 6, reject: false, hintIndex: 0, hintTerm: 0 },
  { type: 'vote', from: 'a', to: 'b', term: 3, pre: true, lastIndex: 6, lastTerm: 2, transfer: false },
  { type: 'vote-response', from: 'b', to: 'a', term: 3, pre: true, granted: true },
  { type: 'heartbeat', from: 'a', to: 'b', term: 2, commit: 6 },
  { type: 'snapshot', from: 'a', to: 'b', term: 2, snapshot: { index: 6, term: 2, config: { voters: ['a', 'b'], learners: ['c'] }, data: new Uint8Array([0, 255, 7]) } },
  { type: 'timeout-now', from: 'a', to: 'b', term: 2 },
];

const clusterSeeds: ClusterCommand[] = [{ type: 'update-member', peerId: 'a', addrs: ['/x'], capacity: 2, status: 'dead' }];

const DECODERS: Decoder[] = [
  {
    name: 'task submission (POST /v1/tasks, peer.submit)',
    decode: (b) => parseTaskSubmission(JSON.parse(new TextDecoder().decode(b)) as unknown),
    seeds: [
      bytes('{"type":"sleep","payload":{"ms":5}}'),
      bytes('{"type":"hash","payload":{"data":"x","rounds":10},"priority":3,"resources":{"cpu":0.5,"memMb":64},"idempotencyKey":"k1","timeoutMs":1000,"maxAttempts":2}'),
    ],
    errors: ['TaskInputError', 'SyntaxError'],
  },
  { name: 'membership message', decode: decodeMembershipMessage, seeds: membershipSeeds.map(encodeMembershipMessage), errors: ['InvalidMessageError'] },
  { name: 'raft message', decode: (b) => decodeRaftMessage(b), seeds: raftSeeds.map(encodeRaftMessage), errors: ['InvalidMessageError'] },
  { name: 'raft conf change', decode: decodeConfChange, seeds: [encodeConfChange({ type: 'add-voter', node: 'n2' }), encodeConfChange({ type: 'remove-node', node: 'n3' })], errors: ['InvalidMessageError'] },
  { name: 'cluster-map command', decode: decodeClusterCommand, seeds: clusterSeeds.map(encodeClusterCommand), errors: ['InvalidMessageError'] },
  {
    name: 'rpc frame',
    decode: decodeRpcFrame,
    seeds: [encodeRequestFrame(7, 5000, bytes('{"a":1}')), encodeOkFrame(7, bytes('ok')), encodeErrorFrame(7, 'unavailable', 'try again')],
    errors: ['InvalidMessageError'],
  },
  {
    name: 'store frame',
    decode: decodeFrame,
    seeds: [
      encodeFrame(FrameKind.kv, { op: 'put', shard: 3, key: 'k' }, bytes('value')),
      encodeFrame(FrameKind.lease, { from: PEER, progress: [] }),
      encodeFrame(FrameKind.snapChunk, { shard: 1, epoch: 2, n: 0 }, new Uint8Array(300)),
    ],
    errors: ['InvalidMessageError'],
  },
  {
    name: 'forwarded kv request',
    decode: (b) => decodeKvRequest(decodeFrame(b)),
    seeds: [
      encodeKvRequest({ op: 'put', key: 'k', value: bytes('value'), ifVersion: 3 }),
      encodeKvRequest({ op: 'get', key: 'x/y', consistency: 'any' }),
      encodeKvRequest({ op: 'delete', key: 'gone' }),
    ],
    errors: ['InvalidMessageError'],
  },
  {
    name: 'lease renewal (progress and primary requests)',
    decode: (b) => decodeRenewal(PEER, decodeFrame(b).header),
    seeds: [
      encodeFrame(FrameKind.lease, {
        progress: [{ shard: 3, epoch: 4, lastSeq: 10, lastEpoch: 4, commitSeq: 9 }],
        requests: [
          { kind: 'shrink-in-sync', shard: 3, from: PEER, replica: OTHER, epoch: 4 },
          { kind: 'renew-epoch', shard: 5, from: PEER, replica: PEER, epoch: 2 },
        ],
      }),
    ],
    errors: ['InvalidMessageError'],
  },
  {
    name: 'forwarded kv reply',
    decode: decodeOpReply,
    seeds: [
      encodeOpReply({ ok: true, version: 4, present: true, value: bytes('v') }),
      encodeOpReply({ ok: true, version: 2, present: false, value: null }),
      encodeOpReply({ ok: false, code: 'version_mismatch', message: 'at 3, not 2', current: { version: 3, present: true } }),
      encodeOpReply({ ok: false, code: 'not_primary', message: 'try p2' }),
    ],
    errors: ['InvalidMessageError'],
  },
];

function decodesOrRefuses(d: Decoder, b: Uint8Array): void {
  try {
    d.decode(b);
  } catch (err) {
    const name = (err as Error).name;
    assert.ok(d.errors.includes(name), `${d.name}: unexpected ${name}: ${(err as Error).message}`);
  }
}

const mutation = fc.record({
  cut: fc.nat(),
  extra: fc.uint8Array({ maxLength: 16 }),
  flips: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }),
  seed: fc.nat(),
});

describe('forwarded kv frames', () => {
  it('round-trip requests and replies', () => {
    const put = { op: 'put' as const, key: 'k', value: bytes('value'), ifVersion: 3 };
    assert.deepEqual(decodeKvRequest(decodeFrame(encodeKvRequest(put))), put);
    const get = { op: 'get' as const, key: 'k', consistency: 'any' as const };
    assert.deepEqual(decodeKvRequest(decodeFrame(encodeKvRequest(get))), get);
    const ok = { ok: true as const, version: 4, present: true, value: bytes('v') };
    assert.deepEqual(decodeOpReply(encodeOpReply(ok)), ok);
    const mismatch = { ok: false as const, code: 'version_mismatch' as const, message: 'm', current: { version: 3, present: false } };
    assert.deepEqual(decodeOpReply(encodeOpReply(mismatch)), mismatch);
  });

  it('refuse an error code the store does not know, and a frame of the wrong kind, naming the field', () => {
    const bad = encodeFrame(FrameKind.reply, { ok: false, code: 'pwned', message: 'x' });
    assert.throws(() => decodeOpReply(bad), (e: Error) => e.name === 'InvalidMessageError' && /^code: unknown error code "pwned"/.test(e.message));
    assert.throws(() => decodeOpReply(encodeKvRequest({ op: 'get', key: 'k' })), (e: Error) => e.name === 'InvalidMessageError' && /^frame.kind/.test(e.message));
    assert.throws(() => decodeKvRequest(decodeFrame(encodeOpReply({ ok: true, version: 1, present: false, value: null }))), /frame.kind/);
    assert.throws(() => decodeKvRequest(decodeFrame(encodeFrame(FrameKind.kv, { op: 'put', key: 'k', consistency: 'maybe' }))), /^InvalidMessageError: consistency/);
  });
});

describe('decoders under fuzzing (fast-check)', () => {
  for (const d of DECODERS) {
    describe(d.name, () => {
      it('its seeds decode', () => {
        for (const s of d.seeds) d.decode(s);
      });

      it('random bytes decode or are refused with its own error', () => {
        fc.assert(fc.property(fc.uint8Array({ maxLength: 400 }), (b) => decodesOrRefuses(d, b)), { numRuns: RUNS });
      });

      it('random JSON-looking text decodes or is refused with its own error', () => {
        fc.assert(
          fc.property(fc.json({ maxDepth: 3 }), fc.integer({ min: 0, max: 8 }), (text, prefix) => {
            decodesOrRefuses(d, bytes(text));
            // Binary-framed decoders: a plausible prefix, then JSON.
            const b = new Uint8Array(prefix + text.length);
            b.set(bytes(text).subarray(0, text.length), prefix);
            decodesOrRefuses(d, b);
          }),
          { numRuns: RUNS },
        );
      });

      it('valid encodings cut, extended or with bytes changed decode or are refused with its own error', () => {
        fc.assert(
          fc.property(mutation, ({ cut, extra, flips, seed }) => {
            const s = d.seeds[seed % d.seeds.length] as Uint8Array;
            decodesOrRefuses(d, s.subarray(0, cut % (s.length + 1)));
            const longer = new Uint8Array(s.length + extra.length);
            longer.set(s);
            longer.set(extra, s.length);
            decodesOrRefuses(d, longer);
            const changed = Uint8Array.from(s);
            for (const [at, v] of flips) changed[at % changed.length] = v;
            decodesOrRefuses(d, changed);
          }),
          { numRuns: RUNS },
        );
      });
    });
  }
});
