/**
 * Join tokens (node/join-token.ts): round trips, and fast-check properties that any string —
 * random, or a valid token cut, extended or with characters changed — decodes to a token with a
 * 64-hex key and valid addresses or throws ConfigError, never anything else.
 */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ConfigError } from '../../protocols/errors.js';
import { decodeJoinToken, encodeJoinToken, JOIN_TOKEN_PREFIX } from '../../node/join-token.js';

const RUNS = Number(process.env.SHOAL_FUZZ_RUNS ?? 300);
const PEER = '12D3KooWJmHGoTpnwbhFpWDnrD3LRNkfmZDmdnf7snitw2TV3zga';
const hex = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => Buffer.from(b).toString('hex'));
const addr = fc.tuple(fc.integer({ min: 1, max: 254 }), fc.integer({ min: 1, max: 65535 })).map(([a, port]) => `/ip4/127.0.0.${a}/tcp/${port}/p2p/${PEER}`);
const token = fc.record({ keyHex: hex, addrs: fc.array(addr, { minLength: 1, maxLength: 16 }) });

/** Decode, and if it succeeds, check the result is well-formed. */
function decodeOrConfigError(s: string): void {
  try {
    const t = decodeJoinToken(s);
    assert.match(t.keyHex, /^[0-9a-f]{64}$/);
    assert.ok(t.addrs.length >= 1 && t.addrs.length <= 16);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    assert.match(err.message, /join token/);
  }
}

describe('join token codec', () => {
  it('round-trips any key and 1 to 16 addresses', () => {
    fc.assert(
      fc.property(token, (t) => {
        const s = encodeJoinToken(t);
        assert.ok(s.startsWith(JOIN_TOKEN_PREFIX));
        assert.deepEqual(decodeJoinToken(s), { keyHex: t.keyHex, addrs: t.addrs });
        assert.deepEqual(decodeJoinToken(`  ${s}\n`), { keyHex: t.keyHex, addrs: t.addrs }, 'surrounding white space from a paste is ignored');
      }),
      { numRuns: RUNS },
    );
  });

  it('names what is wrong with a bad token', () => {
    const good = encodeJoinToken({ keyHex: 'a'.repeat(64), addrs: [`/ip4/127.0.0.1/tcp/4001/p2p/${PEER}`] });
    const cases: Array<[string, RegExp]> = [
      ['', /must start with SHOAL-1-/],
      ['SHOAL-2-abc', /unknown version/],
      ['SHOAL-1-', /base64url/],
      ['SHOAL-1-a+b', /base64url/],
      [good.slice(0, good.length - 10), /cut short or mistyped/],
      [JOIN_TOKEN_PREFIX + Buffer.from(JSON.stringify({ k: 'zz', a: [] })).toString('base64url'), /key is not 64 hex/],
      [JOIN_TOKEN_PREFIX + Buffer.from(JSON.stringify({ k: 'a'.repeat(64), a: [] })).toString('base64url'), /1 to 16 addresses/],
      [JOIN_TOKEN_PREFIX + Buffer.from(JSON.stringify({ k: 'a'.repeat(64), a: ['/ip4/127.0.0.1/tcp/1'] })).toString('base64url'), /p2p/],
      [JOIN_TOKEN_PREFIX + Buffer.from(JSON.stringify({ k: 'a'.repeat(64), a: [`/ip4/127.0.0.1/tcp/1/p2p/${PEER}`], x: 1 })).toString('base64url'), /cut short/],
      ['SHOAL-1-' + 'A'.repeat(9000), /longer than/],
    ];
    for (const [input, why] of cases) {
      assert.throws(() => decodeJoinToken(input, '--join'), (err: unknown) => err instanceof ConfigError && why.test(err.message) && err.message.includes('--join'), input.slice(0, 40));
    }
  });

  it('fuzz: random strings decode or throw ConfigError', () => {
    fc.assert(fc.property(fc.string({ maxLength: 300 }), (s) => decodeOrConfigError(s)), { numRuns: RUNS });
    fc.assert(fc.property(fc.string({ maxLength: 300 }), (s) => decodeOrConfigError(JOIN_TOKEN_PREFIX + s)), { numRuns: RUNS });
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), (b) => decodeOrConfigError(JOIN_TOKEN_PREFIX + Buffer.from(b).toString('base64url'))),
      { numRuns: RUNS },
    );
  });

  it('fuzz: a valid token cut, extended or with characters changed decodes or throws ConfigError', () => {
    fc.assert(
      fc.property(token, fc.nat(), fc.string({ maxLength: 20 }), fc.array(fc.tuple(fc.nat(), fc.string({ minLength: 1, maxLength: 1 })), { maxLength: 5 }), (t, cut, extra, flips) => {
        const s = encodeJoinToken(t);
        decodeOrConfigError(s.slice(0, cut % (s.length + 1)));
        decodeOrConfigError(s + extra);
        const chars = [...s];
        for (const [at, c] of flips) chars[at % chars.length] = c;
        decodeOrConfigError(chars.join(''));
      }),
      { numRuns: RUNS },
    );
  });
});
