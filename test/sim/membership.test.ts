/**
 * Deterministic simulation of five membership cores over a lossy broadcast
 * network and a simulated clock, all driven by one seed.
 *
 * Phases: (1) steady with loss: everyone converges to everyone alive and no
 * suspicion ends in a false verdict; (2) one peer is partitioned away: the
 * majority declares it dead within a bound; (3) the partition heals: the peer
 * refutes and is alive everywhere at a higher incarnation.
 *
 * A failure names the seed; replay one with SHOAL_SEED=<seed>. Also:
 * SHOAL_SIM_SEEDS=<n> runs seeds 1..n (a longer search), SHOAL_SIM_TRACE=1
 * prints every event, SHOAL_SIM_STATS=1 prints detection-time statistics.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'mocha';
import { decodeMembershipMessage, encodeMembershipMessage } from '../../protocols/membership/codec.js';
import { DEFAULT_MEMBERSHIP_CONFIG } from '../../protocols/membership/config.js';
import { Membership } from '../../protocols/membership/membership.js';
import type { MemberState, MembershipEvent, MembershipOutput } from '../../protocols/membership/types.js';
import { SeededRandom } from '../../protocols/random.js';

const PEER_COUNT = 5;
const DEFAULT_SEED_COUNT = 50;
const TEST_FILE = 'dist/test/sim/membership.test.js';
const TRACE = process.env.SHOAL_SIM_TRACE !== undefined;

/** Faults, as named probabilities and ranges. */
const FAULTS = {
  lossProbability: 0.1,
  /** A delivered message is delivered a second time (gossipsub dedups, but a core must cope). */
  duplicateProbability: 0.01,
  minDelayMs: 1,
  maxDelayMs: 40,
  /** Each tick lands up to this much after its due time (timer drift). */
  maxTickJitterMs: 5,
};

const PHASES = {
  steadyMs: 20_000,
  /** Bound on convergence to all-alive at the end of the steady phase. */
  convergeWithinMs: 5_000,
  /**
   * Bound on the majority declaring the cut-off peer dead, from the cut: up to
   * two lost heartbeats before it (1000 ms) + phi crossing 8 (~2.0–2.4 s with
   * lossy history) + suspicion timeout (1000 ms) + ticks and delivery.
   */
  declareDeadWithinMs: 5_000,
  /** Bound on everyone seeing everyone alive again after the heal. */
  healWithinMs: 5_000,
  /**
   * After the heal, the cut-off peer's own suspicions (it heard nobody while
   * cut off) may still end in verdicts about healthy peers, which they then
   * refute: SWIM semantics. Those timers all started before the heal, so they
   * run out within the suspicion timeout plus a few heartbeats.
   */
  aftermathMs:
    DEFAULT_MEMBERSHIP_CONFIG.suspicionTimeoutMs + 3 * DEFAULT_MEMBERSHIP_CONFIG.heartbeatIntervalMs,
  /** Then a quiet time during which nobody may be declared dead. */
  settleMs: 5_000,
};

/** Every step loop stops here whatever happens. */
const MAX_STEPS_PER_RUN = 200_000;

interface Step {
  atMs: number;
  seq: number;
  to: number;
  /** Encoded message and its sender; absent for a tick. */
  delivery?: { from: number; bytes: Uint8Array };
}

/** A binary min-heap of steps ordered by (atMs, seq): deterministic order for equal times. */
class StepQueue {
  private readonly heap: Step[] = [];

  get size(): number {
    return this.heap.length;
  }

