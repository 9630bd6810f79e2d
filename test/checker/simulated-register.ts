/**
 * A simulated linearizable key-value store and its clients, to generate histories that are
 * linearizable by construction (for testing the checkers, and as a baseline for harnesses).
 * Each client has at most one operation in flight; the store applies each operation
 * atomically (register-model.ts) at a random moment between its invoke and its completion,
 * or not at all for failed and lost operations. Timestamps come from a fake clock that moves
 * by 0 to 2 per event, so equal timestamps occur.
 */
import type { Random } from '../../protocols/random.js';
import { HistoryRecorder, type HistoryEvent, type KvOp, type Outcome } from './history.js';
import { applyRegisterOp, INITIAL_REGISTER, type RegisterState } from './register-model.js';

export interface SimulationOptions {
  /** Concurrent clients, each with at most one operation in flight. */
  clients: number;
  /** Operations each client invokes. */
  opsPerClient: number;
  /** Keys k0, k1, …, picked uniformly. */
  keys: number;
  /** Probabilities per operation (the rest are puts). */
  pRead: number;
  pCas: number;
  pDelete: number;
  pFail: number;
  /** Not applied, reported unknown. */
  pUnknownLost: number;
  /** Applied, reported unknown. */
  pUnknownApplied: number;
  /** Chance that an ok outcome omits its version. */
  pNoVersion: number;
  /** Whether some clients leave their last operation in flight. */
  leavePending: boolean;
}

export interface Simulation {
  history: HistoryEvent[];
  /** For each key, the value at each version, as the store applied them. */
  values: Map<string, (string | null)[]>;
}

/**
 * Clients issue operations one at a time against a store that applies each atomically at
 * some random moment between invoke and completion: the histories are linearizable by
 * construction. Values are unique, so a (value, version) pair names one state.
 */
export function simulateRegister(rng: Random, options: SimulationOptions): Simulation {
  let time = 0;
  const recorder = new HistoryRecorder({ now: () => time });
  const keys = Array.from({ length: options.keys }, (_, k) => `k${k}`);
  const store = new Map<string, RegisterState>(keys.map((key) => [key, { ...INITIAL_REGISTER }]));
  const values = new Map<string, (string | null)[]>(keys.map((key) => [key, [null]]));
  type Phase =
    | { kind: 'idle' }
    | { kind: 'sent'; opId: number; op: KvOp }
    | { kind: 'applied'; opId: number; outcome: Outcome };
  const clients = Array.from({ length: options.clients }, (_, c) => ({
    id: `c${c}`,
    left: options.opsPerClient,
    phase: { kind: 'idle' } as Phase,
    lastVersion: new Map<string, number>(),
    abandonLast: options.leavePending && rng.chance(0.3),
    written: 0,
  }));
  const busy = (client: (typeof clients)[number]): boolean =>
    client.left > 0 || (client.phase.kind !== 'idle' && !(client.abandonLast && client.left === 0));

  for (;;) {
    const active = clients.filter(busy);
    if (active.length === 0) break;
    const client = rng.pick(active);
    time += rng.int(0, 2);
    const phase = client.phase;
    if (phase.kind === 'idle') {
      const key = rng.pick(keys);
      const r = rng.next();
      let op: KvOp;
      if (r < options.pRead) op = { type: 'read', key };
      else if (r < options.pRead + options.pCas) {
        const seen = client.lastVersion.get(key) ?? 0;
        const expect = rng.chance(0.7) ? seen : Math.max(0, seen + rng.int(-1, 1));
        op = { type: 'cas', key, expectVersion: expect, value: `${client.id}-${client.written++}` };
      } else if (r < options.pRead + options.pCas + options.pDelete) op = { type: 'write', key, value: null };
      else op = { type: 'write', key, value: `${client.id}-${client.written++}` };
      client.phase = { kind: 'sent', opId: recorder.invoke(client.id, op), op };
      client.left--;
    } else if (phase.kind === 'sent') {
      const r = rng.next();
      if (r < options.pFail) {
        recorder.complete(phase.opId, { status: 'fail' });
        client.phase = { kind: 'idle' };
      } else if (r < options.pFail + options.pUnknownLost) {
        recorder.complete(phase.opId, { status: 'unknown' });
        client.phase = { kind: 'idle' };
      } else {
        const key = phase.op.key;
        const before = store.get(key) as RegisterState;
        const { state, outcome } = applyRegisterOp(before, phase.op);
        store.set(key, state);
        if (state.version !== before.version) (values.get(key) as (string | null)[]).push(state.value);
        if (outcome.version !== undefined) client.lastVersion.set(key, outcome.version);
        if (rng.chance(options.pNoVersion)) delete outcome.version;
        client.phase = { kind: 'applied', opId: phase.opId, outcome: rng.chance(options.pUnknownApplied) ? { status: 'unknown' } : outcome };
      }
    } else {
      recorder.complete(phase.opId, phase.outcome);
      client.phase = { kind: 'idle' };
    }
  }
  return { history: recorder.history(), values };
}

/** A mix with a few of every kind of outcome. */
export const MIXED_WORKLOAD: Omit<SimulationOptions, 'clients' | 'opsPerClient' | 'keys'> = {
  pRead: 0.45,
  pCas: 0.2,
  pDelete: 0.05,
  pFail: 0.03,
  pUnknownLost: 0.03,
  pUnknownApplied: 0.03,
  pNoVersion: 0.1,
  leavePending: true,
};
