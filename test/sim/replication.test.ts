/**
 * The replication simulation swarm under mocha: many seeds of one shard with three replicas, a
 * safety phase with faults (drop, duplicate, delay/reorder, partitions, coordinator cuts, pauses,
 * crash-restart) then a liveness phase after healing. A failure names the seed and the command
 * that replays it. REPLICATION_SIM_SEEDS scales the count (default 600); SHOAL_SEED=N runs one
 * seed with a trace.
 */
import assert from 'node:assert/strict';
import { addStats, emptyStats, runReplicationSim } from './replication-sim.js';

const onlySeed = process.env.SHOAL_SEED === undefined ? null : Number(process.env.SHOAL_SEED);
const totalSeeds = Number(process.env.REPLICATION_SIM_SEEDS ?? 600);
const batchSize = 100;

describe('replication simulation swarm', function () {
  this.timeout(120_000);

  if (onlySeed !== null) {
    it(`replays seed ${onlySeed}`, () => {
      const stats = runReplicationSim({ seed: onlySeed, trace: process.env.SHOAL_TRACE === '1' });
      console.log(JSON.stringify(stats));
    });
    return;
  }

  const total = emptyStats();
  for (let start = 1; start <= totalSeeds; start += batchSize) {
    const end = Math.min(totalSeeds, start + batchSize - 1);
    it(`seeds ${start}..${end} keep every invariant and recover liveness after healing`, () => {
      for (let seed = start; seed <= end; seed++) addStats(total, runReplicationSim({ seed }));
    });
  }

  it('exercised every kind of fault and change across the seeds', () => {
    if (totalSeeds < 200) return;
    console.log(`      ${JSON.stringify({ ...total, seed: undefined })}`);
    assert.ok(total.writesOk > totalSeeds * 20, 'acknowledged writes');
    assert.ok(total.failovers > 0, 'failovers');
    assert.ok(total.shrinks > 0, 'in-sync shrinks');
    assert.ok(total.expands > 0, 'in-sync expands');
    assert.ok(total.crashes > 0, 'crashes');
    assert.ok(total.moves > 0, 'replica moves to an empty disk');
    assert.ok(total.snapshotsInstalled > 0, 'snapshot installs');
    assert.ok(total.truncations > 0, 'reconciliation truncations');
    assert.ok(total.writesIndeterminate > 0, 'indeterminate writes');
    assert.ok(total.sendEarlyReplicas > 0 && total.answerEarlyReplicas > 0, 'pipelined shells');
    assert.ok(total.primaryRestarts > 0 && total.epochRenewals > 0, 'primaries restarted within their lease, and fresh epochs');
    assert.ok(total.strongReads > 0 && total.readsFromLog > 0, 'strong reads, some from committed groups not yet applied');
  });

  it('replays a seed exactly', () => {
    const a = runReplicationSim({ seed: 4242 });
    const b = runReplicationSim({ seed: 4242 });
    assert.deepEqual(a, b);
  });
});
