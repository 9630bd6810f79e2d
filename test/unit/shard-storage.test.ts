/**
 * The ShardStore contract (storage/shard-store.ts), run on the memory store and on the disk store.
 * "Reopen" opens a new ShardStore over the same data: for disk the KvStore is closed and opened
 * again; for memory the same KvStore is kept (the in-memory index is still rebuilt from it).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ShardAssignment } from '../../protocols/cluster-map/types.js';
import {
  ReplicaCore,
  type LogGroup,
  type LoggedOp,
  type ReplicationConfig,
  type WriteAnswer,
  type WriteOp,
} from '../../protocols/replication/index.js';
import type { KvStore } from '../../storage/kv-store.js';
import { openDiskStore, openMemoryStore } from '../../storage/level-store.js';
import { shardKeys, ShardStore, type ShardEntry } from '../../storage/shard-store.js';

const SHARD = 5;
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const put = (key: string, value: string | Uint8Array, version: number): LoggedOp => ({
  kind: 'put',
  key,
  value: typeof value === 'string' ? enc(value) : value,
  version,
});
const del = (key: string, version: number): LoggedOp => ({ kind: 'delete', key, version });
const group = (seq: number, epoch: number, ops: LoggedOp[] = [put(`k${seq}`, `v${seq}`, 1)]): LogGroup => ({ seq, epoch, ops });
const groups = (from: number, to: number, epoch: number): LogGroup[] => Array.from({ length: to - from + 1 }, (_, k) => group(from + k, epoch));
const empty = { appendLog: [] as LogGroup[], apply: [] as LogGroup[] };
const NO_SYNC = { sync: false };

interface Harness {
  open(): Promise<KvStore>;
  /** The same data, reopened (disk: close and open the KvStore; memory: the same KvStore). */
  reopen(kv: KvStore): Promise<KvStore>;
  cleanup(): Promise<void>;
}

/** Rejects with an error of this name and, for InvalidShardInputError / StorageError, this field / code. */
async function rejectsWith(p: Promise<unknown> | (() => unknown), name: string, detail?: { field?: string; code?: string }): Promise<void> {
  await assert.rejects(
    async () => (typeof p === 'function' ? p() : p),
    (e: unknown) => {
      const err = e as { name?: string; field?: string; code?: string };
      assert.equal(err.name, name, String(e));
      if (detail?.field !== undefined) assert.equal(err.field, detail.field);
      if (detail?.code !== undefined) assert.equal(err.code, detail.code);
      return true;
    },
  );
}

async function collect(store: ShardStore, shard: number): Promise<{ seq: number; epoch: number; entries: ShardEntry[] }> {
  const snap = await store.snapshotData(shard);
  const entries: ShardEntry[] = [];
  for await (const batch of snap.batches) entries.push(...batch);
  return { seq: snap.seq, epoch: snap.epoch, entries };
}

/** A single-replica shard (replicas [r1], inSync [r1], minInSync 1) driven through the store. */
class Driver {
  core: ReplicaCore;
  nowMs = 1000;
  readonly answers = new Map<number, WriteAnswer>();
  private nextId = 1;
  static readonly assignment: ShardAssignment = { replicas: ['r1'], primary: 'r1', inSync: ['r1'], epoch: 1 };
  static readonly config: Partial<ReplicationConfig> = { minInSync: 1, logRetainGroups: 2 };

  constructor(
    public store: ShardStore,
    recovered?: Awaited<ReturnType<ShardStore['recover']>>,
  ) {
    this.core = new ReplicaCore({ shard: SHARD, id: 'r1', config: Driver.config, ...(recovered === undefined ? {} : { recovered }) });
  }

  async start(epoch = 1): Promise<void> {
    this.core.setAssignment(this.nowMs, { ...Driver.assignment, epoch });
    this.core.setLease(this.nowMs, this.nowMs + 60_000);
    await this.pump();
  }

  /** Persists each Ready in one batch, then advances, until the core is quiet. */
  async pump(): Promise<void> {
    for (let round = 0; this.core.hasReady(); round++) {
      assert.ok(round < 100, 'Ready loop settles');
      const rd = this.core.ready();
      await this.store.persistReady(SHARD, rd, { sync: true });
      for (const a of rd.answers) this.answers.set(a.requestId, a);
      this.core.advance(this.nowMs, rd);
    }
  }

  /** Reads the durable version from the store and hands the write to the core (no pump). */
  async submit(op: WriteOp): Promise<number> {
    const requestId = this.nextId++;
    const r = await this.store.readValue(SHARD, op.key);
    this.core.write(this.nowMs, { requestId, op, durable: { version: r.version, present: r.present }, durableAtSeq: r.durableAtSeq });
    return requestId;
  }

  async tick(ms = 10): Promise<void> {
    this.nowMs += ms;
    this.core.tick(this.nowMs);
    await this.pump();
  }

  result(requestId: number) {
    const a = this.answers.get(requestId);
    assert.ok(a !== undefined && a.ok, `request ${requestId} succeeded`);
    return a.result;
  }
}

