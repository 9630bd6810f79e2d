/**
 * Scenario tests for the Raft core, in the style of etcd's raft_test.go: a few cores wired into
 * an in-memory `TestNetwork` that delivers messages until quiet, with `cut`, `isolate`,
 * `dropWhere` and `recover` to shape what gets through. No timers: time is `tick()`.
 */
import assert from 'node:assert/strict';
import { SeededRandom } from '../../protocols/random.js';
import {
  RaftNode,
  bootstrapStorage,
  emptyStorage,
  decodeRaftMessage,
  encodeRaftMessage,
  encodeConfChange,
  validateRaftConfig,
  DEFAULT_RAFT_CONFIG,
  type ConfState,
  type Entry,
  type HardState,
  type RaftConfig,
  type RaftMessage,
  type RecoveredState,
  type Snapshot,
} from '../../protocols/raft/index.js';

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();
const bytes = (s: string): Uint8Array => textEncoder.encode(s);
const text = (b: Uint8Array): string => textDecoder.decode(b);

interface DurableStore {
  hardState: HardState;
  snapshot?: Snapshot;
  entries: Entry[];
}

/** The application of a test peer: the data of every applied normal entry, in order. */
interface TestApp {
  applied: string[];
  appliedIndex: number;
}

type Filter = (m: RaftMessage) => boolean;

class TestNetwork {
  readonly nodes = new Map<string, RaftNode>();
  readonly stores = new Map<string, DurableStore>();
  readonly apps = new Map<string, TestApp>();
  /** Every message any node emitted, delivered or not. */
  readonly sent: RaftMessage[] = [];
  private queue: RaftMessage[] = [];
  private readonly cuts = new Set<string>();
  private readonly isolated = new Set<string>();
  private filters: Filter[] = [];
  private rewriters: Array<(m: RaftMessage) => RaftMessage> = [];

  constructor(
    ids: string[],
    options: { config?: Partial<RaftConfig>; storage?: (id: string) => RecoveredState; seed?: number } = {},
  ) {
    const seed = options.seed ?? 1;
    ids.forEach((id, k) => {
      const storage = options.storage?.(id) ?? bootstrapStorage(ids);
      this.stores.set(id, { hardState: { ...storage.hardState }, snapshot: storage.snapshot, entries: [...storage.entries] });
      this.apps.set(id, { applied: [], appliedIndex: storage.snapshot?.index ?? 0 });
      this.nodes.set(id, new RaftNode({ id, config: options.config, random: new SeededRandom(seed * 1000 + k), storage }));
    });
    this.config = options.config;
    this.seed = seed;
  }

  private readonly config: Partial<RaftConfig> | undefined;
  private readonly seed: number;

  node(id: string): RaftNode {
    const n = this.nodes.get(id);
    assert.ok(n, `no node ${id}`);
    return n;
  }

  /** Add a brand-new peer with empty storage (to be added by a conf change). */
  addEmptyNode(id: string): RaftNode {
    const storage = emptyStorage();
    this.stores.set(id, { hardState: { ...storage.hardState }, entries: [] });
    this.apps.set(id, { applied: [], appliedIndex: 0 });
    const node = new RaftNode({ id, config: this.config, random: new SeededRandom(this.seed * 1000 + this.nodes.size), storage });
    this.nodes.set(id, node);
    return node;
  }

  /** Run the Ready loop of one node: persist, queue messages, apply, advance. */
  drain(id: string): void {
    const node = this.node(id);
    const store = this.stores.get(id)!;
    const app = this.apps.get(id)!;
    for (let rd = node.ready(); rd !== null; rd = node.ready()) {
      if (rd.snapshot) {
        store.snapshot = rd.snapshot;
        store.entries = [];
      }
      if (rd.entries.length > 0) {
        const first = rd.entries[0]!.index;
        store.entries = store.entries.filter((e) => e.index < first).concat(rd.entries);
      }
      if (rd.hardState) store.hardState = rd.hardState;
      for (const m of rd.messages) {
        this.sent.push(m);
        this.queue.push(m);
      }
      if (rd.snapshot) {
        app.applied = JSON.parse(text(rd.snapshot.data)) as string[];
        app.appliedIndex = rd.snapshot.index;
      }
      for (const e of rd.committed) {
        assert.equal(e.index, app.appliedIndex + 1, `${id} applies ${e.index} after ${app.appliedIndex}`);
        app.appliedIndex = e.index;
        if (e.type === 'normal' && e.data.byteLength > 0) app.applied.push(text(e.data));
      }
      node.advance(rd);
    }
  }

  drainAll(): void {
    for (const id of this.nodes.keys()) this.drain(id);
  }

  private isDropped(m: RaftMessage): boolean {
    if (this.isolated.has(m.from) || this.isolated.has(m.to)) return true;
    if (this.cuts.has(`${m.from}|${m.to}`)) return true;
    return this.filters.some((f) => f(m));
  }

