import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { PeerStatus } from '../../node/peer.js';
import { makeTempDir, ProcessPeer, removeDir, waitFor } from './harness.js';

describe('coordinator: 5 shoal processes, coordinator killed and restarted', function () {
  this.timeout(120_000);
  let dir: string;
  const peers: ProcessPeer[] = [];

  async function statuses(ps: ProcessPeer[]): Promise<PeerStatus[]> {
    return Promise.all(ps.map((p) => p.status()));
  }

  before(async () => {
    dir = await makeTempDir();
    const seed = await ProcessPeer.start(join(dir, 'p0'));
    peers.push(seed);
    peers.push(...(await Promise.all([1, 2, 3, 4].map((i) => ProcessPeer.start(join(dir, `p${i}`), { join: [seed.joinToken] })))));
    await waitFor(
      'one coordinator, 3 voters and 2 learners, agreed by all 5',
      async () => {
        const st = await statuses(peers);
        const f = st[0] as PeerStatus;
        return f.coordinator !== null && f.voters.length === 3 && f.learners.length === 2 && st.every((s) => s.coordinator === f.coordinator && s.commitIndex === f.commitIndex);
      },
      { timeoutMs: 30_000 },
    );
  });

  after(async () => {
    await Promise.all(peers.map((p) => p.destroy()));
    await removeDir(dir);
  });

  it('SIGKILL of the coordinator: a new one is elected and a map change commits; the killed peer rejoins as a follower with its log', async () => {
    const before = await (peers[0] as ProcessPeer).status();
    const victim = peers.find((p) => p.peerId === before.coordinator) as ProcessPeer;
    const victimStatus = await victim.status();
    victim.signal('SIGKILL');
    await victim.waitExit();
    const rest = peers.filter((p) => p !== victim);

    // A new coordinator in a higher term, agreed by the rest, that commits entries of its own.
    const elected = await waitFor(
      'a new coordinator that committed an entry',
      async () => {
        const st = await statuses(rest);
        const f = st[0] as PeerStatus;
        const ok =
          f.coordinator !== null &&
          f.coordinator !== victim.peerId &&
          f.term > before.term &&
          st.every((s) => s.coordinator === f.coordinator) &&
          st.some((s) => s.role === 'leader' && s.commitIndex > victimStatus.commitIndex);
        return ok ? f : null;
      },
      { timeoutMs: 15_000 },
    );
    // The map records the dead peer: a cluster-map change committed under the new coordinator.
    await waitFor(
      'the map version to rise on every survivor',
      async () => (await statuses(rest)).every((s) => s.clusterMapVersion > victimStatus.clusterMapVersion),
      { timeoutMs: 15_000 },
    );

    // Restart on the same data dir: its log is recovered from disk before it hears anyone.
    const again = await ProcessPeer.start(victim.dataDir, { join: [(rest[0] as ProcessPeer).joinToken], extraArgs: ['--log-level', 'info'] });
    peers[peers.indexOf(victim)] = again;
    assert.equal(again.peerId, victim.peerId);
    const recovered = again.stderr
      .split('\n')
      .filter((l) => l.includes('"recovered raft state"'))
      .map((l) => JSON.parse(l) as { commit: number; entries: number; term: number });
    assert.equal(recovered.length, 1, 'the restarted peer logs the raft state it recovered');
    assert.ok((recovered[0] as { commit: number }).commit >= victimStatus.commitIndex, 'commit index recovered');
    assert.ok((recovered[0] as { entries: number }).entries >= victimStatus.commitIndex, 'log entries recovered');
    await waitFor(
      'the restarted peer to follow the new coordinator and catch up',
      async () => {
        const s = await again.status();
        const l = await (rest[0] as ProcessPeer).status();
        return s.role === 'follower' && s.coordinator === elected.coordinator && s.commitIndex >= l.commitIndex - 1 && s.voters.includes(again.peerId);
      },
      { timeoutMs: 20_000 },
    );
  });

  /** A healthy cluster: every peer sees all 5 alive and follows the same coordinator. */
  async function waitHealthy(): Promise<PeerStatus> {
    return waitFor(
      'all 5 alive everywhere, one coordinator',
      async () => {
        const st = await statuses(peers);
        const f = st[0] as PeerStatus;
        const ok =
          f.coordinator !== null &&
          st.every((s) => s.coordinator === f.coordinator && peers.every((p) => s.members.find((m) => m.peerId === p.peerId)?.state === 'alive'));
        return ok ? f : null;
      },
      { timeoutMs: 30_000 },
    );
  }

  /** What every peer in `ps` shows, for a failure message. */
  async function describeCluster(ps: ProcessPeer[]): Promise<string> {
    const st = await Promise.all(ps.map((p) => p.status().catch((e: Error) => e.message)));
    return JSON.stringify(
      st.map((s) =>
        typeof s === 'string'
          ? s
          : { peer: s.peerId.slice(-6), role: s.role, term: s.term, commit: s.commitIndex, coordinator: s.coordinator?.slice(-6), voters: s.voters.map((v) => v.slice(-6)), members: s.members.map((m) => `${m.peerId.slice(-6)}:${m.state}`) },
      ),
    );
  }

  it('SIGSTOP of the coordinator: the rest elect another; after SIGCONT the old one follows it', async () => {
    const before = await waitHealthy();
    const frozen = peers.find((p) => p.peerId === before.coordinator) as ProcessPeer;
    const rest = peers.filter((p) => p !== frozen);
    frozen.signal('SIGSTOP');
    let next: PeerStatus;
    try {
      next = await waitFor(
        'a new coordinator among the others',
        async () => {
          const st = await statuses(rest);
          const leader = st.find((s) => s.role === 'leader' && s.term > before.term);
          return leader !== undefined && st.every((s) => s.coordinator === leader.peerId) ? leader : null;
        },
        { timeoutMs: 15_000 },
      ).catch(async (err: Error) => {
        throw new Error(`${err.message}; cluster: ${await describeCluster(rest)}`);
      });
    } finally {
      frozen.signal('SIGCONT');
    }
    await waitFor(
      'the thawed peer to step down and follow the new coordinator',
      async () => {
        const s = await frozen.status();
        return s.role === 'follower' && s.coordinator === next.peerId && s.term >= next.term;
      },
      { timeoutMs: 15_000 },
    );
  });

  it('the bootstrap peer restarted with its first command (no --join) finds the cluster through its map', async () => {
    await waitHealthy();
    const seed = peers[0] as ProcessPeer;
    seed.signal('SIGKILL');
    await seed.waitExit();
    const again = await ProcessPeer.start(seed.dataDir);
    peers[0] = again;
    assert.equal(again.peerId, seed.peerId);
    await waitFor(
      'the restarted seed to see every peer alive and follow the coordinator',
      async () => {
        const s = await again.status();
        const other = await (peers[1] as ProcessPeer).status();
        return (
          s.coordinator !== null &&
          s.coordinator === other.coordinator &&
          peers.every((p) => s.members.find((m) => m.peerId === p.peerId)?.state === 'alive')
        );
      },
      { timeoutMs: 30_000 },
    );
  });
});

