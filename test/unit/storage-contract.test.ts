/**
 * The KvStore contract: one suite, run against every implementation (memory and disk), so that
 * simulations on the memory store say something about peers on the disk store. Then the errors
 * that only a disk store can raise: a locked database and a data directory that cannot be
 * written.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { getJson, putJson } from '../../storage/json.js';
import type { BatchOp, KeyRange, KvStore } from '../../storage/kv-store.js';
import { openDiskStore, openMemoryStore, StorageError } from '../../storage/level-store.js';

/** How the contract suite gets stores of one implementation. */
interface StoreFixture {
  /** Opens a fresh, empty store. Called once per test. */
  open(): Promise<KvStore>;
  /** Closes `store` and opens the same data again. Only for persistent implementations. */
  reopen(store: KvStore): Promise<KvStore>;
  /** Removes whatever `open` created. The store is closed by then. */
  cleanup(): Promise<void>;
}

interface Implementation {
  name: string;
  /** Whether data outlives `close()`; enables the reopen test. */
  persistent: boolean;
  createFixture(): StoreFixture;
}

const memoryImplementation: Implementation = {
  name: 'memory store',
  persistent: false,
  createFixture: () => ({
    open: openMemoryStore,
    reopen: () => Promise.reject(new Error('a memory store does not persist')),
    cleanup: async () => {},
  }),
};

const diskImplementation: Implementation = {
  name: 'disk store',
  persistent: true,
  createFixture: () => {
    let dir: string | undefined;
    return {
      open: async () => {
        dir = await makeTempDir();
        return openDiskStore(dir);
      },
      reopen: async (store) => {
        assert.ok(dir !== undefined, 'reopen() before open()');
        await store.close();
        return openDiskStore(dir);
      },
      cleanup: async () => {
        if (dir !== undefined) await rm(dir, { recursive: true, force: true });
      },
    };
  },
};

describeKvStoreContract(memoryImplementation);
describeKvStoreContract(diskImplementation);