  push(step: Step): void {
    const h = this.heap;
    h.push(step);
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!StepQueue.before(h[i] as Step, h[parent] as Step)) break;
      [h[i], h[parent]] = [h[parent] as Step, h[i] as Step];
      i = parent;
    }
  }

  peek(): Step | undefined {
    return this.heap[0];
  }

  pop(): Step | undefined {
    const h = this.heap;
    const top = h[0];
    const last = h.pop();
    if (top === undefined || last === undefined || h.length === 0) return top;
    h[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let smallest = i;
      if (l < h.length && StepQueue.before(h[l] as Step, h[smallest] as Step)) smallest = l;
      if (r < h.length && StepQueue.before(h[r] as Step, h[smallest] as Step)) smallest = r;
      if (smallest === i) break;
      [h[i], h[smallest]] = [h[smallest] as Step, h[i] as Step];
      i = smallest;
    }
    return top;
  }

  private static before(a: Step, b: Step): boolean {
    return a.atMs < b.atMs || (a.atMs === b.atMs && a.seq < b.seq);
  }
}

interface LoggedEvent {
  atMs: number;
  viewer: number;
  event: MembershipEvent;
}

class SimFailure extends Error {
  override readonly name = 'SimFailure';
}

/** N cores, one clock, one lossy broadcast network, one seed. */
class Simulation {
  readonly ids: string[];
  readonly cores: Membership[];
  readonly log: LoggedEvent[] = [];
  nowMs = 0;
  private readonly random: SeededRandom;
  private readonly queue = new StepQueue();
  private seq = 0;
  private steps = 0;
  /** Peers cut off from everyone else (both directions). */
  private readonly isolated = new Set<number>();
  /** Highest incarnation each viewer has seen for each member: it must never fall. */
  private readonly seenIncarnation = new Map<string, number>();

  constructor(readonly seed: number) {
    this.random = new SeededRandom(seed);
    this.ids = Array.from({ length: PEER_COUNT }, (_, i) => `peer-${String.fromCharCode(97 + i)}`);
    this.cores = this.ids.map(
      (id, i) => new Membership({ selfId: id, addrs: [`/ip4/10.0.0.${i + 1}/tcp/4001`], incarnation: 0, nowMs: 0 }),
    );
    this.cores.forEach((_, i) => this.scheduleTick(i, this.random.int(0, DEFAULT_MEMBERSHIP_CONFIG.tickIntervalMs - 1)));
  }

  isolate(index: number): void {
    this.isolated.add(index);
  }

  heal(): void {
    this.isolated.clear();
  }

  /** Run until `done()` holds (checked after every step) or `withinMs` passes; true if it held. */
  runUntil(done: () => boolean, withinMs: number): boolean {
    const deadline = this.nowMs + withinMs;
    if (done()) return true;
    for (let next = this.queue.peek(); next !== undefined && next.atMs <= deadline; next = this.queue.peek()) {
      this.runStep();
      if (done()) return true;
    }
    this.nowMs = deadline;
    return false;
  }

  runFor(durationMs: number): void {
    this.runUntil(() => false, durationMs);
  }

  /** The state `viewer` holds for `member`, or undefined. */
  stateAt(viewer: number, member: number): MemberState | undefined {
    return this.cores[viewer]?.member(this.ids[member] as string, this.nowMs)?.state;
  }

  incarnationAt(viewer: number, member: number): number | undefined {
    return this.cores[viewer]?.member(this.ids[member] as string, this.nowMs)?.incarnation;
  }

  /** Every viewer in `viewers` sees every member in `members` alive. */
  allSeeAlive(viewers: number[], members: number[]): boolean {
    return viewers.every((v) => members.every((m) => this.stateAt(v, m) === 'alive'));
  }

  deadVerdictsSince(sinceMs: number, viewers: number[], about: number[]): LoggedEvent[] {
    const aboutIds = new Set(about.map((i) => this.ids[i]));
    return this.log.filter(
      (e) =>
        e.atMs >= sinceMs &&
        viewers.includes(e.viewer) &&
        e.event.type === 'member-state' &&
        e.event.to === 'dead' &&
        aboutIds.has(e.event.peerId),
    );
  }

  fail(what: string): never {
    throw new SimFailure(
      `seed ${this.seed} at t=${this.nowMs} ms: ${what}\n` +
        `  replay: SHOAL_SEED=${this.seed} npx mocha --no-config --require dist/test/setup.js ${TEST_FILE}`,
    );
  }

