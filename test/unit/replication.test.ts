/**
 * Scenario tests of the replication core: a few replicas wired by hand through the simulated
 * shell (durable store + Ready contract) and a message queue the test controls.
 */
import assert from 'node:assert/strict';
import type { ShardAssignment } from '../../protocols/cluster-map/types.js';
import {
  casMatches,
  decodeReplicationMessage,
  encodeReplicationMessage,
  resolveReplicationConfig,
  type AppendMessage,
  type InSyncChangeRequest,
  type ReplicationConfig,
  type ReplicationMessage,
  type SnapshotToSend,
  type WriteAnswer,
  type WriteOp,
} from '../../protocols/replication/index.js';
import { ReplicaShell } from '../sim/replication-sim.js';

const SHARD = 3;
const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);

class Net {
  readonly shells = new Map<string, ReplicaShell>();
  queue: ReplicationMessage[] = [];
  readonly answers = new Map<number, WriteAnswer>();
  requests: InSyncChangeRequest[] = [];
  snapshots: Array<SnapshotToSend & { from: string }> = [];
  nowMs = 1000;
  private nextId = 1;

  constructor(ids: string[], config: Partial<ReplicationConfig> = {}) {
    for (const id of ids) {
      const shell = new ReplicaShell(id, SHARD, { minInSync: 2, ackTimeoutMs: 100, heartbeatIntervalMs: 20, retransmitTimeoutMs: 40, ...config });
      shell.start(this.nowMs);
      this.shells.set(id, shell);
    }
  }

  shell(id: string): ReplicaShell {
    return this.shells.get(id)!;
  }

  core(id: string) {
    return this.shell(id).core!;
  }

  assign(a: ShardAssignment, only?: string[]): void {
    for (const [id, shell] of this.shells) {
      if (only !== undefined && !only.includes(id)) continue;
      shell.setAssignment(this.nowMs, a);
      this.flush(id);
    }
  }

  lease(id: string, untilMs = this.nowMs + 10_000): void {
    this.core(id).setLease(this.nowMs, untilMs);
    this.flush(id);
  }

  flush(id: string): void {
    const shell = this.shell(id);
    if (!shell.alive) return;
    const out = shell.process(this.nowMs);
    this.queue.push(...out.messages);
    for (const a of out.answers) this.answers.set(a.requestId, a);
    this.requests.push(...out.requests);
    this.snapshots.push(...out.snapshots.map((s) => ({ ...s, from: id })));
  }

  /** Delivers queued messages (and what they cause) until quiet; `keep` false drops a message. */
  deliver(keep: (m: ReplicationMessage) => boolean = () => true, maxRounds = 100): void {
    for (let round = 0; round < maxRounds && this.queue.length > 0; round++) {
      const batch = this.queue;
      this.queue = [];
      for (const m of batch) if (keep(m)) this.deliverOne(m);
    }
  }

  deliverOne(m: ReplicationMessage): void {
    const shell = this.shells.get(m.to);
    if (shell === undefined || !shell.alive) return;
    shell.core!.step(this.nowMs, decodeReplicationMessage(encodeReplicationMessage(m)));
    this.flush(m.to);
  }

  tick(ms: number): void {
    this.nowMs += ms;
    for (const id of this.shells.keys()) {
      this.shell(id).core?.tick(this.nowMs);
      this.flush(id);
    }
  }

  write(id: string, op: WriteOp, lagGroups = 0): number {
    const requestId = this.nextId++;
    const shell = this.shell(id);
    shell.core!.write(this.nowMs, shell.buildWrite(requestId, op, lagGroups));
    this.flush(id);
    return requestId;
  }

  result(requestId: number) {
    const a = this.answers.get(requestId);
    assert.ok(a !== undefined, `request ${requestId} answered`);
    assert.ok(a.ok, `request ${requestId} succeeded: ${a.ok ? '' : a.error.name}`);
    return a.result;
  }

  logOf(id: string): Array<[number, number, number]> {
    return this.shell(id).durable.log.map((g) => [g.seq, g.epoch, g.ops.length]);
  }
}

const ALL = ['r1', 'r2', 'r3'];
const epoch1: ShardAssignment = { replicas: ALL, primary: 'r1', inSync: ALL, epoch: 1 };

function threeReplicas(config: Partial<ReplicationConfig> = {}): Net {
  const net = new Net(ALL, config);
  net.assign(epoch1);
  net.lease('r1');
  net.deliver();
  return net;
}

function assertThrowsNamed(fn: () => unknown, name: string): Error {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof Error, `expected ${name}, nothing thrown`);
  assert.equal(caught.name, name);
  return caught;
}