/** The contract every KvStore implementation must meet. */
function describeKvStoreContract(implementation: Implementation): void {
  describe(`KvStore contract: ${implementation.name}`, () => {
    let fixture: StoreFixture;
    let store: KvStore;

    beforeEach(async () => {
      fixture = implementation.createFixture();
      store = await fixture.open();
    });

    afterEach(async () => {
      await store.close();
      await fixture.cleanup();
    });

    it('is open once opened and names its location', () => {
      assert.equal(store.status, 'open');
      assert.equal(typeof store.location, 'string');
      assert.ok(store.location.length > 0);
    });

    it('returns undefined for a missing key', async () => {
      assert.equal(await store.get('missing'), undefined);
    });

    it('returns what was put, and the latest value after a second put', async () => {
      await store.put('k', bytes(1, 2, 3));
      assert.deepEqual(await store.get('k'), bytes(1, 2, 3));
      await store.put('k', bytes(4));
      assert.deepEqual(await store.get('k'), bytes(4));
    });

    it('deletes a key, and deleting a missing key is not an error', async () => {
      await store.put('k', bytes(1));
      await store.del('k');
      assert.equal(await store.get('k'), undefined);
      await store.del('never-there');
    });

    it('round-trips binary values exactly, including zero bytes and the empty value', async () => {
      const everyByte = Uint8Array.from({ length: 256 }, (_, i) => i);
      const zeros = new Uint8Array(17);
      const empty = new Uint8Array(0);
      const large = Uint8Array.from({ length: 1 << 20 }, (_, i) => (i * 31 + 7) & 0xff);
      await store.put('every-byte', everyByte);
      await store.put('zeros', zeros);
      await store.put('empty', empty);
      await store.put('large', large);
      await store.put('from-buffer', Buffer.from([0, 255, 0]));

      // deepEqual is strict here: a Buffer would not equal a Uint8Array.
      assert.deepEqual(await store.get('every-byte'), everyByte);
      assert.deepEqual(await store.get('zeros'), zeros);
      assert.deepEqual(await store.get('empty'), empty);
      assert.deepEqual(await store.get('large'), large);
      assert.deepEqual(await store.get('from-buffer'), bytes(0, 255, 0));
      const emptyEntries = await collect(store.iterate({ gte: 'empty', lte: 'empty' }));
      assert.deepEqual(emptyEntries, [['empty', empty]]);
    });

    it('copies values in and out', async () => {
      const value = bytes(1, 2, 3);
      await store.put('k', value);
      value[0] = 9;
      const read = await store.get('k');
      assert.ok(read !== undefined);
      read[1] = 9;
      assert.deepEqual(await store.get('k'), bytes(1, 2, 3));
    });

    it('gets many keys in the order asked, undefined for missing ones', async () => {
      await store.put('a', bytes(1));
      await store.put('c', bytes(3));
      assert.deepEqual(await store.getMany(['c', 'b', 'a']), [bytes(3), undefined, bytes(1)]);
      assert.deepEqual(await store.getMany([]), []);
    });

    it('applies every operation of a batch, in order', async () => {
      await store.put('old', bytes(0));
      await store.batch([
        { type: 'put', key: 'a', value: bytes(1) },
        { type: 'put', key: 'b', value: bytes(2) },
        { type: 'del', key: 'old' },
        { type: 'put', key: 'c', value: bytes(3) },
        { type: 'del', key: 'c' },
        { type: 'put', key: 'b', value: bytes(22) },
      ]);
      assert.deepEqual(await collect(store.iterate()), [
        ['a', bytes(1)],
        ['b', bytes(22)],
      ]);
      await store.batch([]);
    });

    it('applies nothing of a batch that holds an invalid operation', async () => {
      const missingValue = { type: 'put', key: 'b' } as unknown as BatchOp;
      await assert.rejects(
        store.batch([{ type: 'put', key: 'a', value: bytes(1) }, missingValue]),
        { name: 'TypeError' },
      );
      const badType = { type: 'merge', key: 'b' } as unknown as BatchOp;
      await assert.rejects(
        store.batch([{ type: 'put', key: 'a', value: bytes(1) }, badType]),
        { name: 'TypeError' },
      );
      assert.equal(await store.get('a'), undefined);
    });

    it('iterates in the byte order of UTF-8 keys', async () => {
      // '\u{10000}' sorts before '\uffff' as JavaScript strings but after it as UTF-8 bytes.
      const keys = ['b', '', 'a', '\u{10000}', 'aa', '\uffff', 'B', 'a\u0000', '~'];
      for (const [i, key] of keys.entries()) await store.put(key, bytes(i));
      const expected = [...keys].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
      assert.deepEqual(expected.slice(-2), ['\uffff', '\u{10000}']);
      assert.deepEqual(await collectKeys(store.iterate()), expected);
    });

    it('iterates ranges with gt, gte, lt and lte', async () => {
      await putKeys(store, ['a', 'b', 'c', 'd', 'e']);
      assert.deepEqual(await collectKeys(store.iterate({ gte: 'b', lt: 'd' })), ['b', 'c']);
      assert.deepEqual(await collectKeys(store.iterate({ gt: 'b', lte: 'd' })), ['c', 'd']);
      assert.deepEqual(await collectKeys(store.iterate({ gte: 'bb' })), ['c', 'd', 'e']);
      assert.deepEqual(await collectKeys(store.iterate({ lt: 'b' })), ['a']);
      assert.deepEqual(await collectKeys(store.iterate({ gt: 'c', lt: 'd' })), []);
      assert.deepEqual(await collectKeys(store.iterate({ gte: 'e', lte: 'a' })), []);
    });

    it('iterates with limit and in reverse', async () => {
      await putKeys(store, ['a', 'b', 'c', 'd', 'e']);
      const keysOf = (range: KeyRange): Promise<string[]> => collectKeys(store.iterate(range));
      assert.deepEqual(await keysOf({ limit: 2 }), ['a', 'b']);
      assert.deepEqual(await keysOf({ reverse: true }), ['e', 'd', 'c', 'b', 'a']);
      assert.deepEqual(await keysOf({ reverse: true, limit: 2 }), ['e', 'd']);
      assert.deepEqual(await keysOf({ lt: 'd', reverse: true, limit: 2 }), ['c', 'b']);
      assert.deepEqual(await keysOf({ limit: 0 }), []);
    });

    it('stays usable after an iteration is left early', async () => {
      await putKeys(store, ['a', 'b', 'c']);
      for await (const [key] of store.iterate()) {
        assert.equal(key, 'a');
        break;
      }
      await store.put('d', bytes(4));
      assert.deepEqual(await collectKeys(store.iterate()), ['a', 'b', 'c', 'd']);
    });

    it('rejects arguments of the wrong type with a TypeError', async () => {
      assert.throws(() => store.iterate({ gt: 'a', gte: 'a' }), { name: 'TypeError' });
      assert.throws(() => store.iterate({ limit: -1 }), { name: 'TypeError' });
      await assert.rejects(store.clear({ limit: 1.5 }), { name: 'TypeError' });
      await assert.rejects(store.get(7 as unknown as string), { name: 'TypeError' });
      await assert.rejects(store.put('k', 'text' as unknown as Uint8Array), { name: 'TypeError' });
    });

    it('keeps sublevels apart from each other and from the root', async () => {
      const a = store.sublevel('a');
      const b = store.sublevel('b');
      await store.put('k', bytes(0));
      await a.put('k', bytes(1));
      await b.put('k', bytes(2));
      await a.put('only-a', bytes(1));

      assert.deepEqual(await store.get('k'), bytes(0));
      assert.deepEqual(await a.get('k'), bytes(1));
      assert.deepEqual(await b.get('k'), bytes(2));
      assert.equal(await b.get('only-a'), undefined);
      assert.equal(await store.get('only-a'), undefined);

      assert.deepEqual(await collect(store.iterate()), [['k', bytes(0)]]);
      assert.deepEqual(await collectKeys(a.iterate()), ['k', 'only-a']);
      assert.deepEqual(await collect(b.iterate()), [['k', bytes(2)]]);

      await a.del('k');
      assert.deepEqual(await b.get('k'), bytes(2));
      assert.deepEqual(await store.get('k'), bytes(0));
    });

    it('keeps a nested sublevel apart from its parent', async () => {
      const parent = store.sublevel('raft');
      const child = parent.sublevel('log');
      await parent.put('term', bytes(1));
      await child.put('0001', bytes(2));

      assert.deepEqual(await collectKeys(parent.iterate()), ['term']);
      assert.deepEqual(await collectKeys(child.iterate()), ['0001']);
      await parent.clear();
      assert.deepEqual(await child.get('0001'), bytes(2));
      await store.clear();
      assert.deepEqual(await child.get('0001'), bytes(2));
    });

    it('returns the same view for the same sublevel name', () => {
      assert.equal(store.sublevel('shard-7'), store.sublevel('shard-7'));
      assert.notEqual(store.sublevel('shard-7'), store.sublevel('shard-8'));
    });

    it('accepts only sublevel names of 1 to 64 characters of [a-z0-9-]', () => {
      for (const name of ['', 'A', 'a_b', 'a!b', 'a b', 'é', 'x'.repeat(65)]) {
        assert.throws(() => store.sublevel(name), { name: 'TypeError' }, JSON.stringify(name));
      }
      for (const name of ['a', '0', 'shard-07', 'x'.repeat(64)]) store.sublevel(name);
    });

    it('applies a batch on a sublevel to that sublevel only', async () => {
      const a = store.sublevel('a');
      await store.put('x', bytes(0));
      await a.batch([
        { type: 'put', key: 'x', value: bytes(1) },
        { type: 'put', key: 'y', value: bytes(2) },
      ]);
      assert.deepEqual(await collect(a.iterate()), [
        ['x', bytes(1)],
        ['y', bytes(2)],
      ]);
      assert.deepEqual(await collect(store.iterate()), [['x', bytes(0)]]);
    });

    it('clears a range and nothing else', async () => {
      await putKeys(store, ['a', 'b', 'c', 'd', 'e']);
      await store.clear({ gt: 'a', lte: 'c' });
      assert.deepEqual(await collectKeys(store.iterate()), ['a', 'd', 'e']);
      await store.clear({ reverse: true, limit: 1 });
      assert.deepEqual(await collectKeys(store.iterate()), ['a', 'd']);
      await store.clear();
      assert.deepEqual(await collectKeys(store.iterate()), []);
    });

    it('accepts the sync option on every write', async () => {
      await store.put('a', bytes(1), { sync: true });
      await store.put('b', bytes(2), { sync: false });
      await store.del('b', { sync: true });
      await store.batch([{ type: 'put', key: 'c', value: bytes(3) }], { sync: true });
      await store.sublevel('s').put('d', bytes(4), { sync: true });
      assert.deepEqual(await collectKeys(store.iterate()), ['a', 'c']);
    });

    it('rejects every operation with StorageError CLOSED once closed', async () => {
      const a = store.sublevel('a');
      await a.put('k', bytes(1));
      await store.close();
      assert.equal(store.status, 'closed');
      assert.equal(a.status, 'closed');

      const closed = { name: 'StorageError', code: 'CLOSED' };
      await assert.rejects(store.get('k'), closed);
      await assert.rejects(store.getMany(['k']), closed);
      await assert.rejects(store.put('k', bytes(1)), closed);
      await assert.rejects(store.del('k'), closed);
      await assert.rejects(store.batch([{ type: 'del', key: 'k' }]), closed);
      await assert.rejects(collect(store.iterate()), closed);
      await assert.rejects(store.clear(), closed);
      await assert.rejects(a.get('k'), closed);
      await assert.rejects(store.sublevel('new').get('k'), closed);
      await store.close();
    });

    it('closes a sublevel without closing its store', async () => {
      const a = store.sublevel('a');
      await a.put('k', bytes(1));
      await a.close();
      assert.equal(a.status, 'closed');
      await assert.rejects(a.get('k'), { name: 'StorageError', code: 'CLOSED' });
      await store.put('k', bytes(2));
      assert.deepEqual(await store.get('k'), bytes(2));
      assert.deepEqual(await store.sublevel('b').get('k'), undefined);
    });

    it('stores JSON records', async () => {
      const record = { term: 3, votedFor: 'peer-a', log: [1, 2], nested: { ok: true } };
      await putJson(store, 'hard-state', record, { sync: true });
      assert.deepEqual(await getJson<typeof record>(store, 'hard-state'), record);
      assert.equal(await getJson(store, 'missing'), undefined);

      await store.put('broken', new TextEncoder().encode('{"term":'));
      await assert.rejects(getJson(store, 'broken'), { name: 'StorageError', code: 'CORRUPT' });
      await store.put('not-utf8', bytes(0xff, 0xfe));
      await assert.rejects(getJson(store, 'not-utf8'), { name: 'StorageError', code: 'CORRUPT' });
      await assert.rejects(putJson(store, 'nothing', undefined), { name: 'TypeError' });
    });

    if (implementation.persistent) {
      it('keeps its data across close and reopen', async () => {
        await store.put('root', bytes(1), { sync: true });
        await store.sublevel('a').batch([{ type: 'put', key: 'k', value: bytes(2) }]);
        await store.sublevel('a').sublevel('b').put('k', bytes(3));
        store = await fixture.reopen(store);

        assert.equal(store.status, 'open');
        assert.deepEqual(await collect(store.iterate()), [['root', bytes(1)]]);
        assert.deepEqual(await collect(store.sublevel('a').iterate()), [['k', bytes(2)]]);
        assert.deepEqual(await store.sublevel('a').sublevel('b').get('k'), bytes(3));
      });
    }
  });
}