  /** Deliver queued messages (and the ones they cause) until the network is quiet. */
  deliver(maxMessages = 100_000): void {
    this.drainAll();
    let delivered = 0;
    while (this.queue.length > 0) {
      assert.ok(delivered++ < maxMessages, 'network did not quiesce');
      let m = this.queue.shift()!;
      if (this.isDropped(m) || !this.nodes.has(m.to)) continue;
      for (const rewrite of this.rewriters) m = rewrite(m);
      this.node(m.to).step(m);
      this.drain(m.to);
    }
  }

  /** Tick the given nodes (default all) `n` times, delivering after each tick. */
  tick(n = 1, ids: string[] = [...this.nodes.keys()]): void {
    for (let k = 0; k < n; k++) {
      for (const id of ids) this.node(id).tick();
      this.deliver();
    }
  }

  /** Campaign at `id` and deliver; returns the node. */
  campaign(id: string): RaftNode {
    this.node(id).campaign();
    this.deliver();
    return this.node(id);
  }

  cut(a: string, b: string): void {
    this.cuts.add(`${a}|${b}`);
    this.cuts.add(`${b}|${a}`);
  }

  isolate(id: string): void {
    this.isolated.add(id);
  }

  dropWhere(filter: Filter): void {
    this.filters.push(filter);
  }

  /** Deliver messages changed by `rewrite` (e.g. with some entries cut off). */
  rewriteWith(rewrite: (m: RaftMessage) => RaftMessage): void {
    this.rewriters.push(rewrite);
  }

  recover(): void {
    this.cuts.clear();
    this.isolated.clear();
    this.filters = [];
    this.rewriters = [];
  }

  /** Discard queued messages (a "crash" of the wires). */
  clearQueue(): void {
    this.queue = [];
  }

  propose(id: string, data: string): { index: number; term: number } {
    const result = this.node(id).propose(bytes(data));
    this.deliver();
    return result;
  }

  leaders(): string[] {
    return [...this.nodes.entries()].filter(([, n]) => n.role === 'leader').map(([id]) => id);
  }

  /** Rebuild a node from its durable store, as after a crash. */
  restart(id: string): RaftNode {
    const store = this.stores.get(id)!;
    const node = new RaftNode({
      id,
      config: this.config,
      random: new SeededRandom(this.seed * 7777 + this.nodes.size),
      storage: { hardState: { ...store.hardState }, snapshot: store.snapshot, entries: [...store.entries] },
    });
    const app = this.apps.get(id)!;
    app.applied = store.snapshot ? (JSON.parse(text(store.snapshot.data)) as string[]) : [];
    app.appliedIndex = store.snapshot?.index ?? 0;
    this.nodes.set(id, node);
    return node;
  }

  /** Snapshot the application of `id` at its applied index and compact its log. */
  compact(id: string): Snapshot {
    const app = this.apps.get(id)!;
    const snapshot = this.node(id).compact(app.appliedIndex, bytes(JSON.stringify(app.applied)));
    const store = this.stores.get(id)!;
    store.snapshot = snapshot;
    store.entries = store.entries.filter((e) => e.index > snapshot.index);
    return snapshot;
  }
}

/** A log for `storage` options: one entry per term in `terms`, at indexes 1.. */
function logWithTerms(terms: number[]): Entry[] {
  return terms.map((term, k) => ({ index: k + 1, term, type: 'normal', data: bytes(`e${k + 1}t${term}`) }));
}

function storageWith(conf: ConfState, terms: number[], hardTerm: number): RecoveredState {
  return {
    hardState: { term: hardTerm, vote: null, commit: 0 },
    snapshot: { index: 0, term: 0, config: conf, data: bytes('[]') },
    entries: logWithTerms(terms),
  };
}

const ids3 = ['n1', 'n2', 'n3'];
const ids5 = ['n1', 'n2', 'n3', 'n4', 'n5'];

function electedNetwork(ids = ids3, config: Partial<RaftConfig> = {}): TestNetwork {
  const net = new TestNetwork(ids, { config });
  net.campaign(ids[0]!);
  assert.equal(net.node(ids[0]!).role, 'leader');
  return net;
}