describe('coordinator: a voter that stays dead is replaced by a live learner', function () {
  this.timeout(120_000);
  let dir: string;
  const peers: ProcessPeer[] = [];
  const extraArgs = ['--replace-voter-after-ms', '1000'];

  before(async () => {
    dir = await makeTempDir();
    const seed = await ProcessPeer.start(join(dir, 'p0'), { extraArgs });
    peers.push(seed);
    peers.push(...(await Promise.all([1, 2, 3].map((i) => ProcessPeer.start(join(dir, `p${i}`), { join: [seed.joinToken], extraArgs })))));
    await waitFor(
      '3 voters and 1 learner',
      async () => {
        const st = await Promise.all(peers.map((p) => p.status()));
        return st.every((s) => s.coordinator !== null && s.voters.length === 3 && s.learners.length === 1 && s.coordinator === st[0]?.coordinator);
      },
      { timeoutMs: 30_000 },
    );
  });

  after(async () => {
    await Promise.all(peers.map((p) => p.destroy()));
    await removeDir(dir);
  });

  it('SIGKILL a follower voter: after replaceVoterAfterMs it leaves the voters and the learner is promoted', async () => {
    const st = await (peers[0] as ProcessPeer).status();
    const learner = st.learners[0] as string;
    const victim = peers.find((p) => st.voters.includes(p.peerId) && p.peerId !== st.coordinator) as ProcessPeer;
    victim.signal('SIGKILL');
    await victim.waitExit();
    const rest = peers.filter((p) => p !== victim);
    await waitFor(
      'the dead voter replaced by the learner on every survivor',
      async () =>
        (await Promise.all(rest.map((p) => p.status()))).every(
          (s) => !s.voters.includes(victim.peerId) && s.voters.includes(learner) && s.voters.length === 3 && s.learners.length === 0,
        ),
      { timeoutMs: 20_000 },
    );
  });
});
