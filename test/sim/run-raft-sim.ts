/**
 * Run the Raft simulation swarm from the command line:
 *
 *   node dist/test/sim/run-raft-sim.js --seeds N [--start S] [--peers 3|5]
 *   node dist/test/sim/run-raft-sim.js --seed S [--peers 3|5] [--verbose | --trace]
 *   ... --byzantine P   a stranger forges a message with probability P per tick (0 < P ≤ 1)
 *
 * Without --peers, odd seeds run 3 founding voters and even seeds 5. Exits 1 on the first
 * failing seed, printing it and the replay command.
 */
import { addStats, emptyStats, peersForSeed, runRaftSim, SimFailure } from './raft-sim.js';

function usage(problem: string): never {
  console.error(`${problem}\nusage: run-raft-sim --seeds N [--start S] [--peers 3|5] | --seed S [--peers 3|5] [--verbose | --trace] [--byzantine P]`);
  process.exit(2);
}

let byzantine: number | undefined;

function parseArgs(argv: string[]): { start: number; count: number; peers: number | null; verbose: boolean; trace: boolean } {
  let start = 1;
  let count = 1000;
  let peers: number | null = null;
  let verbose = false;
  let trace = false;
  let single: number | null = null;
  for (let k = 0; k < argv.length; k++) {
    const arg = argv[k]!;
    const value = (): number => {
      const v = Number(argv[++k]);
      if (!Number.isSafeInteger(v) || v < 0) usage(`${arg} needs a non-negative integer`);
      return v;
    };
    if (arg === '--seeds') count = value();
    else if (arg === '--start') start = value();
    else if (arg === '--seed') single = value();
    else if (arg === '--peers') {
      peers = value();
      if (peers !== 3 && peers !== 5) usage('--peers must be 3 or 5');
    } else if (arg === '--byzantine') {
      byzantine = Number(argv[++k]);
      if (!(byzantine > 0 && byzantine <= 1)) usage('--byzantine needs a probability in (0, 1]');
    } else if (arg === '--verbose') verbose = true;
    else if (arg === '--trace') {
      verbose = true;
      trace = true;
    }
    else usage(`unknown argument ${arg}`);
  }
  if (single !== null) return { start: single, count: 1, peers, verbose, trace };
  return { start, count, peers, verbose, trace };
}

const args = parseArgs(process.argv.slice(2));
const total = emptyStats();
const started = process.hrtime.bigint();
for (let seed = args.start; seed < args.start + args.count; seed++) {
  const peers = args.peers ?? peersForSeed(seed);
  try {
    addStats(total, runRaftSim({ seed, peers, log: args.verbose ? (line) => console.log(line) : undefined, traceMessages: args.trace, byzantineProbability: byzantine }));
  } catch (err) {
    if (err instanceof SimFailure) {
      console.error(err.message);
      process.exit(1);
    }
    throw err;
  }
}
const elapsedMs = Number(process.hrtime.bigint() - started) / 1e6;
console.log(JSON.stringify({ seeds: args.count, start: args.start, elapsedMs: Math.round(elapsedMs), ...total }));
