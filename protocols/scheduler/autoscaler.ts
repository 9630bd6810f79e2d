/**
 * The autoscaler's decision rule, pure (time comes in as `nowMs`): how many peers the cluster
 * should have, from load samples, by the Kubernetes HPA rule
 *
 *   desired = ceil(current × utilization / target)
 *
 * with its guards: no change while utilization / target is within `tolerance` of 1; a
 * recommendation must hold for a whole stabilisation window before it acts (scale-up: the
 * lowest recommendation of the last `scaleUpWindowMs`; scale-down: the highest of the last
 * `scaleDownWindowMs`, much longer, so a dip does not shed peers that the next burst needs); no
 * action within `cooldownMs` of the last one; the result clamped to [minPeers, maxPeers] and
 * to at most `maxStep` peers per action.
 *
 * Utilization is the larger of the peers' mean CPU busy fraction and the task demand (tasks
 * running and queued over the task slots): a queue that grows while CPUs idle (tasks waiting
 * on resources) still asks for peers.
 */
import { ConfigError } from '../errors.js';

export interface AutoscalerPolicy {
  minPeers: number;
  maxPeers: number;
  /** Utilization the cluster is sized for, in (0, 1]. Default 0.6. */
  targetUtilization: number;
  /** No change while |utilization / target − 1| ≤ this. Default 0.1 (HPA's). */
  tolerance: number;
  /** A scale-up must be recommended throughout this window, ms. Default 10 000. */
  scaleUpWindowMs: number;
  /** A scale-down must be recommended throughout this window, ms. Default 300 000 (HPA's). */
  scaleDownWindowMs: number;
  /** No action within this long of the previous one, ms. Default 30 000. */
  cooldownMs: number;
  /** Most peers added or removed by one action. Default 2. */
  maxStep: number;
}

export const DEFAULT_AUTOSCALER_POLICY: Readonly<Omit<AutoscalerPolicy, 'minPeers' | 'maxPeers'>> = Object.freeze({
  targetUtilization: 0.6,
  tolerance: 0.1,
  scaleUpWindowMs: 10_000,
  scaleDownWindowMs: 300_000,
  cooldownMs: 30_000,
  maxStep: 2,
});

export function validateAutoscalerPolicy(p: AutoscalerPolicy): void {
  const int = (k: keyof AutoscalerPolicy, min: number): void => {
    const v = p[k];
    if (!Number.isInteger(v) || v < min) throw new ConfigError(k, `must be an integer ≥ ${min}`);
  };
  int('minPeers', 1);
  int('maxPeers', 1);
  if (p.maxPeers < p.minPeers) throw new ConfigError('maxPeers', `must be ≥ minPeers (${p.minPeers})`);
  if (!(p.targetUtilization > 0 && p.targetUtilization <= 1)) throw new ConfigError('targetUtilization', 'must be in (0, 1]');
  if (!(p.tolerance >= 0 && p.tolerance < 1)) throw new ConfigError('tolerance', 'must be in [0, 1)');
  for (const k of ['scaleUpWindowMs', 'scaleDownWindowMs', 'cooldownMs'] as const) {
    if (!(Number.isFinite(p[k]) && p[k] >= 0)) throw new ConfigError(k, 'must be a number ≥ 0');
  }
  int('maxStep', 1);
}

export interface LoadSample {
  /** Peers in the cluster now (alive members). */
  peers: number;
  /** Mean CPU busy fraction over the peers, 0..1. */
  cpuUtilization: number;
  /** Tasks running plus queued, and the task slots of all peers (0: no task signal). */
  tasksDemand: number;
  taskSlots: number;
}

export interface ScaleDecision {
  atMs: number;
  current: number;
  desired: number;
  action: 'up' | 'down' | 'none';
  utilization: number;
  reason: string;
}

export class Autoscaler {
  readonly policy: AutoscalerPolicy;
  private recs: Array<{ atMs: number; desired: number }> = [];
  private lastActionAtMs = Number.NEGATIVE_INFINITY;
  private readonly decisions: ScaleDecision[] = [];
  /** Actions (up or down) taken, with their direction, for the reversal count. */
  private readonly actions: Array<{ atMs: number; action: 'up' | 'down' }> = [];

  constructor(policy: Partial<AutoscalerPolicy> & Pick<AutoscalerPolicy, 'minPeers' | 'maxPeers'>) {
    this.policy = { ...DEFAULT_AUTOSCALER_POLICY, ...policy };
    validateAutoscalerPolicy(this.policy);
  }

