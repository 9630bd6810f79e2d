/**
 * The Raft simulation swarm under mocha: many seeds, mixed 3 and 5 founding voters (plus one
 * spare peer for conf changes), each a safety phase with faults then a liveness phase. A failure
 * names the seed and the command that replays it. More seeds: `npm run sim -- --seeds 20000`.
 * RAFT_SIM_SEEDS scales the count here (default 3000, about 8 s).
 */
import assert from 'node:assert/strict';
import { addStats, emptyStats, peersForSeed, runRaftSim } from './raft-sim.js';

const totalSeeds = Number(process.env.RAFT_SIM_SEEDS ?? 3000);
const batchSize = 250;

describe('raft simulation swarm', function () {
  this.timeout(120_000);
  const total = emptyStats();

  for (let start = 1; start <= totalSeeds; start += batchSize) {
    const end = Math.min(totalSeeds, start + batchSize - 1);
    it(`seeds ${start}..${end} (odd: 3 peers, even: 5 peers) keep every invariant and recover liveness`, () => {
      for (let seed = start; seed <= end; seed++) addStats(total, runRaftSim({ seed, peers: peersForSeed(seed) }));
    });
  }

  it('exercised every kind of fault and change across the seeds', () => {
    if (totalSeeds < 200) return;
    assert.ok(total.leadersElected > totalSeeds, 'elections');
    assert.ok(total.crashes > 0, 'crashes');
    assert.ok(total.snapshotsInstalled > 0, 'snapshot installs');
    assert.ok(total.compactions > 0, 'compactions');
    assert.ok(total.confChangesCommitted > 0, 'conf changes');
    assert.ok(total.transfers > 0, 'transfers');
    assert.ok(total.committedEntries > totalSeeds * 10, 'commits');
  });

  const byzantineSeeds = Math.max(1, Math.floor(totalSeeds / 6));
  const byzantine = emptyStats();
  it(`Byzantine mode: seeds 1..${byzantineSeeds} with a stranger forging every kind of message keep every invariant and recover liveness`, () => {
    for (let seed = 1; seed <= byzantineSeeds; seed++) {
      addStats(byzantine, runRaftSim({ seed, peers: peersForSeed(seed), byzantineProbability: [0.1, 0.5, 1][seed % 3] }));
    }
    assert.ok(byzantine.forgedRefused > byzantineSeeds, `forged messages refused: ${byzantine.forgedRefused}`);
    assert.ok(byzantine.leadersElected >= byzantineSeeds, 'elections still happen');
  });

  it('replays a seed exactly', () => {
    const a = runRaftSim({ seed: 4242, peers: 5 });
    const b = runRaftSim({ seed: 4242, peers: 5 });
    assert.deepEqual(a, b);
  });
});