describe('replication core', () => {
  it('batches writes that arrive while a group is in flight into the next group', () => {
    const net = threeReplicas({ maxGroupsInFlight: 1 });
    const w1 = net.write('r1', { kind: 'put', key: 'a', value: bytes('1') });
    const w2 = net.write('r1', { kind: 'put', key: 'a', value: bytes('2') });
    const w3 = net.write('r1', { kind: 'put', key: 'b', value: bytes('3') });
    assert.deepEqual(net.logOf('r1'), [[1, 1, 1]]); // w2 and w3 wait for group 1
    assert.equal(net.answers.size, 0);
    net.deliver();
    assert.deepEqual(net.logOf('r1'), [[1, 1, 1], [2, 1, 2]]);
    assert.deepEqual(net.result(w1), { applied: true, version: 1, seq: 1 });
    assert.deepEqual(net.result(w2), { applied: true, version: 2, seq: 2 });
    assert.deepEqual(net.result(w3), { applied: true, version: 1, seq: 2 });
    net.tick(25); // a heartbeat carries the commit point: the backups apply
    net.deliver();
    for (const id of ALL) {
      assert.deepEqual(net.logOf(id), [[1, 1, 1], [2, 1, 2]], id);
      assert.equal(net.shell(id).durable.data.get('a')?.version, 2, id);
    }
    // One append per backup per group.
    const appends: AppendMessage[] = [];
    net.write('r1', { kind: 'put', key: 'c', value: bytes('4') });
    for (const m of net.queue) if (m.type === 'append') appends.push(m);
    assert.deepEqual(appends.map((m) => [m.to, m.groups.map((g) => g.seq)]), [['r2', [3]], ['r3', [3]]]);
  });

  it('heartbeats an idle shard\'s replicas every idleHeartbeatIntervalMs once they know the commit point, and a write ends that at once', () => {
    const net = threeReplicas({ idleHeartbeatIntervalMs: 200 });
    const w = net.write('r1', { kind: 'put', key: 'a', value: bytes('1') });
    net.deliver();
    assert.equal(net.result(w).applied, true);
    const heartbeatsOver = (ms: number, keep: (m: ReplicationMessage) => boolean = () => true): Map<string, number> => {
      const sent = new Map<string, number>();
      for (let t = 0; t < ms; t += 10) {
        net.tick(10);
        for (const m of net.queue) if (m.type === 'append' && m.from === 'r1') sent.set(m.to, (sent.get(m.to) ?? 0) + 1);
        net.deliver(keep);
      }
      return sent;
    };
    // The backups learn commit point 1 from the next heartbeat and say so in their acks: from
    // then on, a heartbeat every 200 ms instead of every 20.
    heartbeatsOver(50);
    const idle = heartbeatsOver(1000);
    for (const id of ['r2', 'r3']) {
      assert.ok((idle.get(id) ?? 0) >= 4 && (idle.get(id) ?? 0) <= 6, `${id}: ${idle.get(id)} heartbeats in 1 s while idle`);
    }
    // A write: appended and its commit point sent at the short interval, then idle again.
    const w2 = net.write('r1', { kind: 'put', key: 'b', value: bytes('2') });
    net.deliver();
    assert.equal(net.result(w2).applied, true);
    const after = heartbeatsOver(30);
    for (const id of ['r2', 'r3']) assert.ok((after.get(id) ?? 0) >= 1, `${id}: the new commit point is sent within a short heartbeat`);
    for (const id of ALL) assert.equal(net.shell(id).durable.data.get('b')?.version, 1, `${id} applied the write`);
    // A replica whose acks are lost never shows it knows the commit point: it keeps the short interval.
    net.write('r1', { kind: 'put', key: 'c', value: bytes('3') });
    net.deliver((m) => !(m.type === 'append-ack' && m.from === 'r3' && m.matchSeq >= 3 && m.commitSeq >= 3));
    const lossy = heartbeatsOver(400, (m) => !(m.type === 'append-ack' && m.from === 'r3'));
    assert.ok((lossy.get('r3') ?? 0) >= 15, `r3 (acks lost): ${lossy.get('r3')} heartbeats in 400 ms`);
    assert.ok((lossy.get('r2') ?? 0) <= 4, `r2 (idle): ${lossy.get('r2')} heartbeats in 400 ms`);
  });

  it('answers a write only after the primary has persisted it (advance) and every in-sync replica acknowledged', () => {
    const net = threeReplicas();
    const w = net.write('r1', { kind: 'put', key: 'a', value: bytes('x') });
    net.deliver((m) => m.to !== 'r3' || m.type !== 'append');
    assert.equal(net.answers.has(w), false, 'r3 has not acknowledged');
    net.tick(25); // a heartbeat is not a retransmission: r3 still lacks the group
    net.deliver();
    assert.equal(net.answers.has(w), false, 'r3 has not acknowledged after a heartbeat');
    net.tick(20); // retransmitTimeoutMs (40) without progress: the group is sent again
    net.deliver();
    assert.equal(net.result(w).applied, true);
  });

  it('keeps at most maxInflightBytes in flight to a catching-up replica and resends only after retransmitTimeoutMs', () => {
    // Each group is one put of a 1,000-byte value: 1,000 + 2 (key) + 64 (op) + 64 (group) = 1,130 bytes.
    const net = new Net(ALL, { maxInflightBytes: 3500, maxAppendBytes: 1, retransmitTimeoutMs: 60 });
    net.assign({ replicas: ALL, primary: 'r1', inSync: ['r1', 'r2'], epoch: 1 });
    net.lease('r1');
    const cutR3 = (m: ReplicationMessage): boolean => m.to !== 'r3' && m.from !== 'r3';
    net.deliver(cutR3);
    for (let k = 0; k < 10; k++) {
      net.write('r1', { kind: 'put', key: `k${k}`, value: new Uint8Array(1000) });
      net.deliver(cutR3);
    }
    assert.equal(net.core('r1').status(net.nowMs).commitSeq, 10);
    net.queue = [];
    // r3 comes back: it asks for catch-up and gets group 1 as a probe; its ack opens the window.
    net.tick(25);
    const lost: number[] = [];
    net.deliver((m) => {
      const later = m.type === 'append' && m.to === 'r3' && m.groups.length > 0 && m.groups[0]!.seq > 1;
      if (later) lost.push(...m.groups.map((g) => g.seq));
      return !later;
    });
    const appendsToR3 = (): AppendMessage[] => net.queue.filter((m): m is AppendMessage => m.type === 'append' && m.to === 'r3');
    assert.deepEqual(net.logOf('r3').map(([seq]) => seq), [1]);
    assert.deepEqual(lost, [2, 3, 4], 'the ack of group 1 opens a window of 3 groups (lost on the way here)');
    // Nothing has been acknowledged beyond 1; one more heartbeat round must not add groups.
    const sent: number[] = [];
    for (let round = 0; round < 2; round++) {
      net.tick(25); // heartbeats, well before retransmitTimeoutMs
      for (const m of appendsToR3()) {
        sent.push(...m.groups.map((g) => g.seq));
        if (m.groups.length === 0) assert.equal(m.prevSeq, 1, 'a heartbeat names the acknowledged point, not a gap');
      }
      net.queue = net.queue.filter((m) => m.to !== 'r3');
    }
    assert.deepEqual(sent, [], 'heartbeats do not resend groups in flight');
    net.tick(15); // 65 ms since the window was filled: groups 2..4 are sent again, no more
    assert.deepEqual(
      appendsToR3().flatMap((m) => m.groups.map((g) => g.seq)),
      [2, 3, 4],
      'a resend fills the window again (3 groups of 1,130 bytes fit in 3,500)',
    );
    // Delivered this time: acks slide the window until r3 holds everything.
    for (let round = 0; round < 20 && net.logOf('r3').length < 10; round++) {
      net.deliver();
      net.tick(25);
    }
    assert.deepEqual(net.logOf('r3'), net.logOf('r1'));
  });

  it('reports a silent backup late after ackTimeoutMs, one whose peer is still heard from only after slowAckTimeoutMs', () => {
    for (const heard of [false, true]) {
      const net = threeReplicas({ ackTimeoutMs: 100, slowAckTimeoutMs: 400 });
      net.write('r1', { kind: 'put', key: 'a', value: bytes('x') });
      net.deliver((m) => m.to !== 'r3' && m.from !== 'r3'); // r3 never acknowledges
      let reportedAtMs = -1;
      const start = net.nowMs;
      for (let k = 0; k < 30 && reportedAtMs < 0; k++) {
        net.nowMs += 20;
        // r3's peer keeps sending other shards' traffic (heard), or nothing at all.
        net.core('r1').tick(net.nowMs, heard ? new Map([['r3', net.nowMs - 5]]) : new Map());
        net.flush('r1');
        net.queue = [];
        if (net.requests.some((r) => r.kind === 'shrink-in-sync' && r.replica === 'r3')) reportedAtMs = net.nowMs - start;
      }
      if (heard) assert.ok(reportedAtMs >= 400 && reportedAtMs <= 440, `heard-from: reported at ${reportedAtMs} ms`);
      else assert.ok(reportedAtMs >= 100 && reportedAtMs <= 140, `silent: reported at ${reportedAtMs} ms`);
    }
  });

  it('a backup refuses appends from an older epoch and tells the sender the newer one', () => {
    const net = threeReplicas();
    net.write('r1', { kind: 'put', key: 'a', value: bytes('1') });
    const stale = net.queue.find((m): m is AppendMessage => m.type === 'append' && m.to === 'r2')!;
    net.queue = [];
    net.assign({ replicas: ALL, primary: 'r1', inSync: ALL, epoch: 2 }, ['r2']);
    net.deliverOne(stale);
    assert.deepEqual(net.logOf('r2'), []);
    const reply = net.queue.find((m) => m.from === 'r2' && m.to === 'r1')!;
    assert.equal(reply.type, 'catch-up');
    assert.equal(reply.epoch, 2);
    net.deliverOne(reply);
    assert.equal(net.core('r1').role, 'backup', 'the stale primary stepped down on seeing epoch 2');
    assert.equal(net.core('r1').epoch, 2);
  });

  it('buffers out-of-order appends and applies them in sequence order', () => {
    const net = threeReplicas({ maxGroupsInFlight: 3 });
    for (const k of ['a', 'b', 'c']) net.write('r1', { kind: 'put', key: k, value: bytes(k) });
    const toR2 = net.queue.filter((m) => m.to === 'r2');
    assert.equal(toR2.length, 3);
    net.queue = net.queue.filter((m) => m.to !== 'r2');
    for (const m of toR2.reverse()) net.deliverOne(m);
    assert.deepEqual(net.logOf('r2'), [[1, 1, 1], [2, 1, 1], [3, 1, 1]]);
    const acks = net.queue.filter((m) => m.from === 'r2' && m.type === 'append-ack');
    assert.ok(acks.some((m) => m.type === 'append-ack' && m.matchSeq === 3));
    net.deliver();
    assert.equal(net.core('r1').status(net.nowMs).commitSeq, 3);
  });

  it('a gap makes the backup ask for catch-up, and the primary fills it', () => {
    const net = threeReplicas({ maxGroupsInFlight: 2, maxBufferedAppends: 0 });
    net.write('r1', { kind: 'put', key: 'a', value: bytes('1') });
    net.write('r1', { kind: 'put', key: 'b', value: bytes('2') });
    const [first, second] = net.queue.filter((m) => m.to === 'r2');
    net.queue = net.queue.filter((m) => m.to !== 'r2');
    void first; // lost
    net.deliverOne(second!);
    assert.deepEqual(net.logOf('r2'), []);
    const ask = net.queue.find((m) => m.from === 'r2')!;
    assert.equal(ask.type, 'catch-up');
    assert.equal(ask.type === 'catch-up' && ask.afterSeq, 0);
    net.deliver();
    assert.deepEqual(net.logOf('r2'), [[1, 1, 1], [2, 1, 1]]);
  });

  it('a backup that lost an acknowledged tail (damaged records cut at restart) is believed and refilled', () => {
    const net = threeReplicas();
    for (const v of ['1', '2', '3']) {
      net.write('r1', { kind: 'put', key: v, value: bytes(v) });
      net.deliver();
    }
    assert.deepEqual(net.logOf('r2').map((g) => g[0]), [1, 2, 3], 'one group per write');
    assert.equal(net.core('r1').status(net.nowMs).commitSeq, 3);
    // r2 comes back holding groups 1..1 only and asks from there, below the 3 it acknowledged.
    net.deliverOne({ type: 'catch-up', shard: SHARD, epoch: 1, from: 'r2', to: 'r1', afterSeq: 1 });
    const refill = net.queue.find((m) => m.from === 'r1' && m.to === 'r2' && m.type === 'append');
    assert.ok(refill !== undefined && refill.type === 'append', 'the primary answers with an append');
    assert.equal(refill.prevSeq, 1, 'from where r2 says its log ends, not from the old match point');
    assert.deepEqual(refill.groups.map((g) => g.seq), [2, 3]);
    assert.equal(net.core('r1').status(net.nowMs).commitSeq, 3, 'commit never goes back');
  });

  it('a lone replica takes writes once the shell lowers minInSync to 1 (a cluster of one peer), and not before', () => {
    const net = new Net(['r1']);
    net.assign({ replicas: ['r1'], primary: 'r1', inSync: ['r1'], epoch: 1 });
    net.lease('r1');
    assertThrowsNamed(() => net.write('r1', { kind: 'put', key: 'a', value: bytes('1') }), 'NotEnoughReplicasError');
    assertThrowsNamed(() => net.core('r1').setMinInSync(net.nowMs, 3), 'InvalidRequestError');
    net.core('r1').setMinInSync(net.nowMs, 1);
    const w = net.write('r1', { kind: 'put', key: 'a', value: bytes('1') });
    net.deliver();
    assert.deepEqual(net.result(w), { applied: true, version: 1, seq: 1 });
    // Raised back (a second peer joined): writes wait for a second in-sync replica again.
    net.core('r1').setMinInSync(net.nowMs, 2);
    assertThrowsNamed(() => net.write('r1', { kind: 'put', key: 'b', value: bytes('2') }), 'NotEnoughReplicasError');
  });

  it('a slow backup: shrink request, writes wait for the new assignment, then commit without it', () => {
    const net = threeReplicas();
    const w = net.write('r1', { kind: 'put', key: 'a', value: bytes('1') });
    const dropR3 = (m: ReplicationMessage): boolean => m.to !== 'r3' && m.from !== 'r3';
    net.deliver(dropR3);
    for (let k = 0; k < 6; k++) {
      net.tick(20);
      net.deliver(dropR3);
    }
    assert.equal(net.answers.has(w), false, 'waits for r3 or the coordinator');
    const shrink = net.requests.filter((r) => r.kind === 'shrink-in-sync');
    assert.ok(shrink.length >= 1);
    assert.deepEqual(shrink[0], { kind: 'shrink-in-sync', shard: SHARD, from: 'r1', replica: 'r3', epoch: 1 });
    net.tick(20);
    net.deliver(dropR3);
    assert.equal(net.answers.has(w), false, 'still waits: the coordinator has not answered');
    net.assign({ replicas: ALL, primary: 'r1', inSync: ['r1', 'r2'], epoch: 2 }, ['r1', 'r2']);
    net.deliver(dropR3);
    assert.deepEqual(net.result(w), { applied: true, version: 1, seq: 1 });
  });

  it('refuses writes with NotEnoughReplicasError while the in-sync set is below minInSync', () => {
    const net = new Net(ALL);
    net.assign({ replicas: ALL, primary: 'r1', inSync: ['r1'], epoch: 4 });
    net.lease('r1');
    const err = assertThrowsNamed(() => net.write('r1', { kind: 'put', key: 'a', value: bytes('1') }), 'NotEnoughReplicasError');
    assert.equal((err as Error & { minInSync: number }).minInSync, 2);
  });

  it('refuses writes and strong reads with NotPrimaryError without a lease, and at a backup (with a hint)', () => {
    const net = new Net(ALL);
    net.assign(epoch1);
    net.deliver();
    const e1 = assertThrowsNamed(() => net.write('r1', { kind: 'put', key: 'a', value: bytes('1') }), 'NotPrimaryError');
    assert.equal((e1 as Error & { reason: string }).reason, 'no-lease');
    assertThrowsNamed(() => net.core('r1').read(net.nowMs, 'a', 'strong'), 'NotPrimaryError');
    net.lease('r1', net.nowMs + 50);
    net.core('r1').read(net.nowMs, 'a', 'strong');
    net.nowMs += 50;
    assertThrowsNamed(() => net.core('r1').read(net.nowMs, 'a', 'strong'), 'NotPrimaryError');
    const e2 = assertThrowsNamed(() => net.write('r2', { kind: 'put', key: 'a', value: bytes('1') }), 'NotPrimaryError');
    assert.equal((e2 as Error & { primary: string }).primary, 'r1');
    net.core('r2').read(net.nowMs, 'a', 'any'); // in-sync: allowed
  });

  it('cas: 0 means absent (never written or deleted), a mismatch reports the current version', () => {
    const net = threeReplicas();
    const run = (op: WriteOp) => {
      const id = net.write('r1', op);
      net.deliver();
      return net.result(id);
    };
    assert.deepEqual(run({ kind: 'cas', key: 'k', expectVersion: 0, value: bytes('a') }), { applied: true, version: 1, seq: 1 });
    assert.deepEqual(run({ kind: 'cas', key: 'k', expectVersion: 0, value: bytes('b') }), {
      applied: false,
      current: { version: 1, present: true },
    });
    assert.deepEqual(run({ kind: 'cas', key: 'k', expectVersion: 1, value: bytes('c') }), { applied: true, version: 2, seq: 2 });
    assert.deepEqual(run({ kind: 'delete', key: 'k' }), { applied: true, version: 3, seq: 3 });
    net.tick(25);
    net.deliver();
    assert.deepEqual(net.shell('r2').durable.data.get('k'), { version: 3, present: false, value: null }, 'a tombstone keeps the version');
    assert.deepEqual(run({ kind: 'cas', key: 'k', expectVersion: 2, value: bytes('d') }), {
      applied: false,
      current: { version: 3, present: false },
    });
    assert.deepEqual(run({ kind: 'cas', key: 'k', expectVersion: 0, value: bytes('e') }), { applied: true, version: 4, seq: 4 });
    assert.deepEqual(run({ kind: 'delete', key: 'never' }), { applied: true, version: 1, seq: 5 });
    assert.equal(casMatches(0, { version: 0, present: false }), true);
    assert.equal(casMatches(3, { version: 3, present: false }), true);
    assert.equal(casMatches(0, { version: 3, present: true }), false);
  });

  it('a cas in the same batch sees the versions of the writes before it', () => {
    const net = threeReplicas({ maxGroupsInFlight: 1 });
    net.write('r1', { kind: 'put', key: 'x', value: bytes('0') }); // group 1, in flight
    const a = net.write('r1', { kind: 'put', key: 'k', value: bytes('1') });
    const b = net.write('r1', { kind: 'cas', key: 'k', expectVersion: 1, value: bytes('2') });
    const c = net.write('r1', { kind: 'cas', key: 'k', expectVersion: 1, value: bytes('3') });
    net.deliver();
    assert.deepEqual(net.result(a), { applied: true, version: 1, seq: 2 });
    assert.deepEqual(net.result(b), { applied: true, version: 2, seq: 2 });
    assert.deepEqual(net.result(c), { applied: false, current: { version: 2, present: true } });
  });

  it('corrects a version read that lagged behind an apply, and refuses one older than the history', () => {
    const net = threeReplicas({ versionHistoryGroups: 2 });
    for (let k = 1; k <= 5; k++) {
      net.write('r1', { kind: 'put', key: 'k', value: bytes(String(k)) });
      net.deliver();
    }
    assert.equal(net.shell('r1').durable.data.get('k')?.version, 5);
    // Read at seq 4 (version 4): the overlay knows group 5 set version 5.
    const ok = net.write('r1', { kind: 'cas', key: 'k', expectVersion: 5, value: bytes('6') }, 1);
    net.deliver();
    assert.deepEqual(net.result(ok), { applied: true, version: 6, seq: 6 });
    assertThrowsNamed(() => net.write('r1', { kind: 'put', key: 'k', value: bytes('x') }, 5), 'StaleVersionError');
  });

  it('a new primary reconciles: a backup truncates the unacknowledged tail and fills what it misses', () => {
    const net = threeReplicas();
    const w1 = net.write('r1', { kind: 'put', key: 'a', value: bytes('1') });
    net.deliver();
    assert.equal(net.result(w1).applied, true);
    const w2 = net.write('r1', { kind: 'put', key: 'a', value: bytes('2') });
    net.deliver((m) => m.to === 'r3'); // only r3 gets group 2; no acks reach r1
    assert.deepEqual(net.logOf('r3'), [[1, 1, 1], [2, 1, 1]]);
    assert.equal(net.answers.has(w2), false);
    net.shell('r1').crash();
    net.queue = [];
    // The coordinator promotes r2 (say its report was the freshest it had) and drops r1.
    const epoch2: ShardAssignment = { replicas: ALL, primary: 'r2', inSync: ['r2', 'r3'], epoch: 2 };
    net.assign(epoch2);
    net.lease('r2');
    assertThrowsNamed(() => net.write('r2', { kind: 'put', key: 'b', value: bytes('x') }), 'NotPrimaryError'); // reconciling
    net.deliver();
    assert.deepEqual(net.logOf('r3'), [[1, 1, 1]], 'the unacknowledged group 2 of epoch 1 is gone');
    assert.equal(net.shell('r3').durable.data.get('a')?.version, 1);
    assert.equal(net.core('r2').status(net.nowMs).reconciled, true);
    const w3 = net.write('r2', { kind: 'put', key: 'a', value: bytes('3') });
    net.deliver();
    assert.deepEqual(net.result(w3), { applied: true, version: 2, seq: 2 });
    assert.deepEqual(net.logOf('r3'), [[1, 1, 1], [2, 2, 1]]);
    net.tick(25);
    net.deliver();
    assert.equal(net.shell('r3').durable.data.get('a')?.version, 2);
  });

  it('a lagging replica catches up and is proposed for the in-sync set', () => {
    const net = new Net(ALL);
    const a: ShardAssignment = { replicas: ALL, primary: 'r1', inSync: ['r1', 'r2'], epoch: 1 };
    net.assign(a, ['r1', 'r2']);
    net.lease('r1');
    net.deliver((m) => m.to !== 'r3');
    for (let k = 0; k < 5; k++) {
      net.write('r1', { kind: 'put', key: `k${k}`, value: bytes('v') });
      net.deliver((m) => m.to !== 'r3');
    }
    assert.equal(net.requests.length, 0);
    net.assign(a, ['r3']); // r3 learns it is a catching-up replica
    net.tick(200); // it asks for catch-up
    net.deliver();
    net.tick(10);
    net.deliver();
    assert.deepEqual(net.logOf('r3'), net.logOf('r1'));
    assert.deepEqual(net.requests, [{ kind: 'expand-in-sync', shard: SHARD, from: 'r1', replica: 'r3', epoch: 1 }]);
    net.assign({ ...a, inSync: ALL, epoch: 2 });
    net.deliver();
    assert.deepEqual(net.core('r3').status(net.nowMs).inSync, ALL);
  });

  it('a replica behind the trimmed log gets a snapshot request, installs it, and catches up', () => {
    const net = new Net(ALL, { logRetainGroups: 1 });
    const a: ShardAssignment = { replicas: ALL, primary: 'r1', inSync: ['r1', 'r2'], epoch: 1 };
    net.assign(a);
    net.lease('r1');
    net.deliver((m) => m.to !== 'r3' && m.from !== 'r3');
    for (let k = 0; k < 6; k++) {
      net.write('r1', { kind: 'put', key: `k${k % 2}`, value: bytes(String(k)) });
      net.deliver((m) => m.to !== 'r3' && m.from !== 'r3');
    }
    assert.ok(net.core('r1').status(net.nowMs).trimSeq >= 4);
    net.tick(200);
    net.deliver();
    const offer = net.snapshots.find((s) => s.to === 'r3');
    assert.ok(offer !== undefined, 'r1 asks its shell to send r3 a snapshot');
    const snap = net.shell('r1').takeSnapshot(offer.epoch);
    assert.equal(net.shell('r3').installSnapshot(net.nowMs, snap.meta, snap.data), true);
    net.flush('r3');
    net.deliver();
    assert.equal(net.shell('r3').durable.data.get('k1')?.version, 3);
    assert.ok(net.requests.some((r) => r.kind === 'expand-in-sync' && r.replica === 'r3'));
  });

  it('a new primary proposes a replica only once it holds the whole reconciliation tail', () => {
    const net = new Net(ALL);
    net.assign({ replicas: ALL, primary: 'r1', inSync: ['r1', 'r2'], epoch: 1 });
    net.lease('r1');
    net.deliver((m) => m.to !== 'r3');
    net.write('r1', { kind: 'put', key: 'a', value: bytes('1') });
    net.deliver((m) => m.to !== 'r3'); // committed on r1, r2; r3 misses it
    net.write('r1', { kind: 'put', key: 'a', value: bytes('2') });
    net.deliver((m) => m.to === 'r2'); // group 2 on r2 only
    net.shell('r1').crash();
    net.queue = [];
    const e2: ShardAssignment = { replicas: ALL, primary: 'r2', inSync: ['r2'], epoch: 2 };
    net.assign(e2);
    net.lease('r2');
    // r3 acknowledges a probe matching at seq 0 only: it must not be proposed yet.
    net.deliver((m) => !(m.type === 'append' && m.to === 'r3' && m.groups.length > 0));
    net.tick(10);
    net.deliver((m) => !(m.type === 'append' && m.to === 'r3' && m.groups.length > 0));
    assert.equal(net.requests.filter((r) => r.kind === 'expand-in-sync').length, 0);
    net.tick(30);
    net.deliver();
    net.tick(10);
    assert.deepEqual(net.logOf('r3'), [[1, 1, 1], [2, 1, 1]]);
    assert.ok(net.requests.some((r) => r.kind === 'expand-in-sync' && r.replica === 'r3' && r.epoch === 2));
  });

  it('a primary restarted within its lease sequences nothing at that epoch until the coordinator renews it', () => {
    const net = new Net(ALL);
    const a: ShardAssignment = { replicas: ALL, primary: 'r1', inSync: ['r1', 'r2'], epoch: 1 };
    net.assign(a);
    net.lease('r1');
    net.deliver();
    net.tick(200);
    net.deliver();
    net.tick(10);
    assert.ok(net.requests.some((r) => r.kind === 'expand-in-sync' && r.replica === 'r3'));
    assert.deepEqual(net.shell('r1').durable.expanding, ['r3']);
    net.shell('r1').crash();
    net.shell('r1').start(net.nowMs);
    net.lease('r1');
    net.deliver();
    // It may have sent groups at epoch 1 that it never persisted: no new group at epoch 1.
    const err = assertThrowsNamed(() => net.write('r1', { kind: 'put', key: 'a', value: bytes('0') }), 'NotPrimaryError') as Error & { reason: string };
    assert.equal(err.reason, 'restarted');
    assert.throws(() => net.shell('r1').core!.read(net.nowMs, 'a', 'strong'), (e: Error & { reason?: string }) => e.reason === 'restarted');
    net.requests.length = 0;
    net.tick(10);
    assert.deepEqual(
      net.requests.filter((r) => r.kind === 'renew-epoch'),
      [{ kind: 'renew-epoch', shard: SHARD, from: 'r1', replica: 'r1', epoch: 1 }],
    );
    // The coordinator applies both of its requests at once: epoch 2 with r3 in sync.
    net.assign({ ...a, inSync: ALL, epoch: 2 });
    net.lease('r1');
    net.deliver();
    const w = net.write('r1', { kind: 'put', key: 'a', value: bytes('1') });
    net.deliver((m) => m.to !== 'r3');
    assert.equal(net.answers.has(w), false, 'r3 is in sync at epoch 2: wait for it');
    net.tick(45); // the group lost on the way to r3 is sent again after retransmitTimeoutMs
    net.deliver();
    assert.equal(net.result(w).applied, true);
    assert.equal(net.shell('r1').durable.appliedEpoch, 2, 'the new group is of the fresh epoch');
  });

  it('pipelined: a group the primary sent but never persisted is dropped at its fresh epoch after a restart, never acknowledged', () => {
    const net = new Net(ALL);
    const a: ShardAssignment = { replicas: ALL, primary: 'r1', inSync: ALL, epoch: 1 };
    net.assign(a);
    net.lease('r1');
    net.deliver();
    net.tick(20);
    net.deliver();
    const r1 = net.shell('r1');
    r1.sendEarly = true;
    r1.answerEarly = true;
    r1.ioDelayMs = 50; // r1's own writes take 50 ms: its appends leave before its persist completes
    const lost = net.write('r1', { kind: 'put', key: 'a', value: bytes('never acknowledged') });
    assert.equal(r1.durable.log.length, 0, 'r1 has not persisted group 1 yet');
    net.deliver();
    for (const id of ['r2', 'r3']) assert.deepEqual(net.logOf(id), [[1, 1, 1]], `${id} persisted group 1 before r1 did`);
    assert.equal(net.answers.has(lost), false, 'not committed: r1 has not persisted it');
    // r1 crashes before its write completes, and is back at once, still primary at epoch 1.
    r1.crash();
    r1.ioDelayMs = 0;
    r1.start(net.nowMs);
    net.lease('r1');
    assert.deepEqual(net.logOf('r1'), []);
    assert.throws(() => net.write('r1', { kind: 'put', key: 'a', value: bytes('x') }), (e: Error & { reason?: string }) => e.reason === 'restarted');
    net.tick(10);
    assert.ok(net.requests.some((r) => r.kind === 'renew-epoch' && r.epoch === 1));
    net.assign({ ...a, epoch: 2 });
    net.lease('r1');
    net.deliver();
    const w = net.write('r1', { kind: 'put', key: 'a', value: bytes('the real group 1') });
    net.deliver();
    net.tick(20);
    net.deliver();
    assert.deepEqual(net.result(w), { applied: true, version: 1, seq: 1 });
    for (const id of ALL) {
      assert.deepEqual(net.logOf(id).filter(([seq]) => seq === 1), [[1, 2, 1]], `${id}: group 1 is epoch 2's`);
      assert.equal(new TextDecoder().decode(net.shell(id).durable.data.get('a')?.value ?? new Uint8Array()), 'the real group 1', id);
    }
  });

  it('pipelined: an append never overtakes one that waits in a Ready for the persist', () => {
    const net = new Net(ALL, { maxGroupsInFlight: 4 });
    net.assign({ replicas: ALL, primary: 'r1', inSync: ALL, epoch: 1 });
    net.lease('r1');
    net.deliver();
    net.tick(20);
    net.deliver();
    // A shell that does not take early appends: they go in the next Ready, sent after its persist.
    net.shell('r1').ioDelayMs = 50;
    const w1 = net.write('r1', { kind: 'put', key: 'a', value: bytes('1') });
    assert.equal(net.queue.length, 0, 'group 1 waits for the persist of its Ready');
    const w2 = net.write('r1', { kind: 'put', key: 'b', value: bytes('2') });
    assert.deepEqual(net.core('r1').takeEarlyMessages(), [], 'group 2 may not leave before group 1');
    for (let k = 0; k < 6; k++) {
      net.tick(50);
      net.deliver();
    }
    assert.deepEqual(net.result(w1), { applied: true, version: 1, seq: 1 });
    assert.deepEqual(net.result(w2), { applied: true, version: 1, seq: 2 });
    for (const id of ['r2', 'r3']) assert.deepEqual(net.logOf(id), [[1, 1, 1], [2, 1, 1]], id);
  });

  it('answers at commit, before the apply; a strong read meanwhile sees the committed write', () => {
    const net = new Net(ALL);
    net.assign({ replicas: ALL, primary: 'r1', inSync: ALL, epoch: 1 });
    net.lease('r1');
    net.deliver();
    net.tick(20);
    net.deliver();
    const r1 = net.shell('r1');
    r1.sendEarly = true;
    r1.answerEarly = true;
    const first = net.write('r1', { kind: 'put', key: 'k', value: bytes('v1') });
    net.deliver();
    assert.equal(net.result(first).applied, true);
    r1.ioDelayMs = 50; // from now on each of r1's storage writes takes 50 ms
    const w = net.write('r1', { kind: 'put', key: 'k', value: bytes('v2') });
    net.deliver(); // both backups persist group 2 and acknowledge; r1's own write still runs
    assert.equal(net.answers.has(w), false, 'not committed before r1 persisted it');
    net.tick(50); // r1's log write completes: committed; the apply is the next 50 ms write
    net.deliver();
    assert.equal(net.result(w).applied, true, 'answered at commit');
    assert.equal(new TextDecoder().decode(r1.durable.data.get('k')!.value!), 'v1', 'not applied at r1 yet');
    const read = r1.strongRead(net.nowMs, 'k');
    assert.equal(read.fromLog, true);
    assert.equal(new TextDecoder().decode(read.value.value!), 'v2');
    assert.equal(read.value.version, 2);
  });

  it('validates its configuration with ConfigError naming the field', () => {
    const err = assertThrowsNamed(() => resolveReplicationConfig({ maxGroupsInFlight: 0 }), 'ConfigError');
    assert.equal((err as Error & { field: string }).field, 'maxGroupsInFlight');
    assert.equal((assertThrowsNamed(() => resolveReplicationConfig({ heartbeatIntervalMs: 900 }), 'ConfigError') as Error & { field: string }).field, 'heartbeatIntervalMs');
    assert.equal((assertThrowsNamed(() => resolveReplicationConfig({ retransmitTimeoutMs: 500 }), 'ConfigError') as Error & { field: string }).field, 'retransmitTimeoutMs');
    assert.equal((assertThrowsNamed(() => resolveReplicationConfig({ maxInflightBytes: 0 }), 'ConfigError') as Error & { field: string }).field, 'maxInflightBytes');
    assert.equal((assertThrowsNamed(() => resolveReplicationConfig({ slowAckTimeoutMs: 100 }), 'ConfigError') as Error & { field: string }).field, 'slowAckTimeoutMs');
  });
});

