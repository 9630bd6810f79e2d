/**
 * Which replica moves start now: a pure function of the candidates (replicas the target
 * placement wants and a shard lacks), the moves already in flight and the limits. The shard
 * controller (protocols/shard-control/controller.ts, rule 4) asks it once per plan and adds only
 * the replicas it chose.
 *
 * Order (Cassandra and CockroachDB give repair priority over rebalancing the same way):
 *
 * 1. Repairs before balance: a shard with fewer live in-sync replicas than the replication
 *    factor (a peer died, left or is draining) before a shard that is only on the wrong peers.
 * 2. Among repairs, fewest live in-sync replicas first (a shard one failure away from loss first).
 * 3. Then by shard, rotated by `rotation` so that no shard is always last.
 *
 * Limits (each counts the moves in flight plus those chosen in this call):
 * - `maxPerDestination`: replicas a peer is being filled with at once (Riak's transfer limit);
 * - `maxPerSource`: snapshots a primary sends at once (its disk and uplink are shared);
 * - `maxInFlight`: moves in the whole cluster at once.
 * One move per shard per call (each changes the shard's epoch).
 *
 * The byte rate of the moves is the senders' business (`--rebalance-rate`, a token bucket per
 * peer); bounded load ((1 + ε)·mean replicas per peer) is the placement's (assignReplicas).
 */

export interface MoveCandidate {
  shard: number;
  /** The peer that gets the replica. */
  to: string;
  /** The shard's primary, which sends the data. */
  from: string;
  /** Live in-sync replicas the shard has now. */
  liveInSync: number;
}

export interface MoveInFlight {
  shard: number;
  to: string;
  from: string | null;
}

export interface MoveLimits {
  maxPerDestination: number;
  maxPerSource: number;
  maxInFlight: number;
  /** Replicas each shard should have (the replication factor): below it a move is a repair. */
  replicationFactor: number;
}

export interface ChosenMove extends MoveCandidate {
  kind: 'repair' | 'balance';
}

export interface MovePlan {
  chosen: ChosenMove[];
  /** Candidates not started now, with the limit that held them back. */
  deferred: Array<{ move: ChosenMove; reason: string }>;
}

export function planMoves(candidates: readonly MoveCandidate[], inFlight: readonly MoveInFlight[], limits: MoveLimits, rotation = 0): MovePlan {
  const into = new Map<string, number>();
  const outOf = new Map<string, number>();
  const bump = (m: Map<string, number>, id: string): void => {
    m.set(id, (m.get(id) ?? 0) + 1);
  };
  for (const f of inFlight) {
    bump(into, f.to);
    if (f.from !== null) bump(outOf, f.from);
  }
  let total = inFlight.length;
  const n = Math.max(1, candidates.reduce((mx, c) => Math.max(mx, c.shard + 1), 0));
  const rot = ((rotation % n) + n) % n;
  const ranked: ChosenMove[] = candidates.map((c) => ({ ...c, kind: c.liveInSync < limits.replicationFactor ? 'repair' : 'balance' }));
  ranked.sort(
    (a, b) =>
      (a.kind === b.kind ? 0 : a.kind === 'repair' ? -1 : 1) ||
      (a.kind === 'repair' ? a.liveInSync - b.liveInSync : 0) ||
      ((a.shard - rot + n) % n) - ((b.shard - rot + n) % n) ||
      (a.to < b.to ? -1 : a.to > b.to ? 1 : 0),
  );
  const chosen: ChosenMove[] = [];
  const deferred: MovePlan['deferred'] = [];
  const shardsTaken = new Set<number>();
  for (const m of ranked) {
    let reason: string | null = null;
    if (shardsTaken.has(m.shard)) reason = 'one move per shard at a time';
    else if (total >= limits.maxInFlight) reason = `${limits.maxInFlight} moves in flight in the cluster`;
    else if ((into.get(m.to) ?? 0) >= limits.maxPerDestination) reason = `${m.to} is being filled with ${limits.maxPerDestination} replicas`;
    else if ((outOf.get(m.from) ?? 0) >= limits.maxPerSource) reason = `${m.from} is sending ${limits.maxPerSource} replicas`;
    if (reason !== null) {
      deferred.push({ move: m, reason });
      continue;
    }
    chosen.push(m);
    shardsTaken.add(m.shard);
    bump(into, m.to);
    bump(outOf, m.from);
    total++;
  }
  return { chosen, deferred };
}
