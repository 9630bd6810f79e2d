/**
 * Property tests (fast-check) of the replication codec: any valid message round-trips, and any
 * bytes at all — random, or a valid encoding truncated, extended or with bytes flipped — decode
 * to a message or throw InvalidMessageError, never anything else.
 */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { decodeReplicationMessage, encodeReplicationMessage } from '../../protocols/replication/codec.js';
import type { AppendMessage, LoggedOp, ReplicationMessage } from '../../protocols/replication/types.js';

const RUNS = Number(process.env.SHOAL_FUZZ_RUNS ?? 300);

const id = fc.string({ minLength: 1, maxLength: 60 });
const key = fc.string({ minLength: 0, maxLength: 40 }).filter((k) => !/[\ud800-\udfff]/.test(k));
const op: fc.Arbitrary<Omit<LoggedOp, 'version'>> = fc.oneof(
  fc.record({ kind: fc.constant('put' as const), key, value: fc.uint8Array({ maxLength: 3000 }) }),
  fc.record({ kind: fc.constant('delete' as const), key }),
);

const append: fc.Arbitrary<AppendMessage> = fc
  .record({
    shard: fc.integer({ min: 0, max: 1023 }),
    epoch: fc.integer({ min: 1, max: 1000 }),
    from: id,
    to: id,
    prevSeq: fc.integer({ min: 0, max: 1_000_000 }),
    groups: fc.array(fc.array(fc.tuple(op, fc.integer({ min: 1, max: 1e9 })), { maxLength: 5 }), { maxLength: 4 }),
    commitSeq: fc.integer({ min: 0, max: 1_000_000 }),
    prevEpochPick: fc.integer({ min: 1, max: 1000 }),
  })
  .filter((r) => r.from !== r.to)
  .map((r) => ({
    type: 'append' as const,
    shard: r.shard,
    epoch: r.epoch,
    from: r.from,
    to: r.to,
    // Groups are all of the message's epoch, after epochStartSeq = prevSeq.
    epochStartSeq: r.prevSeq,
    prevSeq: r.prevSeq,
    prevEpoch: r.prevSeq === 0 ? 0 : Math.min(r.epoch, r.prevEpochPick),
    groups: r.groups.map((ops, k) => ({ seq: r.prevSeq + 1 + k, epoch: r.epoch, ops: ops.map(([o, version]) => ({ ...o, version }) as LoggedOp) })),
    commitSeq: r.commitSeq,
  }));

const message: fc.Arbitrary<ReplicationMessage> = fc.oneof(
  append,
  fc
    .record({ shard: fc.integer({ min: 0, max: 1023 }), epoch: fc.integer({ min: 1, max: 1e6 }), from: id, to: id, matchSeq: fc.integer({ min: 0, max: 1e9 }), commitSeq: fc.integer({ min: 0, max: 1e9 }) })
    .filter((r) => r.from !== r.to)
    .map((r) => ({ type: 'append-ack' as const, ...r })),
  fc
    .record({ shard: fc.integer({ min: 0, max: 1023 }), epoch: fc.integer({ min: 1, max: 1e6 }), from: id, to: id, afterSeq: fc.integer({ min: 0, max: 1e9 }) })
    .filter((r) => r.from !== r.to)
    .map((r) => ({ type: 'catch-up' as const, ...r })),
);

/** Uint8Arrays as plain arrays, for deepEqual across copies. */
const plain = (m: unknown): unknown => JSON.parse(JSON.stringify(m, (_k, v: unknown) => (v instanceof Uint8Array ? [...v] : v)));

function decodesOrRefuses(bytes: Uint8Array): void {
  try {
    decodeReplicationMessage(bytes);
  } catch (err) {
    assert.equal((err as Error).name, 'InvalidMessageError', `unexpected ${(err as Error).name}: ${(err as Error).message}`);
  }
}

describe('replication codec (fast-check)', () => {
  it('round-trips any valid message', () => {
    fc.assert(
      fc.property(message, (m) => {
        assert.deepEqual(plain(decodeReplicationMessage(encodeReplicationMessage(m))), plain(m));
      }),
      { numRuns: RUNS },
    );
  });

  it('random bytes decode or throw InvalidMessageError', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), (b) => decodesOrRefuses(b)), { numRuns: RUNS * 3 });
  });

  it('a valid encoding truncated, extended or with a byte changed decodes or throws InvalidMessageError', () => {
    fc.assert(
      fc.property(message, fc.nat(), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 2 }), (m, at, byte, how) => {
        const bytes = encodeReplicationMessage(m);
        const k = at % (bytes.length + 1);
        let mutated: Uint8Array;
        if (how === 0) mutated = bytes.subarray(0, k);
        else if (how === 1) mutated = new Uint8Array([...bytes, byte]);
        else {
          mutated = bytes.slice();
          if (k < mutated.length) mutated[k] = byte;
        }
        decodesOrRefuses(mutated);
      }),
      { numRuns: RUNS * 3 },
    );
  });
});