describe('replication codec', () => {
  const append: AppendMessage = {
    type: 'append',
    shard: 1,
    epoch: 3,
    from: 'r1',
    to: 'r2',
    epochStartSeq: 4,
    prevSeq: 4,
    prevEpoch: 2,
    groups: [
      { seq: 5, epoch: 3, ops: [{ kind: 'put', key: 'k', value: bytes('v'), version: 2 }, { kind: 'delete', key: 'j', version: 7 }] },
    ],
    commitSeq: 4,
  };

  it('round-trips every message type', () => {
    const messages: ReplicationMessage[] = [
      append,
      { type: 'append-ack', shard: 1, epoch: 3, from: 'r2', to: 'r1', matchSeq: 5, commitSeq: 4 },
      { type: 'catch-up', shard: 1, epoch: 3, from: 'r2', to: 'r1', afterSeq: 0 },
      { type: 'snapshot', shard: 1, epoch: 3, from: 'r1', to: 'r2', seq: 9, seqEpoch: 2 },
    ];
    for (const m of messages) {
      const back = decodeReplicationMessage(encodeReplicationMessage(m));
      assert.deepEqual(JSON.parse(JSON.stringify(back, (_k, v) => (v instanceof Uint8Array ? [...v] : v))), JSON.parse(JSON.stringify(m, (_k, v) => (v instanceof Uint8Array ? [...v] : v))));
    }
  });

  /** [u32 header length][header JSON][payload] (see codec.ts). */
  const wire = (header: unknown, payload: Uint8Array = new Uint8Array(0)): Uint8Array => {
    const h = new TextEncoder().encode(JSON.stringify(header));
    const out = new Uint8Array(4 + h.length + payload.length);
    new DataView(out.buffer).setUint32(0, h.length);
    out.set(h, 4);
    out.set(payload, 4 + h.length);
    return out;
  };
  const split = (bytes: Uint8Array): { header: Record<string, any>; payload: Uint8Array } => {
    const n = new DataView(bytes.buffer, bytes.byteOffset).getUint32(0);
    return { header: JSON.parse(new TextDecoder().decode(bytes.subarray(4, 4 + n))), payload: bytes.subarray(4 + n) };
  };
  const mutate = (f: (o: Record<string, any>) => void, payload?: Uint8Array): Uint8Array => {
    const parts = split(encodeReplicationMessage(append));
    f(parts.header);
    return wire(parts.header, payload ?? parts.payload);
  };

  it('carries values as raw bytes after a small header, not as base64 in JSON', () => {
    const big = new Uint8Array(100_000).map((_, i) => i % 256);
    const m: AppendMessage = { ...append, groups: [{ seq: 5, epoch: 3, ops: [{ kind: 'put', key: 'k', value: big, version: 2 }] }] };
    const bytes = encodeReplicationMessage(m);
    assert.ok(bytes.length < 100_000 + 400, `${bytes.length} bytes: the value is not inflated`);
    const { header, payload } = split(bytes);
    assert.equal(header.v, 2);
    assert.equal(header.groups[0].ops[0].len, 100_000);
    assert.equal(Buffer.compare(payload, big), 0);
    const back = decodeReplicationMessage(bytes) as AppendMessage;
    const value = (back.groups[0]!.ops[0] as { value: Uint8Array }).value;
    assert.equal(Buffer.compare(value, big), 0);
    assert.notEqual(value.buffer, bytes.buffer, 'a decoded value is a copy: it does not pin the frame');
  });

  const garbage: Array<[string, Uint8Array, string]> = [
    ['shorter than a header length', new Uint8Array([0, 0]), 'message'],
    ['a header past the end', bytes('{nope'), 'message'],
    ['a header that is not JSON', wire('x').map((b, i) => (i === 4 ? 0x7b : b)), 'message'],
    ['a header that is not UTF-8', (() => { const w = wire('ab'); w[5] = 0xff; return w; })(), 'message'],
    ['an array', wire([]), 'message'],
    ['version 1 (base64 values)', mutate((o) => (o.v = 1)), 'message.v'],
    ['unknown type', mutate((o) => (o.type = 'vote')), 'message.type'],
    ['negative shard', mutate((o) => (o.shard = -1)), 'message(append).shard'],
    ['fractional epoch', mutate((o) => (o.epoch = 1.5)), 'message(append).epoch'],
    ['empty sender', mutate((o) => (o.from = '')), 'message(append).from'],
    ['to self', mutate((o) => (o.to = 'r1')), 'message(append).to'],
    ['groups not an array', mutate((o) => (o.groups = {})), 'message(append).groups'],
    ['gap in groups', mutate((o) => (o.groups[0].seq = 7)), 'message(append).groups[0].seq'],
    ['group from the future', mutate((o) => (o.groups[0].epoch = 4)), 'message(append).groups[0].epoch'],
    ['group epoch below prevEpoch', mutate((o) => (o.groups[0].epoch = 1)), 'message(append).groups[0].epoch'],
    ['unknown op', mutate((o) => (o.groups[0].ops[0].kind = 'cas')), 'message(append).groups[0].ops[0].kind'],
    ['version 0', mutate((o) => (o.groups[0].ops[0].version = 0)), 'message(append).groups[0].ops[0].version'],
    ['key too long', mutate((o) => (o.groups[0].ops[0].key = 'x'.repeat(1025))), 'message(append).groups[0].ops[0].key'],
    ['multi-byte key too long', mutate((o) => (o.groups[0].ops[0].key = 'é'.repeat(513))), 'message(append).groups[0].ops[0].key'],
    ['key with a lone surrogate', mutate((o) => (o.groups[0].ops[0].key = 'a\ud800b')), 'message(append).groups[0].ops[0].key'],
    ['value length missing', mutate((o) => delete o.groups[0].ops[0].len), 'message(append).groups[0].ops[0].len'],
    ['value length past the payload', mutate((o) => (o.groups[0].ops[0].len = 2)), 'message(append).groups[0].ops[0].len'],
    ['value too large', mutate((o) => (o.groups[0].ops[0].len = 1024 * 1024 + 1), new Uint8Array(1024 * 1024 + 1)), 'message(append).groups[0].ops[0].len'],
    ['payload bytes no op claims', mutate(() => {}, bytes('vv')), 'message(append)'],
    ['a payload on an ack', wire({ v: 2, type: 'append-ack', shard: 1, epoch: 1, from: 'a', to: 'b', matchSeq: 1, commitSeq: 0 }, bytes('x')), 'message(append-ack)'],
    ['too many ops', mutate((o) => (o.groups[0].ops = Array.from({ length: 1025 }, () => o.groups[0].ops[1]))), 'message(append).groups[0].ops'],
    ['missing commitSeq', mutate((o) => delete o.commitSeq), 'message(append).commitSeq'],
    ['epochStartSeq after an own-epoch group', mutate((o) => (o.epochStartSeq = 5)), 'message(append).groups[0].epoch'],
    ['ack without matchSeq', wire({ v: 2, type: 'append-ack', shard: 1, epoch: 1, from: 'a', to: 'b' }), 'message(append-ack).matchSeq'],
    ['ack without commitSeq', wire({ v: 2, type: 'append-ack', shard: 1, epoch: 1, from: 'a', to: 'b', matchSeq: 1 }), 'message(append-ack).commitSeq'],
  ];

  for (const [what, input, path] of garbage) {
    it(`rejects ${what} naming ${path}`, () => {
      const err = assertThrowsNamed(() => decodeReplicationMessage(input), 'InvalidMessageError');
      assert.ok(err.message.startsWith(`${path}:`), err.message);
    });
  }

  it('rejects messages over the size limit', () => {
    assertThrowsNamed(() => decodeReplicationMessage(encodeReplicationMessage(append), { maxMessageBytes: 10 }), 'InvalidMessageError');
  });
});
