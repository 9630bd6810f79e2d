/**
 * Which replica answers an `any` read (`--read-policy`): one concern of the store service, kept
 * apart. Writes and strong reads always go to the primary; an `any` read goes to one active
 * in-sync replica, chosen round-robin, at random, at random weighted by capacity, or by the
 * lowest observed latency (an EWMA per peer; peers not measured yet first, so each gets one).
 */
import type { ClusterMapView, ShardAssignment } from '../protocols/cluster-map/types.js';
import type { ReadPolicy } from './store-api.js';

/** Weight of the newest sample in the latency EWMA. */
const EWMA_WEIGHT = 0.2;

export class ReadTargets {
  private roundRobin = 0;
  private readonly latencyEwma = new Map<string, number>();

  constructor(
    private readonly policy: ReadPolicy,
    private readonly random: () => number = Math.random,
  ) {}

  /** The peer to send an operation to: the primary, or for an `any` read one in-sync replica. */
  pick(a: ShardAssignment, members: ClusterMapView['members'], anyRead: boolean): string | null {
    if (!anyRead) return a.primary;
    const candidates = a.inSync.filter((id) => members[id]?.status === 'active');
    if (candidates.length === 0) return a.primary;
    switch (this.policy) {
      case 'round-robin':
        return candidates[this.roundRobin++ % candidates.length]!;
      case 'random':
        return candidates[Math.floor(this.random() * candidates.length)]!;
      case 'weighted': {
        const weights = candidates.map((id) => members[id]?.capacity ?? 1);
        let x = this.random() * weights.reduce((s, w) => s + w, 0);
        for (const [k, id] of candidates.entries()) {
          x -= weights[k]!;
          if (x <= 0) return id;
        }
        return candidates[candidates.length - 1]!;
      }
      case 'least-latency': {
        let best = candidates[0]!;
        let bestMs = this.latencyEwma.get(best) ?? -1;
        for (const id of candidates) {
          const ms = this.latencyEwma.get(id) ?? -1;
          if (ms < bestMs) {
            best = id;
            bestMs = ms;
          }
        }
        return best;
      }
    }
  }

  /** An operation sent to `peer` took `ms`. */
  observe(peer: string, ms: number): void {
    const prev = this.latencyEwma.get(peer);
    this.latencyEwma.set(peer, prev === undefined ? ms : prev * (1 - EWMA_WEIGHT) + ms * EWMA_WEIGHT);
  }

  /** The latency EWMA of `peer`, ms (undefined before its first sample). */
  latencyOf(peer: string): number | undefined {
    return this.latencyEwma.get(peer);
  }
}
