import assert from 'node:assert/strict';
import { BATCH_PREFIX_BYTES, ReplicationOutbox } from '../../node/replication-outbox.js';
import type { CatchUpMessage } from '../../protocols/replication/types.js';

type SizedMessage = CatchUpMessage & { size: number };

/** A catch-up message whose encoding is `size` bytes (the test's encoder pads to it). */
function msg(to: string, afterSeq: number, size: number): SizedMessage {
  return { type: 'catch-up', shard: 0, epoch: 1, from: 'p', to, afterSeq, size };
}

function frames(sent: Array<{ to: string; frame: Uint8Array }>): Array<{ to: string; seqs: number[] }> {
  return sent.map(({ to, frame }) => {
    const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
    const seqs: number[] = [];
    for (let off = 0; off < frame.length; ) {
      const len = view.getUint32(off);
      seqs.push(frame[off + BATCH_PREFIX_BYTES]!);
      off += BATCH_PREFIX_BYTES + len;
    }
    return { to, seqs };
  });
}

function outbox(over: { batchBytes?: number; bytesPerTurn?: number; maxFrameBytes?: number; maxQueuedPerPeer?: number } = {}) {
  const sent: Array<{ to: string; frame: Uint8Array }> = [];
  const refused: number[] = [];
  const box = new ReplicationOutbox({
    // The first byte of an encoding is afterSeq, so the test can read the order back.
    encode: (m) => new Uint8Array((m as SizedMessage).size).fill((m as SizedMessage).afterSeq, 0, 1),
    send: (to, frame) => {
      sent.push({ to, frame });
      return 'queued';
    },
    maxFrameBytes: over.maxFrameBytes ?? 10_000,
    batchBytes: over.batchBytes ?? 1000,
    bytesPerTurn: over.bytesPerTurn ?? 1_000_000,
    maxQueuedPerPeer: over.maxQueuedPerPeer ?? 100,
    onRefused: (m) => refused.push((m as SizedMessage).afterSeq),
  });
  return { box, sent, refused };
}

describe('replication outbox', () => {
  it('batches a turn of small messages per peer, cuts batches at batchBytes, and sends a large message in a frame of its own', () => {
    const { box, sent } = outbox();
    for (let k = 1; k <= 5; k++) box.push(msg('a', k, 296)); // 300 bytes with its prefix
    box.push(msg('b', 9, 10));
    box.push(msg('a', 6, 2000)); // larger than a batch
    box.push(msg('a', 7, 10));
    box.flush();
    box.close();
    assert.deepEqual(frames(sent), [
      { to: 'a', seqs: [1, 2, 3] },
      { to: 'a', seqs: [4, 5] },
      { to: 'a', seqs: [6] },
      { to: 'a', seqs: [7] },
      { to: 'b', seqs: [9] },
    ]);
    for (const f of sent) assert.ok(f.frame.length <= 1000 || frames([f])[0]!.seqs.length === 1, 'a frame over batchBytes holds one message');
  });

  it('drops a message over the frame limit alone, and the others still go', () => {
    const { box, sent, refused } = outbox({ maxFrameBytes: 500 });
    box.push(msg('a', 1, 10));
    box.push(msg('a', 2, 497)); // 501 with its prefix
    box.push(msg('a', 3, 10));
    box.flush();
    box.close();
    assert.deepEqual(refused, [2]);
    assert.deepEqual(frames(sent).flatMap((f) => f.seqs), [1, 3]);
  });

  it('encodes at most bytesPerTurn per turn (at least one message), keeping order, peers taking turns', async () => {
    const { box, sent } = outbox({ bytesPerTurn: 1000, batchBytes: 100_000 });
    for (let k = 1; k <= 6; k++) box.push(msg('a', k, 600));
    for (let k = 11; k <= 12; k++) box.push(msg('b', k, 600));
    box.flush();
    // Turn 1: a gets 600 + 600 (the budget runs out after the second); b waits.
    assert.deepEqual(frames(sent), [{ to: 'a', seqs: [1, 2] }]);
    // Further turns run on their own (setImmediate) until everything is sent, b before a's rest.
    for (let i = 0; i < 20 && box.pending('a') + box.pending('b') > 0; i++) await new Promise((r) => setImmediate(r));
    box.close();
    const all = frames(sent);
    assert.deepEqual(all[1], { to: 'b', seqs: [11, 12] });
    assert.deepEqual(all.filter((f) => f.to === 'a').flatMap((f) => f.seqs), [1, 2, 3, 4, 5, 6]);
    assert.ok(box.counters.deferredTurns >= 2);
  });

  it('bounds the messages waiting for one peer, dropping the oldest', () => {
    const { box, sent } = outbox({ maxQueuedPerPeer: 3 });
    for (let k = 1; k <= 5; k++) box.push(msg('a', k, 10));
    assert.equal(box.pending('a'), 3);
    box.flush();
    box.close();
    assert.deepEqual(frames(sent).flatMap((f) => f.seqs), [3, 4, 5]);
    assert.equal(box.counters.messagesDroppedQueueFull, 2);
  });
});