describe('raft core', () => {
  describe('leader election', () => {
    it('elects a leader with a pre-vote round and replicates its empty entry', () => {
      const net = new TestNetwork(ids3);
      const n1 = net.campaign('n1');
      assert.equal(n1.role, 'leader');
      assert.equal(n1.term, 2, 'bootstrap is term 1; the pre-vote round did not bump the term');
      for (const id of ['n2', 'n3']) {
        assert.equal(net.node(id).role, 'follower');
        assert.equal(net.node(id).leader, 'n1');
        assert.equal(net.node(id).term, 2);
      }
      // Bootstrap (3 conf entries) + the new leader's empty entry, committed everywhere.
      for (const id of ids3) assert.equal(net.node(id).commitIndex, 4);
    });

    it('elects a leader by ticking alone (randomized timeouts, no campaign call)', () => {
      const net = new TestNetwork(ids5, { seed: 7 });
      net.tick(2 * DEFAULT_RAFT_CONFIG.electionTicks + 1);
      assert.equal(net.leaders().length, 1);
      const leader = net.leaders()[0]!;
      for (const id of ids5) assert.equal(net.node(id).leader, leader);
    });

    it('a candidate without a quorum does not win; a split vote resolves by randomized timeouts', () => {
      const net = new TestNetwork(ids3, { config: { preVote: false } });
      net.isolate('n3');
      // n1 and n2 both campaign for term 2 at the same moment: each votes for itself.
      net.node('n1').campaign();
      net.node('n2').campaign();
      net.deliver();
      assert.equal(net.node('n1').role, 'candidate');
      assert.equal(net.node('n2').role, 'candidate');
      assert.equal(net.leaders().length, 0);
      net.recover();
      for (let k = 0; k < 100 && net.leaders().length === 0; k++) net.tick();
      assert.equal(net.leaders().length, 1);
      assert.ok(net.node(net.leaders()[0]!).term > 2);
    });

    it('a peer that voted for another in a term refuses a second candidate in that term', () => {
      const net = new TestNetwork(ids3, { config: { preVote: false } });
      net.isolate('n3');
      net.campaign('n1');
      assert.equal(net.node('n1').role, 'leader'); // n2 voted for n1 in term 2
      net.recover();
      net.isolate('n1');
      // n3 is at term 1; campaigning takes it to term 2 where n2 has already voted.
      net.campaign('n3');
      assert.equal(net.node('n3').role, 'candidate');
      assert.equal(net.node('n3').term, 2);
    });

    it('pre-vote stops a partitioned peer from inflating terms; rejoining does not disrupt the leader', () => {
      const net = electedNetwork();
      const term = net.node('n1').term;
      net.isolate('n3');
      net.tick(20 * DEFAULT_RAFT_CONFIG.electionTicks, ['n3']);
      assert.equal(net.node('n3').term, term, 'pre-vote rounds never change the term');
      assert.equal(net.node('n3').role, 'pre-candidate');
      net.recover();
      net.tick(3);
      assert.equal(net.node('n1').role, 'leader');
      assert.equal(net.node('n1').term, term);
      assert.equal(net.node('n3').role, 'follower');
      assert.equal(net.node('n3').leader, 'n1');
    });

    it('without pre-vote a partitioned peer inflates its term (the contrast case)', () => {
      const net = electedNetwork(ids3, { preVote: false, checkQuorum: false });
      const term = net.node('n1').term;
      net.isolate('n3');
      net.tick(20 * DEFAULT_RAFT_CONFIG.electionTicks, ['n3']);
      assert.ok(net.node('n3').term > term + 5);
    });

    it('a follower that hears from its leader ignores vote requests (leader lease)', () => {
      const net = electedNetwork();
      const term = net.node('n1').term;
      // n3 forces a campaign while n1 is alive: n2 is inside its lease and ignores it.
      net.campaign('n3');
      assert.equal(net.node('n1').role, 'leader');
      assert.equal(net.node('n1').term, term);
      assert.equal(net.node('n2').term, term);
    });

    it('check-quorum: a leader cut off from its quorum steps down within an election timeout', () => {
      const net = electedNetwork();
      net.isolate('n1');
      net.tick(DEFAULT_RAFT_CONFIG.electionTicks, ['n1']);
      assert.equal(net.node('n1').role, 'follower');
      assert.equal(net.node('n1').leader, null);
    });

    it('a stale leader steps down when it hears a higher term', () => {
      const net = electedNetwork(ids3, { checkQuorum: false });
      net.isolate('n1');
      net.tick(2 * DEFAULT_RAFT_CONFIG.electionTicks + 2, ['n2', 'n3']);
      const newLeader = net.leaders().find((id) => id !== 'n1');
      assert.ok(newLeader);
      assert.equal(net.node('n1').role, 'leader'); // still believes it
      net.recover();
      net.tick(1);
      assert.equal(net.node('n1').role, 'follower');
      assert.equal(net.node('n1').leader, newLeader);
    });

    it('a candidate behind in terms learns the higher term from a rejection', () => {
      const conf: ConfState = { voters: ids3, learners: [] };
      const net = new TestNetwork(ids3, {
        config: { preVote: false },
        storage: (id) => storageWith(conf, [1], id === 'n2' ? 9 : 1),
      });
      net.isolate('n3');
      net.campaign('n1'); // term 2; n2 at term 9 answers with its term
      assert.equal(net.node('n1').term, 9);
      assert.equal(net.node('n1').role, 'follower');
      net.campaign('n1'); // term 10 now wins n2's vote
      assert.equal(net.node('n1').role, 'leader');
    });

    it('keeps its vote across a restart from the durable store', () => {
      const net = new TestNetwork(ids3, { config: { preVote: false } });
      net.isolate('n3');
      net.campaign('n1');
      net.recover();
      const n2 = net.restart('n2');
      assert.equal(n2.term, 2);
      net.isolate('n1');
      net.campaign('n3');
      assert.notEqual(net.node('n3').role, 'leader', 'n2 remembers its vote for n1 in term 2');
    });
  });

  describe('log replication', () => {
    it('replicates and commits proposals; every peer applies the same sequence', () => {
      const net = electedNetwork();
      for (let k = 0; k < 10; k++) net.propose('n1', `v${k}`);
      const expected = Array.from({ length: 10 }, (_, k) => `v${k}`);
      for (const id of ids3) {
        assert.deepEqual(net.apps.get(id)!.applied, expected);
        assert.equal(net.node(id).commitIndex, 14);
      }
    });

    it('a proposal on a follower throws NotLeaderError carrying the leader hint', () => {
      const net = electedNetwork();
      assert.throws(
        () => net.node('n2').propose(bytes('x')),
        (err: Error & { leader?: string | null }) => err.name === 'NotLeaderError' && err.leader === 'n1',
      );
      const fresh = new TestNetwork(ids3);
      assert.throws(
        () => fresh.node('n1').propose(bytes('x')),
        (err: Error & { leader?: string | null }) => err.name === 'NotLeaderError' && err.leader === null,
      );
    });

    it('drops proposals beyond the uncommitted limit and oversize entries', () => {
      const net = electedNetwork(ids3, { maxUncommittedEntries: 3, maxEntryBytes: 8 });
      net.isolate('n1');
      const n1 = net.node('n1');
      n1.propose(bytes('a'));
      n1.propose(bytes('b'));
      n1.propose(bytes('c'));
      assert.throws(() => n1.propose(bytes('d')), (err: Error & { reason?: string }) => err.name === 'ProposalDroppedError' && err.reason === 'too-many-uncommitted');
      net.recover();
      net.tick(1);
      assert.equal(n1.commitIndex, n1.lastIndex);
      assert.throws(() => n1.propose(bytes('123456789')), (err: Error & { reason?: string }) => err.name === 'ProposalDroppedError' && err.reason === 'entry-too-large');
    });

    it('repairs conflicting follower logs (Raft figure 7)', () => {
      // The leader's log (figure 7, top) and follower logs (a)–(f). Each runs with a third peer
      // that holds the leader's log, so the leader can win even when the follower refuses.
      const leaderTerms = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
      const followers: number[][] = [
        [1, 1, 1, 4, 4, 5, 5, 6, 6], // (a) missing one
        [1, 1, 1, 4], // (b) missing many
        [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6], // (c) one extra uncommitted
        [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7], // (d) extra entries of a later term
        [1, 1, 1, 4, 4, 4, 4], // (e) a conflicting term-4 suffix
        [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3], // (f) leader of terms 2 and 3 that never committed
      ];
      const conf: ConfState = { voters: ids3, learners: [] };
      for (const [k, followerTerms] of followers.entries()) {
        const net = new TestNetwork(ids3, {
          config: { maxEntriesPerAppend: 2 },
          storage: (id) =>
            id === 'n1' ? storageWith(conf, leaderTerms, 8) : id === 'n2' ? storageWith(conf, followerTerms, 8) : storageWith(conf, leaderTerms, 8),
        });
        net.campaign('n1');
        assert.equal(net.node('n1').role, 'leader', `case ${k}`);
        net.tick(3);
        const expected = net.node('n1').entries().map((e) => `${e.index}/${e.term}`);
        for (const id of ['n2', 'n3']) {
          assert.deepEqual(net.node(id).entries().map((e) => `${e.index}/${e.term}`), expected, `case ${k}, ${id}`);
          assert.deepEqual(net.stores.get(id)!.entries.map((e) => `${e.index}/${e.term}`), expected, `case ${k}, durable ${id}`);
          assert.equal(net.node(id).commitIndex, leaderTerms.length + 1);
        }
      }
    });

    it('commits only entries of the current term by counting replicas (Raft figure 8)', () => {
      const config = { preVote: false, checkQuorum: false, maxEntriesPerAppend: 1 };
      const net = new TestNetwork(ids5, { config });
      // (a) n1 leads term 2 and gets entry A (index 7, term 2) to n2 only.
      net.campaign('n1');
      assert.equal(net.node('n1').commitIndex, 6);
      for (const id of ['n3', 'n4', 'n5']) net.cut('n1', id);
      net.propose('n1', 'A');
      assert.equal(net.node('n2').entryAt(7)?.term, 2);
      // (b) n1 is gone; n5 wins term 3 with n3 and n4, appends B (index 7, term 3) only locally.
      net.recover();
      net.isolate('n1');
      net.dropWhere((m) => m.from === 'n5' && m.type === 'append');
      net.campaign('n5');
      assert.equal(net.node('n5').role, 'leader');
      assert.equal(net.node('n5').term, 3);
      assert.equal(net.node('n5').entryAt(7)?.term, 3);
      // (c) n1 comes back without n5, wins term 4, replicates A to a majority — but not its own
      // term-4 entry (index 8). A is on n1, n2, n3, n4: a majority, yet must not be committed.
      net.recover();
      net.isolate('n5');
      net.rewriteWith((m) => (m.type === 'append' ? { ...m, entries: m.entries.filter((e) => e.index < 8) } : m));
      net.restart('n1'); // it crashed; it restarts from its durable store at term 2
      net.campaign('n1');
      if (net.node('n1').role !== 'leader') net.campaign('n1'); // the first try only caught up the term
      assert.equal(net.node('n1').role, 'leader');
      assert.equal(net.node('n1').term, 4);
      for (const id of ['n1', 'n2', 'n3', 'n4']) assert.equal(net.node(id).entryAt(7)?.term, 2, id);
      assert.equal(net.node('n1').commitIndex, 6, 'a term-2 entry on a majority is not committed by a term-4 leader');
      // (d) n1 dies; n5 (last entry term 3) can win and overwrite A everywhere. Safe, because A
      // was never committed.
      net.recover();
      net.isolate('n1');
      net.restart('n5');
      net.campaign('n5');
      if (net.node('n5').role !== 'leader') net.campaign('n5');
      assert.equal(net.node('n5').role, 'leader');
      for (const id of ['n2', 'n3', 'n4', 'n5']) {
        assert.equal(net.node(id).entryAt(7)?.term, 3, id);
        assert.equal(net.node(id).commitIndex, 8, id);
        assert.deepEqual(net.apps.get(id)!.applied, [], 'A never applied anywhere');
      }
      assert.deepEqual(net.apps.get('n1')!.applied, []);
    });

    it('flow control: at most maxInflightAppends unacknowledged appends per follower', () => {
      const net = electedNetwork(ids3, { maxInflightAppends: 2, maxEntriesPerAppend: 1 });
      net.tick(1);
      net.dropWhere((m) => m.to === 'n3'); // n3 never answers
      const before = net.sent.length;
      for (let k = 0; k < 10; k++) net.propose('n1', `v${k}`);
      const appendsToN3 = net.sent.slice(before).filter((m) => m.type === 'append' && m.to === 'n3' && m.entries.length > 0);
      assert.equal(appendsToN3.length, 2);
      net.recover();
      net.tick(5);
      assert.equal(net.node('n3').commitIndex, net.node('n1').commitIndex);
      assert.equal(net.apps.get('n3')!.applied.length, 10);
    });

    it('catches up a follower that was down, after a restart from its durable store', () => {
      const net = electedNetwork();
      net.propose('n1', 'a');
      net.isolate('n3');
      net.propose('n1', 'b');
      net.restart('n3');
      net.recover();
      net.propose('n1', 'c');
      net.tick(2);
      assert.deepEqual(net.apps.get('n3')!.applied, ['a', 'b', 'c']);
    });
  });

  describe('a follower that lost the tail of its log', () => {
    it('restarts without refusing (commit clamped), and the leader sends the lost entries again', () => {
      const net = electedNetwork();
      for (const v of ['a', 'b', 'c', 'd']) net.propose('n1', v);
      net.tick(2);
      assert.deepEqual(net.apps.get('n3')!.applied, ['a', 'b', 'c', 'd']);
      // n3 dies; the last two entries never reached its disk, though its commit index did.
      const store = net.stores.get('n3')!;
      const commit = store.hardState.commit;
      store.entries = store.entries.slice(0, -2);
      const node = net.restart('n3');
      assert.deepEqual(node.recoveredLostTail, { committed: commit, lastIndex: commit - 2 });
      assert.equal(node.status.commitIndex, commit - 2);
      // It may have been one of the majority holding the lost entries: no campaign, no vote
      // until it has committed past them again.
      const sentBefore = net.sent.length;
      for (let t = 0; t < 100; t++) node.tick();
      net.drain('n3');
      assert.equal(node.status.role, 'follower');
      assert.ok(!net.sent.slice(sentBefore).some((m) => m.from === 'n3' && m.type === 'vote'), 'no (pre-)vote request while refilling');
      net.propose('n1', 'e');
      net.tick(4);
      assert.deepEqual(net.apps.get('n3')!.applied, ['a', 'b', 'c', 'd', 'e']);
      assert.equal(net.node('n3').status.commitIndex, net.node('n1').status.commitIndex);
    });
  });

  describe('membership changes', () => {
    it('refuses a conf change until the new leader commits an entry of its term, and one at a time', () => {
      const net = new TestNetwork(ids3);
      net.dropWhere((m) => m.type === 'append'); // n1 wins, but its empty entry reaches nobody
      net.campaign('n1');
      const n1 = net.node('n1');
      assert.equal(n1.role, 'leader');
      assert.ok(n1.commitIndex < n1.lastIndex);
      const pending = (err: Error & { reason?: string }): boolean => err.name === 'ProposalDroppedError' && err.reason === 'conf-change-pending';
      assert.throws(() => n1.proposeConfChange({ type: 'add-learner', node: 'n4' }), pending);
      net.recover();
      net.tick(1);
      assert.equal(n1.commitIndex, n1.lastIndex);
      n1.proposeConfChange({ type: 'add-learner', node: 'n4' });
      assert.throws(() => n1.proposeConfChange({ type: 'add-learner', node: 'n5' }), pending);
      net.deliver();
      assert.throws(
        () => n1.proposeConfChange({ type: 'remove-node', node: 'n9' }),
        (err: Error & { reason?: string }) => err.name === 'ProposalDroppedError' && err.reason === 'invalid-conf-change',
      );
      n1.proposeConfChange({ type: 'add-learner', node: 'n5' });
    });

    it('adds a voter that starts empty and learns the whole log', () => {
      const net = electedNetwork();
      net.propose('n1', 'a');
      net.addEmptyNode('n4');
      net.node('n1').proposeConfChange({ type: 'add-voter', node: 'n4' });
      net.deliver();
      net.tick(2);
      for (const id of ['n1', 'n2', 'n3', 'n4']) {
        assert.deepEqual(net.node(id).confState.voters, ['n1', 'n2', 'n3', 'n4'], id);
      }
      net.propose('n1', 'b');
      assert.deepEqual(net.apps.get('n4')!.applied, ['a', 'b']);
      // Quorum is now 3 of 4: with n3 and n4 cut off nothing commits.
      net.isolate('n3');
      net.isolate('n4');
      const { index } = net.propose('n1', 'c');
      assert.ok(net.node('n1').commitIndex < index);
    });

    it('adds a learner: it receives the log, never votes, never campaigns; promotion makes it a voter', () => {
      const net = electedNetwork();
      net.addEmptyNode('n4');
      net.node('n1').proposeConfChange({ type: 'add-learner', node: 'n4' });
      net.deliver();
      net.propose('n1', 'a');
      net.tick(2);
      assert.deepEqual(net.apps.get('n4')!.applied, ['a']);
      assert.ok(net.node('n4').isLearner);
      assert.deepEqual(net.node('n1').confState, { voters: ids3, learners: ['n4'] });

      // Never campaigns, however long it waits alone.
      net.isolate('n4');
      const before = net.sent.length;
      net.tick(10 * DEFAULT_RAFT_CONFIG.electionTicks, ['n4']);
      assert.equal(net.sent.slice(before).filter((m) => m.from === 'n4').length, 0);
      assert.equal(net.node('n4').role, 'follower');
      net.recover();

      // Never votes: candidates ask voters only, so n2 with only the learner reachable stays put.
      net.isolate('n1');
      net.cut('n2', 'n3');
      net.tick(3 * DEFAULT_RAFT_CONFIG.electionTicks, ['n2']);
      assert.notEqual(net.node('n2').role, 'leader');
      assert.equal(net.sent.filter((m) => m.type === 'vote' && m.to === 'n4').length, 0);
      net.recover();
      net.tick(3 * DEFAULT_RAFT_CONFIG.electionTicks);
      const leader = net.leaders()[0]!;
      assert.ok(leader !== 'n4');

      // Promote it: it becomes a voter everywhere and can lead.
      net.node(leader).proposeConfChange({ type: 'promote-learner', node: 'n4' });
      net.deliver();
      net.tick(2);
      for (const id of ['n1', 'n2', 'n3', 'n4']) assert.deepEqual(net.node(id).confState, { voters: ['n1', 'n2', 'n3', 'n4'], learners: [] }, id);
      net.node(leader).transferLeadership('n4');
      net.deliver();
      assert.equal(net.node('n4').role, 'leader');
    });

    it('removes a follower: quorum shrinks and it stops getting entries', () => {
      const net = electedNetwork();
      net.node('n1').proposeConfChange({ type: 'remove-node', node: 'n3' });
      net.deliver();
      net.tick(1);
      assert.deepEqual(net.node('n1').confState.voters, ['n1', 'n2']);
      net.isolate('n3');
      net.propose('n1', 'x');
      assert.deepEqual(net.apps.get('n2')!.applied, ['x']);
      assert.equal(net.node('n1').progressOf('n3'), null);
    });

    it('removes the leader: it commits its removal, steps down, never campaigns; the rest elect', () => {
      const net = electedNetwork();
      const { index } = net.node('n1').proposeConfChange({ type: 'remove-node', node: 'n1' });
      net.deliver();
      assert.equal(net.node('n1').role, 'follower');
      assert.ok(net.node('n1').commitIndex >= index);
      for (const id of ['n2', 'n3']) assert.deepEqual(net.node(id).confState.voters, ['n2', 'n3']);
      const before = net.sent.length;
      net.tick(4 * DEFAULT_RAFT_CONFIG.electionTicks);
      assert.equal(net.sent.slice(before).filter((m) => m.type === 'vote' && m.from === 'n1').length, 0);
      assert.equal(net.leaders().length, 1);
      const leader = net.leaders()[0]!;
      assert.ok(leader === 'n2' || leader === 'n3');
      net.propose(leader, 'after');
      assert.deepEqual(net.apps.get(leader === 'n2' ? 'n3' : 'n2')!.applied, ['after']);
    });
  });

  describe('snapshots', () => {
    it('installs a snapshot on a follower that needs compacted entries', () => {
      const net = electedNetwork();
      net.isolate('n3');
      for (let k = 0; k < 20; k++) net.propose('n1', `v${k}`);
      const snapshot = net.compact('n1');
      assert.equal(snapshot.index, 24);
      assert.deepEqual(snapshot.config, { voters: ids3, learners: [] });
      assert.equal(net.node('n1').entries().length, 0);
      net.recover();
      const before = net.sent.length;
      net.tick(2);
      assert.equal(net.sent.slice(before).filter((m) => m.type === 'snapshot' && m.to === 'n3').length, 1);
      assert.equal(net.node('n3').snapshot.index, 24);
      assert.equal(net.stores.get('n3')!.snapshot?.index, 24);
      net.propose('n1', 'after');
      assert.deepEqual(net.apps.get('n3')!.applied, [...Array.from({ length: 20 }, (_, k) => `v${k}`), 'after']);
      // A restart recovers from the installed snapshot plus the entries after it.
      net.restart('n3');
      net.tick(2);
      assert.deepEqual(net.apps.get('n3')!.applied, [...Array.from({ length: 20 }, (_, k) => `v${k}`), 'after']);
    });

    it('retries a lost snapshot after snapshotRetryTicks', () => {
      const net = electedNetwork(ids3, { snapshotRetryTicks: 5 });
      net.isolate('n3');
      for (let k = 0; k < 5; k++) net.propose('n1', `v${k}`);
      net.compact('n1');
      net.recover();
      net.dropWhere((m) => m.type === 'snapshot');
      net.tick(2);
      assert.equal(net.node('n3').snapshot.index, 0);
      net.recover();
      net.tick(6);
      assert.equal(net.node('n3').snapshot.index, 9);
    });

    it('refuses to compact beyond the applied index', () => {
      const net = electedNetwork();
      assert.throws(() => net.node('n1').compact(100, bytes('x')), { name: 'CompactionError' });
    });
  });

  describe('leadership transfer', () => {
    it('hands leadership to an up-to-date voter; proposals are dropped meanwhile', () => {
      const net = electedNetwork();
      const term = net.node('n1').term;
      net.node('n1').transferLeadership('n2');
      assert.throws(
        () => net.node('n1').propose(bytes('x')),
        (err: Error & { reason?: string }) => err.name === 'ProposalDroppedError' && err.reason === 'transferring',
      );
      net.deliver();
      assert.equal(net.node('n2').role, 'leader');
      assert.equal(net.node('n2').term, term + 1);
      assert.equal(net.node('n1').leader, 'n2');
    });

    it('brings a lagging target up to date first', () => {
      const net = electedNetwork();
      net.isolate('n3');
      for (let k = 0; k < 5; k++) net.propose('n1', `v${k}`);
      net.recover();
      net.node('n1').transferLeadership('n3');
      net.deliver();
      net.tick(2);
      assert.equal(net.node('n3').role, 'leader');
      assert.equal(net.apps.get('n3')!.applied.length, 5);
    });

    it('gives up after an election timeout when the target does not answer', () => {
      const net = electedNetwork();
      net.isolate('n3');
      net.node('n1').transferLeadership('n3');
      net.tick(DEFAULT_RAFT_CONFIG.electionTicks, ['n1', 'n2']);
      assert.equal(net.node('n1').role, 'leader');
      assert.equal(net.node('n1').status.transferee, null);
      net.propose('n1', 'ok');
    });

    it('rejects a transfer to a non-voter', () => {
      const net = electedNetwork();
      assert.throws(() => net.node('n1').transferLeadership('n9'), { name: 'TransferError' });
      assert.throws(() => net.node('n2').transferLeadership('n3'), { name: 'NotLeaderError' });
    });
  });

  describe('codec', () => {
    const entry: Entry = { index: 5, term: 2, type: 'normal', data: bytes('hello') };
    const messages: RaftMessage[] = [
      { type: 'append', from: 'a', to: 'b', term: 2, prevIndex: 4, prevTerm: 1, entries: [entry, { index: 6, term: 2, type: 'conf-change', data: encodeConfChange({ type: 'add-learner', node: 'c' }) }], commit: 3 },
      { type: 'append-response', from: 'b', to: 'a', term: 2, index: 6, reject: false, hintIndex: 0, hintTerm: 0 },
      { type: 'vote', from: 'a', to: 'b', term: 3, pre: true, lastIndex: 6, lastTerm: 2, transfer: false },
      { type: 'vote-response', from: 'b', to: 'a', term: 3, pre: true, granted: true },
      { type: 'heartbeat', from: 'a', to: 'b', term: 2, commit: 6 },
      { type: 'heartbeat-response', from: 'b', to: 'a', term: 2 },
      { type: 'snapshot', from: 'a', to: 'b', term: 2, snapshot: { index: 6, term: 2, config: { voters: ['a', 'b'], learners: ['c'] }, data: new Uint8Array([0, 255, 7]) } },
      { type: 'timeout-now', from: 'a', to: 'b', term: 2 },
    ];

    it('round-trips every message type', () => {
      for (const m of messages) assert.deepEqual(decodeRaftMessage(encodeRaftMessage(m)), m);
    });

    it('rejects garbage with InvalidMessageError', () => {
      const valid = JSON.parse(text(encodeRaftMessage(messages[0]!))) as Record<string, unknown>;
      const mutate = (patch: Record<string, unknown>): Uint8Array => bytes(JSON.stringify({ ...valid, ...patch }));
      const bad: Uint8Array[] = [
        new Uint8Array([0xff, 0xfe, 0x00]),
        bytes('not json'),
        bytes('null'),
        bytes('[]'),
        bytes('{}'),
        mutate({ v: 2 }),
        mutate({ type: 'bogus' }),
        mutate({ from: '' }),
        mutate({ to: 'x'.repeat(129) }),
        mutate({ term: -1 }),
        mutate({ term: 1.5 }),
        mutate({ term: '2' }),
        mutate({ prevIndex: 2 ** 60 }),
        mutate({ entries: 'nope' }),
        mutate({ entries: [{ index: 7, term: 2, type: 'normal', data: '' }] }), // not contiguous
        mutate({ entries: [{ index: 5, term: 9, type: 'normal', data: '' }] }), // newer than message term
        mutate({ entries: [{ index: 5, term: 2, type: 'weird', data: '' }] }),
        mutate({ entries: [{ index: 5, term: 2, type: 'normal', data: '!!!' }] }),
        mutate({ entries: [{ index: 5, term: 2, type: 'conf-change', data: 'e30=' }] }), // "{}"
        mutate({ entries: Array.from({ length: 5000 }, (_, k) => ({ index: 5 + k, term: 2, type: 'normal', data: '' })) }),
        bytes(JSON.stringify({ v: 1, type: 'vote', from: 'a', to: 'b', term: 1, pre: 'yes', lastIndex: 0, lastTerm: 0, transfer: false })),
        bytes(JSON.stringify({ v: 1, type: 'snapshot', from: 'a', to: 'b', term: 2, snapshot: { index: 1, term: 1, config: { voters: ['a', 'a'], learners: [] }, data: '' } })),
        bytes(JSON.stringify({ v: 1, type: 'snapshot', from: 'a', to: 'b', term: 2, snapshot: { index: 1, term: 1, config: { voters: ['a'], learners: ['a'] }, data: '' } })),
      ];
      for (const [k, b] of bad.entries()) {
        assert.throws(() => decodeRaftMessage(b), { name: 'InvalidMessageError' }, `case ${k}`);
      }
      assert.throws(() => decodeRaftMessage(encodeRaftMessage(messages[0]!), { maxMessageBytes: 10 }), { name: 'InvalidMessageError' });
    });

    it('never throws anything but InvalidMessageError on random bytes', () => {
      const random = new SeededRandom(42);
      const sample = encodeRaftMessage(messages[0]!);
      for (let k = 0; k < 2000; k++) {
        const b = Uint8Array.from(sample);
        for (let j = 0; j < 1 + random.int(0, 4); j++) b[random.int(0, b.length - 1)] = random.int(0, 255);
        try {
          decodeRaftMessage(b);
        } catch (err) {
          assert.equal((err as Error).name, 'InvalidMessageError');
        }
      }
    });
  });

  describe('config', () => {
    it('validates each field and names it', () => {
      const cases: Array<[Partial<RaftConfig>, keyof RaftConfig]> = [
        [{ electionTicks: 1 }, 'electionTicks'],
        [{ heartbeatTicks: 0 }, 'heartbeatTicks'],
        [{ heartbeatTicks: 10, electionTicks: 10 }, 'heartbeatTicks'],
        [{ maxInflightAppends: 0 }, 'maxInflightAppends'],
        [{ tickIntervalMs: 0.5 }, 'tickIntervalMs'],
        [{ preVote: 'yes' as unknown as boolean }, 'preVote'],
      ];
      for (const [patch, field] of cases) {
        assert.throws(() => validateRaftConfig({ ...DEFAULT_RAFT_CONFIG, ...patch }), (err: Error & { field?: string }) => err.name === 'ConfigError' && err.field === field);
        assert.throws(() => new RaftNode({ id: 'a', random: new SeededRandom(1), storage: emptyStorage(), config: patch }), { name: 'ConfigError' });
      }
    });
  });
});
