import assert from 'node:assert/strict';
import { describe, it } from 'mocha';
import {
  decodeMembershipMessage,
  encodeMembershipMessage,
  MAX_ADDRS,
  MAX_DIGEST_MEMBERS,
  MAX_MESSAGE_BYTES,
} from '../../protocols/membership/codec.js';
import type { MembershipMessage } from '../../protocols/membership/types.js';

const PEER = '12D3KooWGRUVh8J4Qa7Y2kzB9u2nFJXc8E5ZpH1tXo6m3yq4rSdT';
const OTHER = '12D3KooWQzZ1x8dK3Xc2bVh9Jm5Lp7Rt4Ny6Ws8Ea1Gu3Fi5Ho7K';
const ADDR = '/ip4/127.0.0.1/tcp/4001';

const SAMPLES: MembershipMessage[] = [
  { kind: 'heartbeat', peerId: PEER, incarnation: 3, addrs: [ADDR], load: { eventLoopDelayMs: 1.25, rssBytes: 52_428_800, cpuPercent: 140 } },
  { kind: 'heartbeat', peerId: PEER, incarnation: 0, addrs: [], load: { eventLoopDelayMs: 0, rssBytes: 0, cpuPercent: 0 } },
  { kind: 'suspect', from: PEER, peerId: OTHER, incarnation: 0 },
  { kind: 'dead', from: PEER, peerId: OTHER, incarnation: Number.MAX_SAFE_INTEGER },
  { kind: 'left', peerId: PEER, incarnation: 7 },
  { kind: 'digest', from: PEER, members: [] },
  {
    kind: 'digest',
    from: PEER,
    members: [
      { peerId: PEER, state: 'alive', incarnation: 1, addrs: [ADDR] },
      { peerId: OTHER, state: 'suspect', incarnation: 2, addrs: [] },
      { peerId: 'p3', state: 'dead', incarnation: 0, addrs: [] },
      { peerId: 'p4', state: 'left', incarnation: 5, addrs: [ADDR, '/ip6/::1/tcp/4001'] },
    ],
  },
];

const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);
const json = (v: unknown): Uint8Array => utf8(JSON.stringify(v));

function assertInvalid(bytes: Uint8Array, what: string): void {
  assert.throws(() => decodeMembershipMessage(bytes), (err: Error) => err.name === 'InvalidMessageError', what);
}

/** A valid heartbeat with one field replaced (or removed, for `undefined`). */
function heartbeatWith(field: string, value: unknown): Record<string, unknown> {
  const base: Record<string, unknown> = { ...(SAMPLES[0] as object) };
  base[field] = value;
  return base;
}