  private runStep(): void {
    if (++this.steps > MAX_STEPS_PER_RUN) this.fail(`more than ${MAX_STEPS_PER_RUN} steps`);
    const step = this.queue.pop() as Step;
    this.nowMs = step.atMs;
    const core = this.cores[step.to] as Membership;
    let out: MembershipOutput;
    if (step.delivery === undefined) {
      out = core.tick(this.nowMs);
      this.scheduleTick(step.to, this.nowMs + DEFAULT_MEMBERSHIP_CONFIG.tickIntervalMs);
    } else {
      const from = this.ids[step.delivery.from] as string;
      out = core.receive(this.nowMs, from, decodeMembershipMessage(step.delivery.bytes));
      if (out.rejected !== undefined) this.fail(`${core.selfId} rejected a message from ${from}: ${out.rejected}`);
    }
    for (const event of out.events) {
      this.log.push({ atMs: this.nowMs, viewer: step.to, event });
      if (TRACE) console.log(`t=${this.nowMs} ${this.ids[step.to]} ${JSON.stringify(event)}`);
    }
    for (const message of out.broadcast) this.broadcast(step.to, encodeMembershipMessage(message));
    this.checkInvariants(step.to);
  }

  private scheduleTick(index: number, dueMs: number): void {
    this.queue.push({ atMs: dueMs + this.random.int(0, FAULTS.maxTickJitterMs), seq: this.seq++, to: index });
  }

  private broadcast(from: number, bytes: Uint8Array): void {
    for (let to = 0; to < this.cores.length; to++) {
      if (to === from) continue;
      if (this.isolated.has(from) !== this.isolated.has(to)) continue;
      if (this.random.chance(FAULTS.lossProbability)) continue;
      const copies = this.random.chance(FAULTS.duplicateProbability) ? 2 : 1;
      for (let copy = 0; copy < copies; copy++) {
        const atMs = this.nowMs + this.random.int(FAULTS.minDelayMs, FAULTS.maxDelayMs);
        this.queue.push({ atMs, seq: this.seq++, to, delivery: { from, bytes } });
      }
    }
  }

  /** After every step of `viewer`: bounded table, finite phi, incarnations never fall. */
  private checkInvariants(viewer: number): void {
    const views = (this.cores[viewer] as Membership).members(this.nowMs);
    if (views.length > PEER_COUNT) this.fail(`${this.ids[viewer]} holds ${views.length} rows`);
    for (const view of views) {
      if (!Number.isFinite(view.phi)) this.fail(`${this.ids[viewer]} has phi ${view.phi} for ${view.peerId}`);
      const key = `${viewer}/${view.peerId}`;
      const seen = this.seenIncarnation.get(key) ?? 0;
      if (view.incarnation < seen) {
        this.fail(`${this.ids[viewer]} saw ${view.peerId}'s incarnation fall from ${seen} to ${view.incarnation}`);
      }
      this.seenIncarnation.set(key, view.incarnation);
    }
  }
}

const ALL = Array.from({ length: PEER_COUNT }, (_, i) => i);
const CUT = PEER_COUNT - 1;
const MAJORITY = ALL.filter((i) => i !== CUT);

function describeVerdicts(sim: Simulation, verdicts: LoggedEvent[]): string {
  return verdicts
    .map((v) => `${sim.ids[v.viewer]} declared ${v.event.type === 'member-state' ? v.event.peerId : '?'} dead at t=${v.atMs}`)
    .join('; ');
}

function runSteadyPhase(sim: Simulation): void {
  sim.runFor(PHASES.steadyMs);
  if (!sim.runUntil(() => sim.allSeeAlive(ALL, ALL), PHASES.convergeWithinMs)) {
    sim.fail('steady phase: peers did not converge to all alive');
  }
  const falseVerdicts = sim.deadVerdictsSince(0, ALL, ALL);
  if (falseVerdicts.length > 0) sim.fail(`steady phase: false verdicts: ${describeVerdicts(sim, falseVerdicts)}`);
}