function shardStorageContract(name: string, make: () => Promise<Harness>): void {
  describe(`ShardStore contract: ${name}`, () => {
    let h: Harness;
    let kv: KvStore;
    let store: ShardStore;
    beforeEach(async () => {
      h = await make();
      kv = await h.open();
      store = await ShardStore.open(kv.sublevel('shards'));
    });
    afterEach(async () => {
      await kv.close().catch(() => {});
      await h.cleanup();
    });

    async function reopen(): Promise<ShardStore> {
      kv = await h.reopen(kv);
      store = await ShardStore.open(kv.sublevel('shards'));
      return store;
    }

    it('an empty shard recovers as a brand-new replica and reads as absent', async () => {
      assert.deepEqual(await store.recover(SHARD), { epoch: 0, expanding: [], appliedSeq: 0, appliedEpoch: 0, log: [] });
      assert.deepEqual(await store.readValue(SHARD, 'k'), { value: null, version: 0, present: false, durableAtSeq: 0 });
      assert.deepEqual(store.shards(), []);
      assert.deepEqual(store.logBounds(SHARD), { firstSeq: 1, lastSeq: 0 });
    });

    it('drives a real ReplicaCore, then recovers a new core with the same state and data', async () => {
      const d = new Driver(store);
      await d.start();
      const w1 = await d.submit({ kind: 'put', key: 'a', value: enc('A1') });
      await d.pump();
      assert.deepEqual(d.result(w1), { applied: true, version: 1, seq: 1 });
      // Nothing is in flight: the first write seals group 2 at once, the next three batch into group 3.
      const w2 = await d.submit({ kind: 'put', key: 'b', value: enc('B1') });
      const w3 = await d.submit({ kind: 'delete', key: 'a' });
      const w4 = await d.submit({ kind: 'cas', key: 'b', expectVersion: 1, value: enc('B2') });
      const w5 = await d.submit({ kind: 'cas', key: 'b', expectVersion: 7, value: enc('nope') });
      await d.pump();
      assert.deepEqual(d.result(w2), { applied: true, version: 1, seq: 2 });
      assert.deepEqual(d.result(w3), { applied: true, version: 2, seq: 3 });
      assert.deepEqual(d.result(w4), { applied: true, version: 2, seq: 3 });
      assert.deepEqual(d.result(w5), { applied: false, current: { version: 2, present: true } });
      for (let k = 0; k < 5; k++) {
        await d.submit({ kind: 'put', key: `c${k}`, value: enc(`C${k}`) });
        await d.tick();
      }
      const w6 = await d.submit({ kind: 'put', key: 'a', value: enc('A3') });
      await d.tick();
      assert.deepEqual(d.result(w6), { applied: true, version: 3, seq: 9 });

      const status = d.core.status(d.nowMs);
      assert.equal(status.appliedSeq, 9);
      assert.ok(status.trimSeq > 0, 'the core trimmed its log');
      assert.equal(store.appliedSeq(SHARD), 9);
      assert.deepEqual(store.logBounds(SHARD), { firstSeq: status.trimSeq + 1, lastSeq: 9 });

      await reopen();
      const recovered = await store.recover(SHARD);
      assert.equal(recovered.epoch, 1);
      assert.deepEqual(recovered.expanding, []);
      assert.equal(recovered.appliedSeq, 9);
      assert.equal(recovered.appliedEpoch, 1);
      assert.deepEqual(recovered.log, d.core.logGroups());
      assert.deepEqual(await store.readValue(SHARD, 'a'), { value: enc('A3'), version: 3, present: true, durableAtSeq: 9 });
      assert.deepEqual(await store.readValue(SHARD, 'b'), { value: enc('B2'), version: 2, present: true, durableAtSeq: 9 });
      assert.deepEqual(await store.readValue(SHARD, 'c4'), { value: enc('C4'), version: 1, present: true, durableAtSeq: 9 });

      // A new core from the store carries on where the old one stopped.
      const d2 = new Driver(store, recovered);
      const s2 = d2.core.status(d2.nowMs);
      assert.equal(s2.lastSeq, 9);
      assert.equal(s2.appliedSeq, 9);
      assert.equal(s2.epoch, 1);
      // A restarted primary does not sequence at the epoch it recovered (it may have sent groups
      // it never persisted); the coordinator gives it a fresh one.
      await d2.start(1);
      await assert.rejects(d2.submit({ kind: 'delete', key: 'a' }), (e: Error & { reason?: string }) => e.name === 'NotPrimaryError' && e.reason === 'restarted');
      await d2.start(2);
      const w7 = await d2.submit({ kind: 'delete', key: 'a' });
      const w8 = await d2.submit({ kind: 'put', key: 'b', value: enc('B3') });
      await d2.pump();
      assert.deepEqual(d2.result(w7), { applied: true, version: 4, seq: 10 });
      assert.deepEqual(d2.result(w8), { applied: true, version: 3, seq: 11 });
      assert.deepEqual(await store.readValue(SHARD, 'a'), { value: null, version: 4, present: false, durableAtSeq: 11 });
    });

    it('a snapshot of a driven primary installs on a backup core and its store', async () => {
      const d = new Driver(store);
      await d.start();
      for (let k = 0; k < 6; k++) {
        await d.submit({ kind: 'put', key: `k${k % 3}`, value: enc(`v${k}`) });
        await d.tick();
      }
      await d.submit({ kind: 'delete', key: 'k0' });
      await d.tick();
      const source = await collect(store, SHARD);
      assert.equal(source.seq, 7);
      assert.equal(source.epoch, 1);

      const backupKv = await openMemoryStore();
      try {
        const backupStore = await ShardStore.open(backupKv);
        const backup = new ReplicaCore({ shard: SHARD, id: 'r2', config: { minInSync: 1 } });
        backup.setAssignment(d.nowMs, { replicas: ['r1', 'r2'], primary: 'r1', inSync: ['r1'], epoch: 1 });
        const rd0 = backup.ready();
        await backupStore.persistReady(SHARD, rd0, NO_SYNC);
        backup.advance(d.nowMs, rd0);
        const reader = await store.snapshotData(SHARD);
        assert.equal(backup.installSnapshot(d.nowMs, { shard: SHARD, epoch: 1, from: 'r1', seq: reader.seq, seqEpoch: reader.epoch }), true);
        await backupStore.installSnapshot(SHARD, reader.batches, { seq: reader.seq, epoch: reader.epoch }, { sync: true });
        assert.deepEqual(await collect(backupStore, SHARD), source);
        const recovered = await backupStore.recover(SHARD);
        assert.deepEqual(recovered, { epoch: 1, expanding: [], appliedSeq: 7, appliedEpoch: 1, log: [] });
        const again = new ReplicaCore({ shard: SHARD, id: 'r2', config: { minInSync: 1 }, recovered });
        assert.equal(again.status(0).lastSeq, 7);
        assert.deepEqual(await backupStore.readValue(SHARD, 'k0'), { value: null, version: 3, present: false, durableAtSeq: 7 });
      } finally {
        await backupKv.close();
      }
    });

    it('group commit: Readys of many shards at once share batches, each shard in order, all durable', async () => {
      const sub = kv.sublevel('grouped');
      let batches = 0;
      const counting = new Proxy(sub, {
        get(target, prop, receiver) {
          if (prop === 'batch') return (ops: unknown, o: unknown) => (batches++, (target.batch as (a: unknown, b: unknown) => Promise<void>)(ops, o));
          const v = Reflect.get(target, prop, receiver) as unknown;
          return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
        },
      }) as KvStore;
      const g = await ShardStore.open(counting);
      const shards = Array.from({ length: 32 }, (_, i) => i);
      // 3 Readys per shard, issued without waiting: 96 Readys.
      await Promise.all(
        shards.map(async (sh) => {
          for (let seq = 1; seq <= 3; seq++) await g.persistReady(sh, { appendLog: [group(seq, 1)], apply: [group(seq, 1)] }, { sync: seq === 3 });
        }),
      );
      assert.ok(batches < 96 / 4, `${batches} batches for 96 Readys`);
      const again = await ShardStore.open(sub);
      for (const sh of shards) {
        const r = await again.recover(sh);
        assert.deepEqual([r.appliedSeq, r.log.length], [3, 3], `shard ${sh}`);
        assert.equal((await again.readValue(sh, 'k3')).version, 1);
      }
    });

    it('hard state, log and applied seq survive a reopen', async () => {
      await store.persistReady(SHARD, { hardState: { epoch: 3, expanding: ['r2', 'r3'] }, appendLog: groups(1, 4, 2), apply: groups(1, 2, 2) }, NO_SYNC);
      await store.persistReady(SHARD, { hardState: { epoch: 4, expanding: [] }, ...empty }, { sync: true });
      await reopen();
      assert.deepEqual(await store.recover(SHARD), { epoch: 4, expanding: [], appliedSeq: 2, appliedEpoch: 2, log: groups(1, 4, 2) });
      assert.deepEqual(store.logBounds(SHARD), { firstSeq: 1, lastSeq: 4 });
      assert.deepEqual(store.shards(), [SHARD]);
    });

    it('truncation drops the log tail, also with bounds loaded at reopen', async () => {
      await store.persistReady(SHARD, { appendLog: groups(1, 6, 1), apply: groups(1, 2, 1) }, NO_SYNC);
      await store.persistReady(SHARD, { truncateLogAfterSeq: 3, appendLog: [group(4, 2)], apply: [] }, NO_SYNC);
      assert.deepEqual((await store.recover(SHARD)).log, [...groups(1, 3, 1), group(4, 2)]);
      await reopen();
      await store.persistReady(SHARD, { truncateLogAfterSeq: 2, appendLog: [], apply: [] }, NO_SYNC);
      assert.deepEqual(store.logBounds(SHARD), { firstSeq: 1, lastSeq: 2 });
      await store.persistReady(SHARD, { appendLog: [group(3, 3)], apply: [] }, NO_SYNC);
      await reopen();
      assert.deepEqual((await store.recover(SHARD)).log, [...groups(1, 2, 1), group(3, 3)]);
    });

    it('trim drops the log head; an emptied log continues after the applied seq', async () => {
      await store.persistReady(SHARD, { appendLog: groups(1, 5, 1), apply: groups(1, 3, 1), trimLogThroughSeq: 2 }, NO_SYNC);
      assert.deepEqual((await store.recover(SHARD)).log, groups(3, 5, 1));
      await reopen();
      assert.deepEqual(store.logBounds(SHARD), { firstSeq: 3, lastSeq: 5 });
      await store.persistReady(SHARD, { appendLog: [], apply: groups(4, 5, 1), trimLogThroughSeq: 5 }, NO_SYNC);
      assert.deepEqual(await store.recover(SHARD), { epoch: 0, expanding: [], appliedSeq: 5, appliedEpoch: 1, log: [] });
      await reopen();
      assert.deepEqual(store.logBounds(SHARD), { firstSeq: 6, lastSeq: 5 });
      await rejectsWith(store.persistReady(SHARD, { appendLog: [group(7, 1)], apply: [] }, NO_SYNC), 'InvalidShardInputError', {
        field: 'rd.appendLog[0].seq',
      });
      await store.persistReady(SHARD, { appendLog: [group(6, 1)], apply: [] }, NO_SYNC);
      assert.deepEqual((await store.recover(SHARD)).log, [group(6, 1)]);
    });

    it('one Ready truncates, appends, applies and trims in one batch, in contract order', async () => {
      await store.persistReady(SHARD, { appendLog: groups(1, 4, 1), apply: [] }, NO_SYNC);
      const g3 = group(3, 2, [put('x', 'X', 1), put('x', 'X2', 2), put('y', 'Y', 1), del('y', 2)]);
      await store.persistReady(
        SHARD,
        { hardState: { epoch: 2, expanding: [] }, truncateLogAfterSeq: 2, appendLog: [g3, group(4, 2)], apply: [...groups(1, 2, 1), g3], trimLogThroughSeq: 3 },
        NO_SYNC,
      );
      await reopen();
      assert.deepEqual(await store.recover(SHARD), { epoch: 2, expanding: [], appliedSeq: 3, appliedEpoch: 2, log: [group(4, 2)] });
      assert.deepEqual(await store.readValue(SHARD, 'x'), { value: enc('X2'), version: 2, present: true, durableAtSeq: 3 });
      assert.deepEqual(await store.readValue(SHARD, 'y'), { value: null, version: 2, present: false, durableAtSeq: 3 });
    });

    it('a delete leaves a tombstone that keeps its version', async () => {
      await store.persistReady(SHARD, { appendLog: [], apply: [group(1, 1, [put('k', 'v', 1)]), group(2, 1, [del('k', 2)])] }, NO_SYNC);
      await reopen();
      assert.deepEqual(await store.readValue(SHARD, 'k'), { value: null, version: 2, present: false, durableAtSeq: 2 });
      assert.deepEqual((await collect(store, SHARD)).entries, [{ key: 'k', value: null, version: 2 }]);
      await store.persistReady(SHARD, { appendLog: [], apply: [group(3, 1, [put('k', 'again', 3)])] }, NO_SYNC);
      assert.deepEqual(await store.readValue(SHARD, 'k'), { value: enc('again'), version: 3, present: true, durableAtSeq: 3 });
    });

    it('data and log survive a reopen byte for byte', async () => {
      const all = Uint8Array.from({ length: 256 }, (_, k) => k);
      const big = Uint8Array.from({ length: 1024 * 1024 }, (_, k) => (k * 31 + 7) & 0xff);
      const longKey = 'é'.repeat(512); // 1024 UTF-8 bytes
      const ops = [put('', new Uint8Array(0), 1), put('bytes', all, 4), put('big', big, 1), put('键🔑', 'ünïcödé', 2), put(longKey, 'long', 1)];
      const g = group(1, 1, ops);
      await store.persistReady(SHARD, { appendLog: [g], apply: [g] }, { sync: true });
      await reopen();
      assert.deepEqual(await store.readValue(SHARD, ''), { value: new Uint8Array(0), version: 1, present: true, durableAtSeq: 1 });
      assert.deepEqual((await store.readValue(SHARD, 'bytes')).value, all);
      assert.deepEqual((await store.readValue(SHARD, 'big')).value, big);
      assert.deepEqual((await store.readValue(SHARD, '键🔑')).value, enc('ünïcödé'));
      assert.deepEqual((await store.readValue(SHARD, longKey)).value, enc('long'));
      assert.deepEqual((await store.recover(SHARD)).log, [g]);
    });

    it('readVersion (memory after an apply or a read) always agrees with readValue, across installs and deletion', async () => {
      const same = async (key: string): Promise<void> => {
        const { value: _v, ...fromDisk } = await store.readValue(SHARD, key);
        assert.deepEqual(await store.readVersion(SHARD, key), fromDisk, key);
      };
      await same('a'); // a miss, remembered
      await store.persistReady(SHARD, { appendLog: [group(1, 1, [put('a', 'A', 1), put('b', 'B', 1)])], apply: [group(1, 1, [put('a', 'A', 1), put('b', 'B', 1)])] }, NO_SYNC);
      await same('a');
      await same('b');
      await store.persistReady(SHARD, { appendLog: [group(2, 1, [del('a', 2)])], apply: [group(2, 1, [del('a', 2)])] }, NO_SYNC);
      await same('a');
      assert.deepEqual(await store.readVersion(SHARD, 'a'), { version: 2, present: false, durableAtSeq: 2 });
      await store.installSnapshot(SHARD, [[{ key: 'b', value: enc('B7'), version: 7 }]], { seq: 10, epoch: 2 }, { sync: false });
      await same('a');
      await same('b');
      assert.equal((await store.readVersion(SHARD, 'b')).version, 7);
      await store.deleteShard(SHARD, NO_SYNC);
      await same('b');
      assert.deepEqual(await store.readVersion(SHARD, 'b'), { version: 0, present: false, durableAtSeq: 0 });
      await store.persistReady(SHARD, { appendLog: [group(1, 1, [put('b', 'B', 1)])], apply: [group(1, 1, [put('b', 'B', 1)])] }, NO_SYNC);
      await same('b');
      assert.equal((await store.readVersion(SHARD, 'b')).version, 1);
      // Deletion returns to generation 0: what memory held for generation 0 must be gone.
      await store.deleteShard(SHARD, NO_SYNC);
      assert.deepEqual(await store.readVersion(SHARD, 'b'), { version: 0, present: false, durableAtSeq: 0 });
    });

    it('the key filter answers keys the shard never held from memory, and never hides one it holds', async () => {
      const ops = Array.from({ length: 300 }, (_, i) => put(`held-${i}`, `v${i}`, i + 1));
      await store.persistReady(SHARD, { appendLog: [group(1, 1, ops)], apply: [group(1, 1, ops)] }, NO_SYNC);
      await reopen(); // memory starts empty
      assert.equal(store.keyFilterState(SHARD), 'none');
      await store.readVersion(SHARD, 'absent-first'); // the first read from disk starts the build
      for (let i = 0; i < 1000 && store.keyFilterState(SHARD) === 'building'; i++) await new Promise((r) => setTimeout(r, 5));
      assert.equal(store.keyFilterState(SHARD), 'complete');
      for (let i = 0; i < 300; i++) assert.deepEqual(await store.readVersion(SHARD, `held-${i}`), { version: i + 1, present: true, durableAtSeq: 1 });
      const saved0 = store.counters.versionReadsSaved;
      for (let i = 0; i < 200; i++) assert.deepEqual(await store.readVersion(SHARD, `absent-${i}`), { version: 0, present: false, durableAtSeq: 1 });
      assert.ok(store.counters.versionReadsSaved - saved0 >= 190, `${store.counters.versionReadsSaved - saved0} of 200 absent keys answered from memory`);
      // A key applied after the build is held by the filter (and memory).
      await store.persistReady(SHARD, { appendLog: [group(2, 1, [put('late', 'L', 1)])], apply: [group(2, 1, [put('late', 'L', 1)])] }, NO_SYNC);
      assert.deepEqual(await store.readVersion(SHARD, 'late'), { version: 1, present: true, durableAtSeq: 2 });
      // An install starts over.
      await store.installSnapshot(SHARD, [[{ key: 'absent-0', value: enc('now here'), version: 5 }]], { seq: 9, epoch: 2 }, { sync: false });
      assert.equal(store.keyFilterState(SHARD), 'none');
      assert.deepEqual(await store.readVersion(SHARD, 'absent-0'), { version: 5, present: true, durableAtSeq: 9 });
    });

    it('a snapshot install replaces data and log atomically and the log continues after it', async () => {
      await store.persistReady(SHARD, { hardState: { epoch: 2, expanding: [] }, appendLog: groups(1, 4, 1), apply: [group(1, 1, [put('x', 'X', 1), put('y', 'Y', 1)])] }, NO_SYNC);
      const entries: ShardEntry[] = [
        { key: 'y', value: enc('Y9'), version: 9 },
        { key: 'z', value: enc('Z'), version: 1 },
        { key: 'w', value: null, version: 4 },
      ];
      await store.installSnapshot(SHARD, [entries.slice(0, 2), [], entries.slice(2)], { seq: 10, epoch: 2 }, { sync: true });
      const check = async (): Promise<void> => {
        assert.deepEqual(await store.recover(SHARD), { epoch: 2, expanding: [], appliedSeq: 10, appliedEpoch: 2, log: [] });
        assert.deepEqual(await store.readValue(SHARD, 'x'), { value: null, version: 0, present: false, durableAtSeq: 10 });
        assert.deepEqual(await store.readValue(SHARD, 'y'), { value: enc('Y9'), version: 9, present: true, durableAtSeq: 10 });
        assert.deepEqual(await store.readValue(SHARD, 'w'), { value: null, version: 4, present: false, durableAtSeq: 10 });
        assert.deepEqual((await collect(store, SHARD)).entries.map((e) => e.key), ['w', 'y', 'z']);
        await rejectsWith(store.readLog(SHARD, 3, 10), 'LogTrimmedError');
      };
      await check();
      await reopen();
      await check();
      // Only the current generation's data is left on disk.
      const dataKeys: string[] = [];
      for await (const [key] of kv.sublevel('shards').iterate({ gte: shardKeys.prefix(SHARD) + 'd', lt: shardKeys.prefix(SHARD) + 'e' })) dataKeys.push(key);
      assert.equal(dataKeys.length, 3);
      await store.persistReady(SHARD, { appendLog: [group(11, 2)], apply: [group(11, 2)] }, NO_SYNC);
      assert.deepEqual((await store.recover(SHARD)).log, [group(11, 2)]);
    });

    it('a snapshot that is aborted, or interrupted by a crash, changes nothing', async () => {
      await store.persistReady(SHARD, { appendLog: [group(1, 1)], apply: [group(1, 1, [put('x', 'X', 1)])] }, NO_SYNC);
      const w = await store.beginSnapshot(SHARD);
      await w.write([{ key: 'x', value: enc('staged'), version: 5 }]);
      assert.deepEqual((await store.readValue(SHARD, 'x')).value, enc('X'));
      await w.abort();
      await rejectsWith(w.write([{ key: 'q', value: null, version: 1 }]), 'InvalidShardInputError', { field: 'snapshot' });
      const w2 = await store.beginSnapshot(SHARD);
      await w2.write([{ key: 'x', value: enc('staged'), version: 5 }, { key: 'new', value: enc('N'), version: 1 }]);
      await reopen(); // never committed
      assert.deepEqual(await store.readValue(SHARD, 'x'), { value: enc('X'), version: 1, present: true, durableAtSeq: 1 });
      assert.deepEqual(await store.readValue(SHARD, 'new'), { value: null, version: 0, present: false, durableAtSeq: 1 });
      assert.deepEqual((await store.recover(SHARD)).log, [group(1, 1)]);
      let rows = 0;
      for await (const _ of kv.sublevel('shards').iterate({ gte: shardKeys.prefix(SHARD) + 'd', lt: shardKeys.prefix(SHARD) + 'e' })) rows++;
      assert.equal(rows, 1, 'staged data cleared at open');
    });

    it('a snapshot received in numbered chunks resumes after a reopen from the last chunk staged', async () => {
      await store.persistReady(SHARD, { appendLog: [group(1, 1)], apply: [group(1, 1, [put('x', 'X', 1)])] }, NO_SYNC);
      const id = { id: 'snap-a', from: 'peer-p', seq: 40, seqEpoch: 3 };
      const w = await store.beginSnapshot(SHARD, id);
      assert.equal(w.chunks, 0);
      await w.writeChunk(0, [{ key: 'a', value: enc('A'), version: 2 }]);
      await w.writeChunk(1, [{ key: 'b', value: null, version: 4 }]);
      await w.writeChunk(1, [{ key: 'b', value: null, version: 4 }]); // a resend: staged already
      await rejectsWith(w.writeChunk(3, [{ key: 'd', value: enc('D'), version: 1 }]), 'InvalidShardInputError', { field: 'chunk' });
      assert.deepEqual(store.stagedSnapshot(SHARD), { ...id, chunks: 2, bytes: store.stagedSnapshot(SHARD)!.bytes });
      await reopen(); // the receiver restarts mid-snapshot
      assert.equal(store.stagedSnapshot(SHARD)?.chunks, 2, 'kept for a resume');
      assert.deepEqual((await store.readValue(SHARD, 'x')).value, enc('X'), 'the old data still serves');
      // Another snapshot id drops it; the same id goes on after chunk 1.
      const w2 = await store.beginSnapshot(SHARD, id);
      assert.equal(w2.chunks, 2);
      await w2.writeChunk(2, [{ key: 'c', value: enc('C'), version: 9 }]);
      await w2.commit({ seq: 40, epoch: 3 }, NO_SYNC);
      assert.equal(store.stagedSnapshot(SHARD), null);
      const got = await collect(store, SHARD);
      assert.equal(got.seq, 40);
      assert.deepEqual(got.entries.map((e) => [e.key, e.version]), [['a', 2], ['b', 4], ['c', 9]]);
      await reopen();
      assert.equal(store.stagedSnapshot(SHARD), null);
      assert.equal((await collect(store, SHARD)).entries.length, 3);
    });

    it('a half-received snapshot is dropped when another one begins', async () => {
      await store.persistReady(SHARD, { appendLog: [group(1, 1)], apply: [group(1, 1, [put('x', 'X', 1)])] }, NO_SYNC);
      const w = await store.beginSnapshot(SHARD, { id: 'old', from: 'p', seq: 10, seqEpoch: 1 });
      await w.writeChunk(0, [{ key: 'stale', value: enc('S'), version: 1 }]);
      await reopen();
      const w2 = await store.beginSnapshot(SHARD, { id: 'new', from: 'q', seq: 12, seqEpoch: 2 });
      assert.equal(w2.chunks, 0);
      await w2.writeChunk(0, [{ key: 'fresh', value: enc('F'), version: 1 }]);
      await w2.commit({ seq: 12, epoch: 2 }, NO_SYNC);
      assert.deepEqual((await collect(store, SHARD)).entries.map((e) => e.key), ['fresh']);
      let rows = 0;
      for await (const _ of kv.sublevel('shards').iterate({ gte: shardKeys.prefix(SHARD) + 'd', lt: shardKeys.prefix(SHARD) + 'e' })) rows++;
      assert.equal(rows, 1, 'the dropped snapshot left nothing behind');
    });

    it('snapshotData is one consistent view, in bounded batches', async () => {
      const kvShards = kv.sublevel('shards');
      const small = await ShardStore.open(kvShards, { snapshotBatchEntries: 2 });
      const g1 = group(1, 1, ['a', 'b', 'c', 'd', 'e'].map((k) => put(k, k.toUpperCase(), 1)));
      await small.persistReady(SHARD, { appendLog: [g1], apply: [g1] }, NO_SYNC);
      const snap = await small.snapshotData(SHARD);
      // Writes after the snapshot started do not show in it.
      const g2 = group(2, 1, [put('a', 'A2', 2), del('b', 2), put('f', 'F', 1)]);
      await small.persistReady(SHARD, { appendLog: [g2], apply: [g2] }, NO_SYNC);
      const sizes: number[] = [];
      const got: ShardEntry[] = [];
      for await (const batch of snap.batches) {
        sizes.push(batch.length);
        got.push(...batch);
      }
      assert.equal(snap.seq, 1);
      assert.deepEqual(sizes, [2, 2, 1]);
      assert.deepEqual(got, ['a', 'b', 'c', 'd', 'e'].map((k) => ({ key: k, value: enc(k.toUpperCase()), version: 1 })));
      const now = await collect(small, SHARD);
      assert.equal(now.seq, 2);
      assert.equal(now.entries.length, 6);
      // A reader closed without iterating releases its iterator.
      await (await small.snapshotData(SHARD)).close();
    });

    it('readLog serves catch-up from the log and reports trimmed groups', async () => {
      await store.persistReady(SHARD, { appendLog: groups(1, 6, 1), apply: groups(1, 4, 1), trimLogThroughSeq: 2 }, NO_SYNC);
      await reopen();
      assert.deepEqual(await store.readLog(SHARD, 2, 10), groups(3, 6, 1));
      assert.deepEqual(await store.readLog(SHARD, 3, 2), groups(4, 5, 1));
      assert.deepEqual(await store.readLog(SHARD, 3, 10, 1), [group(4, 1)]);
      assert.deepEqual(await store.readLog(SHARD, 6, 10), []);
      await rejectsWith(store.readLog(SHARD, 1, 10), 'LogTrimmedError');
      await rejectsWith(store.readLog(SHARD, 0, 10), 'LogTrimmedError');
      await rejectsWith(store.readLog(SHARD, 2, 0), 'InvalidShardInputError', { field: 'maxGroups' });
    });

    it('shards are isolated from each other', async () => {
      const shards = [0, 1, 1023];
      for (const s of shards) {
        await store.persistReady(s, { hardState: { epoch: s + 1, expanding: [] }, appendLog: groups(1, 3, 1), apply: [group(1, 1, [put('k', `v${s}`, 1)])] }, NO_SYNC);
      }
      await store.persistReady(1, { truncateLogAfterSeq: 1, appendLog: [], apply: [], trimLogThroughSeq: 1 }, NO_SYNC);
      await store.installSnapshot(1023, [[{ key: 'other', value: enc('o'), version: 1 }]], { seq: 9, epoch: 1 }, NO_SYNC);
      await reopen();
      assert.deepEqual(store.shards(), shards);
      const r0 = await store.recover(0);
      assert.deepEqual(r0, { epoch: 1, expanding: [], appliedSeq: 1, appliedEpoch: 1, log: groups(1, 3, 1) });
      assert.deepEqual((await store.recover(1)).log, []);
      assert.equal((await store.recover(1)).epoch, 2);
      assert.deepEqual((await store.readValue(0, 'k')).value, enc('v0'));
      assert.deepEqual((await store.readValue(1, 'k')).value, enc('v1'));
      assert.equal((await store.readValue(1023, 'k')).present, false);
      assert.deepEqual((await collect(store, 0)).entries, [{ key: 'k', value: enc('v0'), version: 1 }]);
      await store.deleteShard(1, { sync: true });
      await reopen();
      assert.deepEqual(store.shards(), shards);
      // The hard state (the fencing epoch) stays; data, log and applied seq are gone.
      assert.deepEqual(await store.recover(1), { epoch: 2, expanding: [], appliedSeq: 0, appliedEpoch: 0, log: [] });
      assert.deepEqual(store.logBounds(1), { firstSeq: 1, lastSeq: 0 });
      assert.equal((await store.readValue(1, 'k')).present, false);
      assert.deepEqual((await store.readValue(0, 'k')).value, enc('v0'));
      // Nothing outside the view the store was given.
      const outside: string[] = [];
      for await (const [key] of kv.iterate()) outside.push(key);
      assert.deepEqual(outside, []);
    });

    it('rejects bad input with typed errors and writes nothing', async () => {
      for (const shard of [-1, 1024, 1.5, Number.NaN, '1' as unknown as number]) {
        await rejectsWith(store.readValue(shard, 'k'), 'InvalidShardInputError', { field: 'shard' });
        await rejectsWith(store.persistReady(shard, empty, NO_SYNC), 'InvalidShardInputError', { field: 'shard' });
      }
      await rejectsWith(store.readValue(SHARD, 'x'.repeat(1025)), 'InvalidShardInputError', { field: 'key' });
      await rejectsWith(store.readValue(SHARD, 'é'.repeat(513)), 'InvalidShardInputError', { field: 'key' });
      await rejectsWith(store.readValue(SHARD, 'lone\uD800'), 'InvalidShardInputError', { field: 'key' });
      const tooBig = new Uint8Array(1024 * 1024 + 1);
      await rejectsWith(
        store.persistReady(SHARD, { appendLog: [group(1, 1)], apply: [group(1, 1, [put('a', 'A', 1), put('k', tooBig, 1)])] }, NO_SYNC),
        'InvalidShardInputError',
        { field: 'rd.apply[0].ops[1].value' },
      );
      await rejectsWith(store.persistReady(SHARD, { appendLog: [group(1, 1, [put('k', 'v', 0)])], apply: [] }, NO_SYNC), 'InvalidShardInputError', {
        field: 'rd.appendLog[0].ops[0].version',
      });
      await rejectsWith(store.persistReady(SHARD, { appendLog: [group(2, 1)], apply: [] }, NO_SYNC), 'InvalidShardInputError', { field: 'rd.appendLog[0].seq' });
      await rejectsWith(store.persistReady(SHARD, { appendLog: [group(1, 1)], apply: [group(2, 1)] }, NO_SYNC), 'InvalidShardInputError', { field: 'rd.apply[0].seq' });
      assert.deepEqual(await store.recover(SHARD), { epoch: 0, expanding: [], appliedSeq: 0, appliedEpoch: 0, log: [] });
      assert.equal((await store.readValue(SHARD, 'a')).present, false);
      await rejectsWith(store.installSnapshot(SHARD, [[{ key: 'x'.repeat(1025), value: null, version: 1 }]], { seq: 3, epoch: 1 }, NO_SYNC), 'InvalidShardInputError', {
        field: 'entries[0].key',
      });
      await rejectsWith(store.installSnapshot(SHARD, [[{ key: 'k', value: enc('v'), version: 0 }]], { seq: 3, epoch: 1 }, NO_SYNC), 'InvalidShardInputError', {
        field: 'entries[0].version',
      });
      await rejectsWith(store.installSnapshot(SHARD, [], { seq: 0, epoch: 1 }, NO_SYNC), 'InvalidShardInputError', { field: 'meta.seq' });
      assert.equal(store.appliedSeq(SHARD), 0);
      const w = await store.beginSnapshot(SHARD);
      await rejectsWith(store.beginSnapshot(SHARD), 'InvalidShardInputError', { field: 'shard' });
      await w.abort();
      await rejectsWith(ShardStore.open(kv.sublevel('other'), { snapshotBatchBytes: 0 }), 'ConfigError', { field: 'snapshotBatchBytes' });
    });

    it('reports corrupt records as StorageError CORRUPT', async () => {
      const raw = kv.sublevel('shards');
      await store.persistReady(SHARD, { hardState: { epoch: 1, expanding: [] }, appendLog: groups(1, 2, 1), apply: [group(1, 1, [put('k', 'v', 1)])] }, NO_SYNC);
      await raw.put(shardKeys.data(SHARD, 0, 'k'), new Uint8Array([1, 9, 0]));
      await rejectsWith(store.readValue(SHARD, 'k'), 'StorageError', { code: 'CORRUPT' });
      // A gap: a log that skips a group is not damage a checksum finds; it refuses to load.
      await store.persistReady(SHARD, { appendLog: groups(3, 4, 1), apply: [] }, NO_SYNC);
      await raw.del(shardKeys.log(SHARD, 3));
      await rejectsWith(store.recover(SHARD), 'StorageError', { code: 'CORRUPT' });
      await raw.del(shardKeys.log(SHARD, 4));
      await raw.put(shardKeys.hard(SHARD), enc('{"epoch":-1}'));
      await rejectsWith(store.recover(SHARD), 'StorageError', { code: 'CORRUPT' });
      await raw.put(shardKeys.applied(SHARD), new Uint8Array([1, 2, 3]));
      await rejectsWith(ShardStore.open(raw), 'StorageError', { code: 'CORRUPT' });
    });

    /** The stored bytes of `key` with one bit flipped at `at` (from the end when negative). */
    async function flipped(raw: KvStore, key: string, at: number): Promise<Uint8Array> {
      const b = Uint8Array.from((await raw.get(key))!);
      const i = at < 0 ? b.length + at : at;
      b[i] = (b[i] as number) ^ 0x10;
      return b;
    }

    it('checksums: a flipped bit in a value, an applied record or the hard state is CORRUPT, never a wrong answer', async () => {
      const raw = kv.sublevel('shards');
      await store.persistReady(SHARD, { hardState: { epoch: 1, expanding: [] }, appendLog: groups(1, 2, 1), apply: [group(1, 1, [put('k', 'value', 1)])] }, NO_SYNC);
      await raw.put(shardKeys.data(SHARD, 0, 'k'), await flipped(raw, shardKeys.data(SHARD, 0, 'k'), -1));
      await rejectsWith(store.readValue(SHARD, 'k'), 'StorageError', { code: 'CORRUPT' });
      await raw.put(shardKeys.applied(SHARD), await flipped(raw, shardKeys.applied(SHARD), 8));
      await rejectsWith(ShardStore.open(raw), 'StorageError', { code: 'CORRUPT' });
    });

    it('checksums: a damaged log group above the applied seq cuts the log there; at or below it, the log head goes', async () => {
      const raw = (): KvStore => kv.sublevel('shards');
      await store.persistReady(SHARD, { appendLog: groups(1, 6, 1), apply: groups(1, 3, 1) }, NO_SYNC);
      // Group 5 (not applied) damaged: 5 and 6 go, the replica recovers with 1..4 and says so once.
      await raw().put(shardKeys.log(SHARD, 5), await flipped(raw(), shardKeys.log(SHARD, 5), -1));
      await reopen();
      const r1 = await store.recover(SHARD);
      assert.deepEqual(r1.log, groups(1, 4, 1));
      assert.equal(r1.appliedSeq, 3);
      assert.deepEqual(store.takeRepair(SHARD), { kind: 'tail', seq: 5, problem: 'checksum mismatch', dropped: 2 });
      assert.equal(store.takeRepair(SHARD), null);
      assert.deepEqual(store.logBounds(SHARD), { firstSeq: 1, lastSeq: 4 });
      assert.equal(await raw().get(shardKeys.log(SHARD, 6)), undefined, 'the cut is on disk');
      // Group 2 (applied) damaged: groups 1 and 2 go, 3 and 4 stay; the data is untouched.
      await raw().put(shardKeys.log(SHARD, 2), await flipped(raw(), shardKeys.log(SHARD, 2), 12));
      await reopen();
      const r2 = await store.recover(SHARD);
      assert.deepEqual(r2.log, groups(3, 4, 1));
      assert.equal(store.takeRepair(SHARD)?.kind, 'prefix');
      assert.deepEqual(store.logBounds(SHARD), { firstSeq: 3, lastSeq: 4 });
      // The log goes on from there.
      await store.persistReady(SHARD, { appendLog: [group(5, 2)], apply: [] }, NO_SYNC);
      await reopen();
      assert.deepEqual((await store.recover(SHARD)).log, [...groups(3, 4, 1), group(5, 2)]);
    });

    it('records written before checksums (format 1) are still read', async () => {
      const raw = kv.sublevel('shards'); // used before the reopen only
      await store.persistReady(SHARD, { appendLog: groups(1, 2, 1), apply: [group(1, 1, [put('k', 'v', 1)])] }, NO_SYNC);
      for (const key of [shardKeys.log(SHARD, 1), shardKeys.log(SHARD, 2), shardKeys.data(SHARD, 0, 'k'), shardKeys.applied(SHARD)]) {
        const sealed = (await raw.get(key))!;
        assert.equal(sealed[0], 2, 'new records are sealed');
        await raw.put(key, sealed.slice(5));
      }
      await reopen();
      const r = await store.recover(SHARD);
      assert.equal(r.log.length, 2);
      assert.equal(store.takeRepair(SHARD), null);
      assert.equal(new TextDecoder().decode((await store.readValue(SHARD, 'k')).value!), 'v');
    });
  });
}

shardStorageContract('memory', async () => ({
  open: () => openMemoryStore(),
  reopen: async (kv) => kv,
  cleanup: async () => {},
}));

shardStorageContract('disk (classic-level)', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'shoal-shards-'));
  return {
    open: () => openDiskStore(dir),
    reopen: async (kv) => {
      await kv.close();
      return openDiskStore(dir);
    },
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
});