describe('membership codec', () => {
  it('round-trips every kind of message', () => {
    for (const m of SAMPLES) assert.deepEqual(decodeMembershipMessage(encodeMembershipMessage(m)), m, m.kind);
  });

  it('encodes only the known fields', () => {
    const extra = { ...SAMPLES[4], secret: 'x' } as unknown as MembershipMessage;
    assert.equal(new TextDecoder().decode(encodeMembershipMessage(extra)), `{"kind":"left","peerId":"${PEER}","incarnation":7}`);
  });

  it('strips unknown fields on decode, at every level', () => {
    const decoded = decodeMembershipMessage(
      json({
        kind: 'digest',
        from: PEER,
        extra: 1,
        members: [{ peerId: OTHER, state: 'alive', incarnation: 1, addrs: [], __proto__x: 2 }],
      }),
    );
    assert.deepEqual(decoded, { kind: 'digest', from: PEER, members: [{ peerId: OTHER, state: 'alive', incarnation: 1, addrs: [] }] });
    const hb = decodeMembershipMessage(json(heartbeatWith('load', { eventLoopDelayMs: 1, rssBytes: 2, cpuPercent: 3, gpu: 4 })));
    assert.deepEqual(hb.kind === 'heartbeat' && hb.load, { eventLoopDelayMs: 1, rssBytes: 2, cpuPercent: 3 });
  });

  it('does not let __proto__ through', () => {
    const decoded = decodeMembershipMessage(utf8(`{"kind":"left","peerId":"${PEER}","incarnation":1,"__proto__":{"polluted":true}}`));
    assert.equal((decoded as unknown as { polluted?: boolean }).polluted, undefined);
    assert.equal(({} as { polluted?: boolean }).polluted, undefined);
  });

  it('rejects garbage', () => {
    const garbage: [Uint8Array, string][] = [
      [new Uint8Array(0), 'empty'],
      [utf8('not json'), 'not json'],
      [new Uint8Array([0xff, 0xfe, 0x7b, 0x7d]), 'invalid utf-8'],
      [json(null), 'null'],
      [json([SAMPLES[0]]), 'array'],
      [json('heartbeat'), 'string'],
      [json(42), 'number'],
      [json({}), 'no kind'],
      [json({ ...SAMPLES[2], kind: 'gossip' }), 'unknown kind'],
      [json({ ...SAMPLES[2], kind: 7 }), 'kind not a string'],
    ];
    for (const [bytes, what] of garbage) assertInvalid(bytes, what);
  });

  it('rejects oversized input', () => {
    const padding = 'x'.repeat(MAX_MESSAGE_BYTES);
    assertInvalid(utf8(`{"kind":"left","peerId":"${PEER}","incarnation":1,"pad":"${padding}"}`), 'over 256 KiB');
    // Exactly at the limit is fine (padding is an unknown field, so it is dropped).
    const head = `{"kind":"left","peerId":"${PEER}","incarnation":1,"pad":"`;
    const exact = utf8(`${head}${'x'.repeat(MAX_MESSAGE_BYTES - head.length - 2)}"}`);
    assert.equal(exact.byteLength, MAX_MESSAGE_BYTES);
    assert.equal(decodeMembershipMessage(exact).kind, 'left');
  });

  it('rejects wrong-typed or out-of-range heartbeat fields', () => {
    const bad: [string, unknown][] = [
      ['peerId', undefined],
      ['peerId', ''],
      ['peerId', 5],
      ['peerId', 'p'.repeat(257)],
      ['incarnation', -1],
      ['incarnation', 1.5],
      ['incarnation', '3'],
      ['incarnation', 2 ** 53],
      ['incarnation', null],
      ['addrs', ADDR],
      ['addrs', [ADDR, 4]],
      ['addrs', ['']],
      ['addrs', ['a'.repeat(513)]],
      ['addrs', Array.from({ length: MAX_ADDRS + 1 }, () => ADDR)],
      ['load', null],
      ['load', [1, 2, 3]],
      ['load', { eventLoopDelayMs: -1, rssBytes: 0, cpuPercent: 0 }],
      ['load', { eventLoopDelayMs: 0, rssBytes: '1', cpuPercent: 0 }],
      ['load', { eventLoopDelayMs: 0, rssBytes: 0 }],
    ];
    for (const [field, value] of bad) assertInvalid(json(heartbeatWith(field, value)), `${field}=${JSON.stringify(value)}`);
    // JSON cannot carry NaN or Infinity, but a hand-written 1e999 parses as Infinity.
    assertInvalid(utf8(`{"kind":"heartbeat","peerId":"${PEER}","incarnation":0,"addrs":[],"load":{"eventLoopDelayMs":1e999,"rssBytes":0,"cpuPercent":0}}`), 'Infinity');
    // The limits themselves are fine.
    const atLimits = heartbeatWith('addrs', Array.from({ length: MAX_ADDRS }, () => 'a'.repeat(512)));
    atLimits.peerId = 'p'.repeat(256);
    assert.equal(decodeMembershipMessage(json(atLimits)).kind, 'heartbeat');
  });

  it('rejects bad suspect, dead and left fields', () => {
    assertInvalid(json({ kind: 'suspect', peerId: OTHER, incarnation: 0 }), 'suspect without from');
    assertInvalid(json({ kind: 'dead', from: PEER, peerId: '', incarnation: 0 }), 'dead with empty peerId');
    assertInvalid(json({ kind: 'dead', from: PEER, peerId: OTHER, incarnation: -3 }), 'dead with negative incarnation');
    assertInvalid(json({ kind: 'left', peerId: PEER }), 'left without incarnation');
    assertInvalid(json({ kind: 'left', peerId: ['x'], incarnation: 0 }), 'left with array peerId');
  });

  it('rejects bad digests', () => {
    const member = { peerId: OTHER, state: 'alive', incarnation: 0, addrs: [] };
    const bad: [unknown, string][] = [
      [{ kind: 'digest', from: PEER }, 'no members'],
      [{ kind: 'digest', from: PEER, members: {} }, 'members not an array'],
      [{ kind: 'digest', members: [] }, 'no from'],
      [{ kind: 'digest', from: PEER, members: [null] }, 'null record'],
      [{ kind: 'digest', from: PEER, members: [{ ...member, state: 'zombie' }] }, 'unknown state'],
      [{ kind: 'digest', from: PEER, members: [{ ...member, state: undefined }] }, 'no state'],
      [{ kind: 'digest', from: PEER, members: [{ ...member, incarnation: -1 }] }, 'negative incarnation'],
      [{ kind: 'digest', from: PEER, members: [{ ...member, addrs: 'x' }] }, 'addrs not an array'],
      [{ kind: 'digest', from: PEER, members: [{ ...member, peerId: 'p'.repeat(257) }] }, 'long peerId'],
      [{ kind: 'digest', from: PEER, members: Array.from({ length: MAX_DIGEST_MEMBERS + 1 }, () => member) }, 'too many members'],
    ];
    for (const [value, what] of bad) assertInvalid(json(value), what);
    const full = { kind: 'digest', from: PEER, members: Array.from({ length: MAX_DIGEST_MEMBERS }, () => member) };
    assert.equal(decodeMembershipMessage(json(full)).kind, 'digest');
  });

  it('survives random bytes and random mutations without throwing anything but InvalidMessageError', () => {
    let seed = 12345;
    const nextByte = (): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed >>> 24;
    };
    const valid = encodeMembershipMessage(SAMPLES[6] as MembershipMessage);
    for (let i = 0; i < 2000; i++) {
      const bytes = i % 2 === 0 ? Uint8Array.from({ length: nextByte() }, nextByte) : Uint8Array.from(valid);
      if (i % 2 === 1) bytes[nextByte() % bytes.length] = nextByte();
      try {
        decodeMembershipMessage(bytes);
      } catch (err) {
        assert.equal((err as Error).name, 'InvalidMessageError', `iteration ${i}`);
      }
    }
  });
});