describe('openDiskStore errors', () => {
  let tempDir: string;

  beforeEach(async () => {
    tempDir = await makeTempDir();
  });

  afterEach(async () => {
    await rm(tempDir, { recursive: true, force: true });
  });

  it('stores keys as the abstract-level sublevel chain does (!name!!_!key), so data dirs of earlier versions read the same', async () => {
    const dir = tempDir;
    {
      const store = await openDiskStore(dir);
      await store.put('root-key', new Uint8Array([1]));
      await store.sublevel('shards').batch([{ type: 'put', key: 'k1', value: new Uint8Array([2]) }]);
      await store.sublevel('a').sublevel('b').put('k2', new Uint8Array([3]));
      await store.sublevel('shards').del('gone');
      await store.close();
      const { ClassicLevel } = await import('classic-level');
      const raw = new ClassicLevel<string, Uint8Array>(path.join(dir, 'db'), { keyEncoding: 'utf8', valueEncoding: 'view' });
      const keys: string[] = [];
      for await (const k of raw.keys()) keys.push(k);
      // And the sublevel chain itself reads what the flat path wrote.
      const viaChain = await raw.sublevel('shards', { valueEncoding: 'view' }).sublevel('_', { valueEncoding: 'view' }).get('k1');
      await raw.close();
      assert.deepEqual(keys, ['!_!root-key', '!a!!b!!_!k2', '!shards!!_!k1']);
      assert.deepEqual([...(viaChain ?? [])], [2]);
    }
  });

  it('refuses a second open in the same process with LOCKED, and opens after close', async () => {
    const dir = path.join(tempDir, 'data');
    const first = await openDiskStore(dir);
    try {
      await assert.rejects(openDiskStore(dir), { name: 'StorageError', code: 'LOCKED', path: dir });
    } finally {
      await first.close();
    }
    const again = await openDiskStore(dir);
    await again.close();
  });

  it('refuses a data directory held by another process with LOCKED', async () => {
    const dir = path.join(tempDir, 'data');
    const holder = startLockHolder(dir);
    try {
      await waitForReady(holder);
      await assert.rejects(openDiskStore(dir), (error: unknown) => {
        assert.ok(error instanceof StorageError);
        assert.equal(error.name, 'StorageError');
        assert.equal(error.code, 'LOCKED');
        assert.equal(error.path, dir);
        return true;
      });
      const exited = once(holder, 'exit');
      holder.stdin?.end();
      assert.deepEqual(await exited, [0, null]);
      const after = await openDiskStore(dir);
      await after.close();
    } finally {
      if (holder.exitCode === null && holder.signalCode === null) holder.kill();
    }
  });

  it('reports a path through a regular file as NOT_WRITABLE', async () => {
    const file = path.join(tempDir, 'file');
    await writeFile(file, 'not a directory');
    const underFile = path.join(file, 'data');
    const notWritable = { name: 'StorageError', code: 'NOT_WRITABLE' };
    await assert.rejects(openDiskStore(underFile), { ...notWritable, path: underFile });
    await assert.rejects(openDiskStore(file), { ...notWritable, path: file });
  });

  it('reports a regular file where the database directory belongs as NOT_WRITABLE', async () => {
    const dir = path.join(tempDir, 'data');
    await mkdir(dir);
    await writeFile(path.join(dir, 'db'), 'not a directory');
    const notWritable = { name: 'StorageError', code: 'NOT_WRITABLE', path: dir };
    await assert.rejects(openDiskStore(dir), notWritable);
  });
});