  /**
   * A load sample at `nowMs`; returns the decision (an action only when every guard allows it).
   * The shell carries out `up`/`down` (start or drain peers) and calls `acted` when it did.
   */
  observe(nowMs: number, s: LoadSample): ScaleDecision {
    const p = this.policy;
    const current = Math.max(0, Math.floor(s.peers));
    const demand = s.taskSlots > 0 ? s.tasksDemand / s.taskSlots : 0;
    const utilization = Math.max(0, Number.isFinite(s.cpuUtilization) ? s.cpuUtilization : 0, Number.isFinite(demand) ? demand : 0);
    const ratio = utilization / p.targetUtilization;
    let raw = Math.abs(ratio - 1) <= p.tolerance ? current : Math.ceil(current * ratio - 1e-9);
    raw = Math.min(p.maxPeers, Math.max(p.minPeers, raw));
    this.recs.push({ atMs: nowMs, desired: raw });
    const horizon = Math.max(p.scaleUpWindowMs, p.scaleDownWindowMs);
    // Keep one recommendation at or before the horizon: it covers the start of the window.
    while (this.recs.length > 1 && this.recs[1]!.atMs <= nowMs - horizon) this.recs.shift();
    /** The recommendations of the last `ms` (with the one in force at its start), or null before samples cover it. */
    const window = (ms: number): number[] | null => {
      let start = -1;
      for (let i = 0; i < this.recs.length; i++) if (this.recs[i]!.atMs <= nowMs - ms) start = i;
      if (start < 0) return ms === 0 ? [raw] : null;
      return this.recs.slice(start).map((r) => r.desired);
    };
    const upRecs = window(p.scaleUpWindowMs);
    const downRecs = window(p.scaleDownWindowMs);
    const upFull = upRecs !== null;
    const downFull = downRecs !== null;
    const up = upRecs === null ? current : Math.min(...upRecs);
    const down = downRecs === null ? current : Math.max(...downRecs);
    let desired = current;
    let why: string;
    if (current < p.minPeers) {
      desired = p.minPeers;
      why = `below minPeers ${p.minPeers}`;
    } else if (current > p.maxPeers) {
      desired = p.maxPeers;
      why = `above maxPeers ${p.maxPeers}`;
    } else if (up > current && upFull) {
      desired = up;
      why = `utilization ${(utilization * 100).toFixed(0)} % over target ${(p.targetUtilization * 100).toFixed(0)} % throughout ${p.scaleUpWindowMs / 1000} s`;
    } else if (down < current && downFull) {
      desired = down;
      why = `utilization under target throughout ${p.scaleDownWindowMs / 1000} s (highest recommendation ${down})`;
    } else {
      why =
        raw === current
          ? `utilization ${(utilization * 100).toFixed(0)} % within ${(p.tolerance * 100).toFixed(0)} % of target`
          : `recommendation ${raw} not held for its stabilisation window yet`;
    }
    desired = Math.min(current + p.maxStep, Math.max(current - p.maxStep, desired));
    let action: ScaleDecision['action'] = desired > current ? 'up' : desired < current ? 'down' : 'none';
    if (action !== 'none' && nowMs - this.lastActionAtMs < p.cooldownMs) {
      why = `${why}; cooling down (${Math.round((p.cooldownMs - (nowMs - this.lastActionAtMs)) / 1000)} s left)`;
      action = 'none';
      desired = current;
    }
    const d: ScaleDecision = { atMs: nowMs, current, desired, action, utilization, reason: why };
    this.decisions.push(d);
    if (this.decisions.length > 100) this.decisions.shift();
    return d;
  }

  /** The shell carried out an up or down action at `nowMs`. */
  acted(nowMs: number, action: 'up' | 'down'): void {
    this.lastActionAtMs = nowMs;
    this.actions.push({ atMs: nowMs, action });
    if (this.actions.length > 1000) this.actions.shift();
  }

  recentDecisions(): ScaleDecision[] {
    return [...this.decisions];
  }

  /** Direction changes among the actions since `sinceMs` (flapping). */
  reversals(sinceMs = Number.NEGATIVE_INFINITY): number {
    const a = this.actions.filter((x) => x.atMs >= sinceMs);
    let n = 0;
    for (let i = 1; i < a.length; i++) if (a[i]!.action !== a[i - 1]!.action) n++;
    return n;
  }
}
