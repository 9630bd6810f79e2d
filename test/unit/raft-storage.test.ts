import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Entry, Snapshot } from '../../protocols/raft/types.js';
import type { KvStore } from '../../storage/kv-store.js';
import { openDiskStore, openMemoryStore } from '../../storage/level-store.js';
import { LevelRaftStorage } from '../../storage/raft-store.js';

function entry(index: number, term: number, text = `e${index}t${term}`): Entry {
  return { index, term, type: 'normal', data: new TextEncoder().encode(text) };
}

function entries(from: number, to: number, term: number): Entry[] {
  return Array.from({ length: to - from + 1 }, (_, k) => entry(from + k, term));
}

interface Harness {
  open(): Promise<KvStore>;
  /** Close and reopen the same underlying data (disk), or keep the same store (memory). */
  reopen(store: KvStore): Promise<KvStore>;
  cleanup(): Promise<void>;
}

function raftStorageContract(name: string, make: () => Promise<Harness>): void {
  describe(`RaftStorage contract: ${name}`, () => {
    let h: Harness;
    let store: KvStore;
    beforeEach(async () => {
      h = await make();
      store = await h.open();
    });
    afterEach(async () => {
      await store.close().catch(() => {});
      await h.cleanup();
    });

    async function reload(): Promise<ReturnType<LevelRaftStorage['load']>> {
      store = await h.reopen(store);
      return new LevelRaftStorage(store.sublevel('raft')).load();
    }

    it('an empty store loads as term 0, no vote, no entries', async () => {
      const s = await new LevelRaftStorage(store.sublevel('raft')).load();
      assert.deepEqual(s.hardState, { term: 0, vote: null, commit: 0 });
      assert.deepEqual(s.entries, []);
      assert.equal(s.snapshot, undefined);
    });

    it('hard state and entries survive a reload byte for byte', async () => {
      const rs = new LevelRaftStorage(store.sublevel('raft'));
      await rs.load();
      const es = entries(1, 5, 2);
      es.push({ index: 6, term: 3, type: 'conf-change', data: new Uint8Array([0, 255, 0]) });
      await rs.persist({ hardState: { term: 3, vote: 'n2', commit: 4 }, entries: es }, { sync: true });
      assert.equal(rs.lastIndex, 6);
      const back = await reload();
      assert.deepEqual(back.hardState, { term: 3, vote: 'n2', commit: 4 });
      assert.deepEqual(back.entries, es);
    });

    it('entries overwrite a conflicting suffix and drop what lies beyond it', async () => {
      const rs = new LevelRaftStorage(store.sublevel('raft'));
      await rs.load();
      await rs.persist({ entries: entries(1, 5, 1) }, { sync: false });
      await rs.persist({ entries: [entry(3, 2), entry(4, 2)] }, { sync: false });
      assert.equal(rs.lastIndex, 4);
      const back = await reload();
      assert.deepEqual(back.entries, [entry(1, 1), entry(2, 1), entry(3, 2), entry(4, 2)]);
    });

    it('refuses entries that would leave a gap', async () => {
      const rs = new LevelRaftStorage(store.sublevel('raft'));
      await rs.load();
      await rs.persist({ entries: entries(1, 2, 1) }, { sync: false });
      await assert.rejects(rs.persist({ entries: [entry(4, 1)] }, { sync: false }));
      assert.equal((await reload()).entries.length, 2);
    });

    it('a snapshot from the leader replaces the whole log', async () => {
      const rs = new LevelRaftStorage(store.sublevel('raft'));
      await rs.load();
      await rs.persist({ entries: entries(1, 8, 1) }, { sync: false });
      const snap: Snapshot = { index: 20, term: 4, config: { voters: ['a', 'b'], learners: ['c'] }, data: new Uint8Array([1, 2, 3]) };
      await rs.persist({ snapshot: snap, entries: [], hardState: { term: 4, vote: null, commit: 20 } }, { sync: true });
      assert.equal(rs.lastIndex, 20);
      await rs.persist({ entries: [entry(21, 4)] }, { sync: false });
      const back = await reload();
      assert.deepEqual(back.snapshot, snap);
      assert.deepEqual(back.entries, [entry(21, 4)]);
    });

    it('a compaction drops the entries it covers and keeps the rest', async () => {
      const rs = new LevelRaftStorage(store.sublevel('raft'));
      await rs.load();
      await rs.persist({ entries: entries(1, 6, 1) }, { sync: false });
      const snap: Snapshot = { index: 4, term: 1, config: { voters: ['a'], learners: [] }, data: new Uint8Array([9]) };
      await rs.saveCompaction(snap, { sync: true });
      const back = await reload();
      assert.deepEqual(back.snapshot, snap);
      assert.deepEqual(back.entries, entries(5, 6, 1));
    });

    it('checksums: a damaged entry cuts the log before it (durably); a damaged hard state is CORRUPT', async () => {
      const rs = new LevelRaftStorage(store.sublevel('raft'));
      await rs.load();
      await rs.persist({ hardState: { term: 1, vote: 'a', commit: 5 }, entries: entries(1, 6, 1) }, { sync: false });
      const raw = store.sublevel('raft');
      const key = 'e' + (4).toString(16).padStart(16, '0');
      const b = Uint8Array.from((await raw.get(key))!);
      b[b.length - 1] = (b[b.length - 1] as number) ^ 1;
      await raw.put(key, b);
      store = await h.reopen(store);
      const again = new LevelRaftStorage(store.sublevel('raft'));
      const back = await again.load();
      assert.deepEqual(back.entries, entries(1, 3, 1));
      assert.equal(back.hardState.commit, 5, 'the core sees commit beyond its log and recovers the lost tail');
      assert.equal(again.repair?.fromIndex, 4);
      assert.equal(again.repair?.throughIndex, 6);
      assert.match(again.repair?.problem ?? '', /entry e0+4 .*checksum mismatch/);
      assert.equal(again.lastIndex, 3);
      assert.deepEqual((await reload()).entries, entries(1, 3, 1), 'the cut is on disk');
      const hard = Uint8Array.from((await store.sublevel('raft').get('hard'))!);
      hard[hard.length - 2] = (hard[hard.length - 2] as number) ^ 1;
      await store.sublevel('raft').put('hard', hard);
      await assert.rejects(new LevelRaftStorage(store.sublevel('raft')).load(), (err: Error & { code?: string }) => err.name === 'StorageError' && err.code === 'CORRUPT' && /checksum/.test(err.message));
    });

    it('records written before checksums are still read', async () => {
      const rs = new LevelRaftStorage(store.sublevel('raft'));
      await rs.load();
      await rs.persist({ hardState: { term: 2, vote: null, commit: 2 }, entries: entries(1, 3, 2) }, { sync: false });
      const raw = store.sublevel('raft');
      for (const key of ['hard', ...[1, 2, 3].map((i) => 'e' + i.toString(16).padStart(16, '0'))]) {
        const sealed = (await raw.get(key))!;
        assert.equal(sealed[0], 1);
        await raw.put(key, sealed.slice(5));
      }
      const back = await reload();
      assert.deepEqual(back.entries, entries(1, 3, 2));
      assert.deepEqual(back.hardState, { term: 2, vote: null, commit: 2 });
    });

    it('raft keys live in their own sublevel', async () => {
      const rs = new LevelRaftStorage(store.sublevel('raft'));
      await rs.load();
      await rs.persist({ entries: entries(1, 3, 1) }, { sync: false });
      const rootKeys: string[] = [];
      for await (const [k] of store.iterate()) rootKeys.push(k);
      assert.deepEqual(rootKeys, []);
    });
  });
}

raftStorageContract('memory', async () => ({
  open: () => openMemoryStore(),
  reopen: async (s) => s,
  cleanup: async () => {},
}));

raftStorageContract('disk (classic-level)', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'shoal-raft-'));
  return {
    open: () => openDiskStore(dir),
    reopen: async (s) => {
      await s.close();
      return openDiskStore(dir);
    },
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
});