/**
 * Starts a Node process that opens a disk store in `dir` (as a second shoal peer would), prints
 * `ready`, and closes the store and exits when its stdin ends.
 */
function startLockHolder(dir: string): ChildProcess {
  const script = `
    const { openDiskStore } = await import(process.env.SHOAL_STORE_MODULE);
    const store = await openDiskStore(process.env.SHOAL_DATA_DIR);
    process.stdout.write('ready\\n');
    process.stdin.resume();
    process.stdin.on('end', async () => {
      await store.close();
      process.exit(0);
    });
  `;
  return spawn(process.execPath, ['--input-type=module', '-e', script], {
    env: {
      ...process.env,
      SHOAL_STORE_MODULE: new URL('../../storage/level-store.js', import.meta.url).href,
      SHOAL_DATA_DIR: dir,
    },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
}

/** Resolves when `child` prints `ready`; rejects if it exits first. */
function waitForReady(child: ChildProcess): Promise<void> {
  return new Promise((resolve, reject) => {
    let output = '';
    const onData = (chunk: Buffer): void => {
      output += chunk.toString('utf8');
      if (output.includes('ready\n')) {
        child.off('exit', onExit);
        resolve();
      }
    };
    const onExit = (code: number | null, signal: NodeJS.Signals | null): void => {
      reject(new Error(`lock holder exited before it was ready (code ${code}, signal ${signal})`));
    };
    child.stdout?.on('data', onData);
    child.once('exit', onExit);
  });
}

function makeTempDir(): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), 'shoal-test-'));
}

function bytes(...values: number[]): Uint8Array {
  return Uint8Array.from(values);
}

async function putKeys(store: KvStore, keys: string[]): Promise<void> {
  await store.batch(keys.map((key) => ({ type: 'put', key, value: bytes(key.length) })));
}

type Entry = [string, Uint8Array];

async function collect(entries: AsyncIterable<Entry>): Promise<Entry[]> {
  const result: Entry[] = [];
  for await (const entry of entries) result.push(entry);
  return result;
}

async function collectKeys(entries: AsyncIterable<Entry>): Promise<string[]> {
  return (await collect(entries)).map(([key]) => key);
}