/** Returns how long the majority took to declare the cut-off peer dead. */
function runPartitionPhase(sim: Simulation): number {
  const cutAtMs = sim.nowMs;
  sim.isolate(CUT);
  const everyoneDeclared = (): boolean => MAJORITY.every((v) => sim.stateAt(v, CUT) === 'dead');
  if (!sim.runUntil(everyoneDeclared, PHASES.declareDeadWithinMs)) {
    const states = MAJORITY.map((v) => `${sim.ids[v]}:${sim.stateAt(v, CUT)}`).join(' ');
    sim.fail(`partition phase: majority did not declare ${sim.ids[CUT]} dead within ${PHASES.declareDeadWithinMs} ms (${states})`);
  }
  const tookMs = sim.nowMs - cutAtMs;
  const falseVerdicts = sim.deadVerdictsSince(cutAtMs, MAJORITY, MAJORITY);
  if (falseVerdicts.length > 0) sim.fail(`partition phase: false verdicts: ${describeVerdicts(sim, falseVerdicts)}`);
  return tookMs;
}

function runHealPhase(sim: Simulation): void {
  const incarnationBefore = sim.cores[CUT]?.incarnation ?? 0;
  const healedAtMs = sim.nowMs;
  sim.heal();
  const healed = (): boolean =>
    sim.allSeeAlive(ALL, ALL) && ALL.every((v) => (sim.incarnationAt(v, CUT) ?? -1) > incarnationBefore);
  if (!sim.runUntil(healed, PHASES.healWithinMs)) {
    const rows = ALL.map((v) => `${sim.ids[v]}:${sim.stateAt(v, CUT)}@${sim.incarnationAt(v, CUT)}`).join(' ');
    sim.fail(`heal phase: ${sim.ids[CUT]} not alive at a higher incarnation everywhere (${rows})`);
  }
  sim.runFor(Math.max(0, healedAtMs + PHASES.aftermathMs - sim.nowMs));
  const settledFromMs = sim.nowMs;
  sim.runFor(PHASES.settleMs);
  const verdicts = sim.deadVerdictsSince(settledFromMs, ALL, ALL);
  if (verdicts.length > 0) sim.fail(`after heal: false verdicts: ${describeVerdicts(sim, verdicts)}`);
  // A lossy link can raise a passing suspicion at any instant: wait for it to be refuted.
  if (!sim.runUntil(() => sim.allSeeAlive(ALL, ALL), PHASES.convergeWithinMs)) {
    sim.fail('after heal: peers did not converge to all alive');
  }
}

function seedsToRun(): number[] {
  const fromEnv = process.env.SHOAL_SEED;
  if (fromEnv !== undefined && fromEnv !== '') {
    const seed = Number(fromEnv);
    assert.ok(Number.isSafeInteger(seed), `SHOAL_SEED must be an integer, got ${fromEnv}`);
    return [seed];
  }
  const count = Number(process.env.SHOAL_SIM_SEEDS ?? DEFAULT_SEED_COUNT);
  assert.ok(Number.isSafeInteger(count) && count > 0, 'SHOAL_SIM_SEEDS must be a positive integer');
  return Array.from({ length: count }, (_, i) => i + 1);
}

describe('membership simulation (5 peers, 10% loss, one partition)', function () {
  const seeds = seedsToRun();
  this.timeout(Math.max(30_000, seeds.length * 50));

  it('converges, declares the cut-off peer dead in bounded time, and takes it back after the heal', () => {
    const detectionMs: number[] = [];
    for (const seed of seeds) {
      const sim = new Simulation(seed);
      runSteadyPhase(sim);
      detectionMs.push(runPartitionPhase(sim));
      runHealPhase(sim);
    }
    if (process.env.SHOAL_SIM_STATS !== undefined) {
      const sorted = [...detectionMs].sort((a, b) => a - b);
      console.log(`detection ms: min ${sorted[0]} median ${sorted[sorted.length >> 1]} max ${sorted[sorted.length - 1]}`);
    }
  });
});
