/**
 * The shard controller: a pure core that runs on the coordinator (the Raft leader) and decides
 * how shard assignments change — the first assignment, in-sync set changes the primaries ask for,
 * failover after a primary's lease lapsed, dropping replicas of dead or departed peers, and
 * rebalancing toward the placement of the active members (DESIGN §3 "Leases", §4; PacificA).
 *
 * It reads no clock and does no I/O: time comes in as `nowMs` (a monotonic local clock), and its
 * output is one `set-shard-assignment` command for the shell to propose.
 *
 * ## Shell contract
 *
 * - `becameLeader(nowMs)` when this peer becomes the Raft leader (again). Everything learnt
 *   before is forgotten: the previous leader may have granted leases this one never saw, so no
 *   lease counts as expired before `nowMs + leaseMs`.
 * - `renew(nowMs, peer, progress, requests)` for every lease renewal received (`nowMs`: when it
 *   was received). The lease granted in the reply must be `leaseMs` long, measured by the peer
 *   from when it *sent* the renewal, and the reply must carry (or be preceded by) the committed
 *   assignments as of `nowMs`, so a peer never extends a lease for a primaryship it has lost.
 * - `observe(nowMs, map)` after every applied cluster-map change (and right after
 *   `becameLeader`): the controller notices when a shard loses its primary.
 * - `plan(nowMs, map)` whenever something may have changed (a renewal with requests, a map
 *   change, a timer of about leaseMs / 4). Propose the returned command, at most one at a time:
 *   call `plan` again only after the previous proposal committed (or failed). Every update of a
 *   non-full command carries `expectEpoch`, so a command planned from a stale map is rejected
 *   with `epoch-mismatch` instead of overwriting a newer assignment; just plan again.
 *
 * ## Rules
 *
 * First assignment (`full: true`, epoch 1): once the bootstrapped map has active members, and
 * either `replicationFactor` of them or `initialAssignmentDelayMs` after the controller first saw
 * it without shards; replicas from `assignReplicas`, primary = first, all in sync (all empty).
 *
 * Afterwards, at most one change per shard and plan, each bumping the epoch by exactly one and
 * checked with the map's own rules (checkShardAssignment). By priority:
 *
 * 1. In-sync change requests of the shard's primary at the current epoch, while its lease is not
 *    expired: shrink removes an in-sync backup, expand adds a replica that is not dead or gone.
 *    Every valid request of that epoch goes into one change. Stale requests are dropped. A
 *    restarted primary's renew-epoch is granted only if no in-sync backup reported more of the
 *    log; otherwise the shard is vacated without it in the in-sync set (rule 2 then promotes).
 * 2. Promotion, only when the current primary X cannot be serving: X's lease expired (whatever
 *    its member status), or X is null and the shard was vacated by V whose lease has expired or
 *    at least `leaseMs` ago (a shard found without primary at `becameLeader` counts as vacated
 *    then, by someone unknown). Candidates: in-sync replicas other than X with a valid lease,
 *    status active (draining ones only if no active one qualifies); target replicas first, then
 *    the highest reported (lastEpoch, lastSeq), then order in `replicas`. X leaves the in-sync set.
 * 3. Drop replicas (not the primary) whose member is dead, has left, or is gone — never the last
 *    in-sync one.
 * 3b. Abandon stalled catch-ups: a catching-up replica whose reported lastSeq has not advanced
 *    (nor its snapshot stream, see transferProgress) for `catchUpStallMs` while the primary's is
 *    ahead (or that never reported) is removed, which
 *    frees its peer's catch-up slot; rule 4 does not add that replica of that shard again for
 *    `catchUpRetryAfterMs`. Each is counted and listed by `catchUpReport`.
 * 4. Rebalance: add replicas of the target placement (assignReplicas over the active members)
 *    that the shard lacks, as catching-up (not in sync), up to replicationFactor + 1 replicas
 *    and `maxCatchUpsPerPeer` per peer. If the shard is already full (the target moved while a
 *    move was in flight), a non-target backup makes room in the same change: a catching-up one,
 *    or else an in-sync one once no target replica is catching up. Only on shards with a primary.
 * 5. Once every target replica is in sync: remove the non-target backups; a non-target primary
 *    is vacated (primary null) if a target replica could be promoted, and rule 2 promotes one
 *    after the lease wait.
 *
 * A change also drops non-primary replicas that have left (the map refuses them in any new
 * assignment). A change the map would refuse is not proposed; the next rule is tried instead.
 */
import { checkShardAssignment } from '../cluster-map/cluster-map.js';
import { CLUSTER_MAP_LIMITS } from '../cluster-map/commands.js';
import type {
  ClusterMapView,
  ClusterSettings,
  MemberInfo,
  SetShardAssignmentCommand,
  ShardAssignment,
  ShardAssignmentUpdate,
} from '../cluster-map/types.js';
import { assignReplicas, type PlacementMember } from '../placement/index.js';
import { planMoves, type MoveCandidate, type MoveInFlight } from '../rebalance/planner.js';
import type { InSyncChangeRequest, ReplicaProgress } from '../replication/types.js';
import { validateShardControllerOptions, type ResolvedShardControllerOptions, type ShardControllerOptions } from './config.js';

/** What `plan` returns: one command to propose, and a line per changed shard saying why. */
export interface ShardPlan {
  cmd: SetShardAssignmentCommand;
  reasons: string[];
}

/** Most peers whose renewals are tracked (members are bounded by the map; this bounds strangers). */
const MAX_TRACKED_PEERS = 2 * CLUSTER_MAP_LIMITS.maxMembers;
/** Most pending in-sync change requests kept per shard; older ones are dropped first. */
const MAX_REQUESTS_PER_SHARD = 4 * (CLUSTER_MAP_LIMITS.maxReplicationFactor + 1);

/** A shard found without a primary: since when, and who vacated it (null: unknown). */
interface Vacancy {
  by: string | null;
  atMs: number;
}

interface Change {
  assignment: ShardAssignment;
  reason: string;
}

/** A catching-up replica under watch: since when, and when its log last advanced. */
interface CatchUpWatch {
  shard: number;
  peer: string;
  sinceMs: number;
  /** Its last reported lastSeq (-1: none reported yet). */
  lastSeq: number;
  progressAtMs: number;
}

/** What `catchUpReport` lists: catch-ups in progress and those abandoned, waiting to be retried. */
export interface CatchUpReport {
  active: Array<{ shard: number; peer: string; forMs: number; lastSeq: number; primarySeq: number | null; idleMs: number }>;
  abandoned: Array<{ shard: number; peer: string; retryInMs: number; reason: string }>;
  /** Catch-ups abandoned since this controller was created. */
  abandonedTotal: number;
}

/** What one plan shares between shards. */
interface PlanContext {
  nowMs: number;
  map: ClusterMapView;
  settings: ClusterSettings;
  /** Target replicas per shard, or null when there is no active member. */
  target: string[][] | null;
  /** Replicas each peer is catching up on (shards with a primary), plus those added by this plan. */
  catchUps: Map<string, number>;
  /** Shards without a primary now, plus those this plan vacates to balance primaries. */
  vacant: number;
  /** The replica each shard may start filling in this plan (protocols/rebalance/planner.ts). */
  moves: Map<number, string>;
}

/**
 * Most shards without a primary at once for which the controller still vacates another to move
 * its primary to the preferred replica: each handover stops the shard's writes for about a
 * lease, so balance is restored a couple of shards at a time.
 */
const MAX_BALANCING_VACANCIES = 2;

/**
 * A shard's primary is moved for balance only after its log has not grown for this long: a
 * hand-over pauses the shard's writes for about a lease, which a busy shard should not pay for
 * a cosmetic balance (under a saturating load it also piled pauses on a struggling cluster).
 */
const BALANCE_QUIET_MS = 2000;

function memberOf(map: ClusterMapView, id: string): MemberInfo | undefined {
  return Object.hasOwn(map.members, id) ? map.members[id] : undefined;
}

/** Dead, left, or no longer a member: its replicas are to be dropped. */
function isGone(map: ClusterMapView, id: string): boolean {
  const m = memberOf(map, id);
  return m === undefined || m.status === 'dead' || m.status === 'left';
}

function without(list: readonly string[], remove: readonly string[]): string[] {
  return list.filter((id) => !remove.includes(id));
}

/** inSync in the order of `replicas` (a canonical form). */
function inReplicaOrder(replicas: readonly string[], inSync: Iterable<string>): string[] {
  const set = new Set(inSync);
  return replicas.filter((id) => set.has(id));
}

/** (lastEpoch, lastSeq) `r` is behind `s`. */
function rankBelow(r: readonly [number, number], s: readonly [number, number]): boolean {
  return r[0] < s[0] || (r[0] === s[0] && r[1] < s[1]);
}

export class ShardController {
  private readonly opts: ResolvedShardControllerOptions;
  /** Null until the first becameLeader: plan does nothing before. */
  private leaderSinceMs: number | null = null;
  /** Peers that released their lease since their last renewal (see release). */
  private readonly released = new Set<string>();
  /** Receive time of each peer's last renewal since becameLeader. */
  private readonly renewedAtMs = new Map<string, number>();
  /** Last reported progress per peer and shard. */
  private readonly progress = new Map<string, Map<number, ReplicaProgress>>();
  /** Per shard: the highest lastSeq any replica reported, and when it last grew. */
  private readonly activity = new Map<number, { seq: number; atMs: number }>();
  /** Pending in-sync change requests per shard, oldest first. */
  private readonly requests = new Map<number, InSyncChangeRequest[]>();
  private readonly vacancies = new Map<number, Vacancy>();
  /** Shards this leader vacated to hand the primary to their preferred replica, and to whom. */
  private readonly balancingTo = new Map<number, string>();
  /** Primary and epoch of every shard at the last look, or null: no look since becameLeader. */
  private lastSeen: Array<{ primary: string | null; epoch: number }> | null = null;
  /** When the bootstrapped map was first seen without shards. */
  private unassignedSinceMs: number | null = null;
  /** When each member was first seen `dead` (cleared when it is not). */
  private readonly deadSinceMs = new Map<string, number>();
  private targetKey = '';
  private target: string[][] | null = null;
  /** Catching-up replicas of shards with a primary, by `shard:peer`. */
  private readonly catchUpWatch = new Map<string, CatchUpWatch>();
  /** Abandoned catch-ups, not retried before `untilMs`, by `shard:peer`. */
  private readonly catchUpBackoff = new Map<string, { shard: number; peer: string; untilMs: number; reason: string }>();
  private abandonedTotal = 0;
  /** Plans made: rotates which shard the move planner favours among equals. */
  private planCount = 0;

  /** @throws ConfigError for bad options (see ShardControllerOptions). */
  constructor(options: ShardControllerOptions) {
    this.opts = validateShardControllerOptions(options);
  }

  /**
   * This peer became the leader at `nowMs`: forget all leases, progress, requests and vacancies.
   * No peer's lease counts as expired before `nowMs + leaseMs`.
   */
  becameLeader(nowMs: number): void {
    this.leaderSinceMs = nowMs;
    this.renewedAtMs.clear();
    this.released.clear();
    this.progress.clear();
    this.activity.clear();
    this.requests.clear();
    this.vacancies.clear();
    this.balancingTo.clear();
    this.catchUpWatch.clear();
    this.lastSeen = null;
  }

  /** Catch-ups under way (as this leader saw them) and the abandoned ones still backing off. */
  catchUpReport(nowMs: number): CatchUpReport {
    const active = [...this.catchUpWatch.values()].map((w) => ({
      shard: w.shard,
      peer: w.peer,
      forMs: nowMs - w.sinceMs,
      lastSeq: w.lastSeq,
      primarySeq: this.primarySeq(w.shard),
      idleMs: nowMs - w.progressAtMs,
    }));
    const abandoned = [...this.catchUpBackoff.values()]
      .filter((b) => b.untilMs > nowMs)
      .map((b) => ({ shard: b.shard, peer: b.peer, retryInMs: b.untilMs - nowMs, reason: b.reason }));
    return { active, abandoned, abandonedTotal: this.abandonedTotal };
  }

  /**
   * A lease renewal from `peer`, received at `nowMs`: its lease now lasts until
   * `nowMs + leaseMs`; its progress per shard replaces what it reported before for those shards;
   * its in-sync change requests (`from` must be `peer`; others are ignored) wait for `plan`.
   */
  renew(nowMs: number, peer: string, progress: readonly ReplicaProgress[], requests: readonly InSyncChangeRequest[]): void {
    const previous = this.renewedAtMs.get(peer);
    if (previous === undefined && this.renewedAtMs.size >= MAX_TRACKED_PEERS) return;
    this.renewedAtMs.set(peer, Math.max(previous ?? Number.NEGATIVE_INFINITY, nowMs));
    this.released.delete(peer);
    const validShard = (shard: unknown): shard is number =>
      Number.isSafeInteger(shard) && (shard as number) >= 0 && (shard as number) < CLUSTER_MAP_LIMITS.maxShardCount;
    let mine = this.progress.get(peer);
    for (const p of progress.slice(0, CLUSTER_MAP_LIMITS.maxShardCount)) {
      const count = (n: unknown): boolean => Number.isSafeInteger(n) && (n as number) >= 0;
      if (!validShard(p.shard) || !count(p.epoch) || !count(p.lastEpoch) || !count(p.lastSeq) || !count(p.commitSeq)) continue;
      if (mine === undefined) this.progress.set(peer, (mine = new Map()));
      mine.set(p.shard, { shard: p.shard, epoch: p.epoch, lastSeq: p.lastSeq, lastEpoch: p.lastEpoch, commitSeq: p.commitSeq });
      const act = this.activity.get(p.shard);
      if (act === undefined) this.activity.set(p.shard, { seq: p.lastSeq, atMs: nowMs });
      else if (p.lastSeq > act.seq) this.activity.set(p.shard, { seq: p.lastSeq, atMs: nowMs });
    }
    for (const r of requests.slice(0, MAX_REQUESTS_PER_SHARD * CLUSTER_MAP_LIMITS.maxShardCount)) {
      if (r.from !== peer || !validShard(r.shard) || !Number.isSafeInteger(r.epoch)) continue;
      if (r.kind !== 'shrink-in-sync' && r.kind !== 'expand-in-sync' && r.kind !== 'renew-epoch') continue;
      if (r.kind === 'renew-epoch' && r.replica !== r.from) continue;
      const list = this.requests.get(r.shard) ?? [];
      const same = list.findIndex((q) => q.kind === r.kind && q.replica === r.replica && q.from === r.from && q.epoch === r.epoch);
      if (same >= 0) list.splice(same, 1);
      list.push({ kind: r.kind, shard: r.shard, from: r.from, replica: r.replica, epoch: r.epoch });
      if (list.length > MAX_REQUESTS_PER_SHARD) list.splice(0, list.length - MAX_REQUESTS_PER_SHARD);
      this.requests.set(r.shard, list);
    }
  }

  /**
   * The primary of `shard` reported at `nowMs` that its snapshot stream to `peer` moved more
   * bytes: the catch-up is progressing even though the replica's log has not grown yet (rule 3b
   * must not abandon a long snapshot).
   */
  transferProgress(nowMs: number, shard: number, peer: string): void {
    const w = this.catchUpWatch.get(`${shard}:${peer}`);
    if (w !== undefined) w.progressAtMs = Math.max(w.progressAtMs, nowMs);
  }

  /**
   * `peer` gave up its lease (a graceful stop): it has stopped serving as primary and will not
   * renew, so its shards may get new primaries at once instead of after `leaseMs`. A later
   * renewal takes it back. The caller must deliver it after the peer's last renewal (one stream).
   */
  release(nowMs: number, peer: string): void {
    void nowMs;
    if (this.leaderSinceMs === null) return;
    if (!this.released.has(peer) && this.released.size >= MAX_TRACKED_PEERS) return;
    this.released.add(peer);
  }

  /** Call after every applied map change: notices shards losing their primary, drops stale state. */
  observe(nowMs: number, map: ClusterMapView): void {
    this.sync(nowMs, map);
  }

  /**
   * The changes to propose now, or null. Before the first `becameLeader`, always null.
   * A non-full command lists each changed shard once, with `expectEpoch` = its current epoch and
   * the new assignment at epoch + 1.
   */
  plan(nowMs: number, map: ClusterMapView): ShardPlan | null {
    this.sync(nowMs, map);
    const settings = map.settings;
    if (this.leaderSinceMs === null || settings === null) return null;
    if (map.shards.length === 0) return this.planInitial(nowMs, map, settings);
    const ctx: PlanContext = {
      nowMs,
      map,
      settings,
      target: this.targetFor(nowMs, map, settings),
      catchUps: new Map(),
      vacant: map.shards.filter((a) => a.primary === null).length,
      moves: new Map(),
    };
    ctx.moves = this.chooseMoves(ctx);
    for (const a of map.shards) {
      if (a.primary === null) continue;
      for (const id of a.replicas) {
        if (!a.inSync.includes(id) && !isGone(map, id)) ctx.catchUps.set(id, (ctx.catchUps.get(id) ?? 0) + 1);
      }
    }
    const updates: ShardAssignmentUpdate[] = [];
    const reasons: string[] = [];
    map.shards.forEach((a, shard) => {
      const change = this.planShard(ctx, shard, a);
      if (change === null) return;
      updates.push({ shard, assignment: change.assignment, expectEpoch: a.epoch });
      reasons.push(`shard ${shard} epoch ${a.epoch + 1}: ${change.reason}`);
    });
    if (updates.length === 0) return null;
    return { cmd: { type: 'set-shard-assignment', full: false, updates }, reasons };
  }

  /** The peer renewed since becameLeader and its lease has not run out at `nowMs`. */
  leaseValid(nowMs: number, peer: string): boolean {
    if (this.released.has(peer)) return false;
    const at = this.renewedAtMs.get(peer);
    return this.leaderSinceMs !== null && at !== undefined && nowMs < at + this.opts.leaseMs;
  }

  /**
   * The peer cannot hold a lease at `nowMs`: its last renewal (or, with none since,
   * becameLeader) was at least `leaseMs` ago. Neither valid nor expired: a peer that has not
   * renewed since becameLeader, during the first `leaseMs`.
   */
  leaseExpired(nowMs: number, peer: string): boolean {
    if (this.leaderSinceMs === null) return false;
    if (this.released.has(peer)) return true;
    const since = Math.max(this.leaderSinceMs, this.renewedAtMs.get(peer) ?? Number.NEGATIVE_INFINITY);
    return nowMs >= since + this.opts.leaseMs;
  }

  // -------------------------------------------------------------------------------------------

  private sync(nowMs: number, map: ClusterMapView): void {
    if (map.settings !== null && map.shards.length === 0 && this.unassignedSinceMs === null) this.unassignedSinceMs = nowMs;
    for (const [id, m] of Object.entries(map.members)) {
      if (m.status !== 'dead') this.deadSinceMs.delete(id);
      else if (!this.deadSinceMs.has(id)) this.deadSinceMs.set(id, nowMs);
    }
    for (const id of this.deadSinceMs.keys()) if (memberOf(map, id) === undefined) this.deadSinceMs.delete(id);
    if (this.leaderSinceMs === null) return;
    const shards = map.shards;
    // Vacancies. Who vacated a shard is known only when the one change since the last look took
    // its primary away; otherwise (several changes, or the first look) wait a full lease.
    shards.forEach((a, shard) => {
      if (a.primary !== null) {
        this.vacancies.delete(shard);
        this.balancingTo.delete(shard);
        return;
      }
      if (this.vacancies.has(shard)) return;
      if (this.lastSeen === null) {
        this.vacancies.set(shard, { by: null, atMs: this.leaderSinceMs! });
        return;
      }
      const before = this.lastSeen[shard];
      const by = before !== undefined && before.primary !== null && before.epoch + 1 === a.epoch ? before.primary : null;
      this.vacancies.set(shard, { by, atMs: nowMs });
    });
    for (const shard of this.vacancies.keys()) if (shard >= shards.length) this.vacancies.delete(shard);
    this.lastSeen = shards.map((a) => ({ primary: a.primary, epoch: a.epoch }));
    // Stale requests: an older epoch, or the current one but not from the primary.
    if (shards.length > 0) {
      for (const [shard, list] of this.requests) {
        const a = shards[shard];
        const keep = a === undefined ? [] : list.filter((r) => r.epoch > a.epoch || (r.epoch === a.epoch && r.from === a.primary));
        if (keep.length === 0) this.requests.delete(shard);
        else this.requests.set(shard, keep);
      }
    }
    // Peers that are no longer members: their progress, and their renewals once expired (an
    // expired renewal says no more than none at all).
    for (const peer of this.progress.keys()) if (memberOf(map, peer) === undefined) this.progress.delete(peer);
    for (const peer of this.renewedAtMs.keys()) {
      if (memberOf(map, peer) === undefined && this.leaseExpired(nowMs, peer)) this.renewedAtMs.delete(peer);
    }
    this.watchCatchUps(nowMs, map);
  }

  /** The last lastSeq the primary of `shard` reported, or null. */
  private primarySeq(shard: number): number | null {
    const primary = this.lastSeen?.[shard]?.primary;
    if (primary == null) return null;
    return this.progress.get(primary)?.get(shard)?.lastSeq ?? null;
  }

  /** Follows every catching-up replica's reported progress (see rule 3b). */
  private watchCatchUps(nowMs: number, map: ClusterMapView): void {
    const seen = new Set<string>();
    map.shards.forEach((a, shard) => {
      if (a.primary === null) return;
      const primarySeq = this.progress.get(a.primary)?.get(shard)?.lastSeq;
      for (const peer of a.replicas) {
        if (a.inSync.includes(peer) || isGone(map, peer)) continue;
        const key = `${shard}:${peer}`;
        seen.add(key);
        let w = this.catchUpWatch.get(key);
        if (w === undefined) this.catchUpWatch.set(key, (w = { shard, peer, sinceMs: nowMs, lastSeq: -1, progressAtMs: nowMs }));
        const reported = this.progress.get(peer)?.get(shard)?.lastSeq;
        if (reported === undefined) continue;
        // Progress: its log grew, or it holds all the primary has (or the primary has not said).
        if (reported > w.lastSeq || primarySeq === undefined || reported >= primarySeq) w.progressAtMs = nowMs;
        w.lastSeq = Math.max(w.lastSeq, reported);
      }
    });
    for (const key of this.catchUpWatch.keys()) if (!seen.has(key)) this.catchUpWatch.delete(key);
    for (const [key, b] of this.catchUpBackoff) if (b.untilMs <= nowMs) this.catchUpBackoff.delete(key);
  }

  /** The target placement over the active members, cached until they or their capacities change. */
  private targetFor(nowMs: number, map: ClusterMapView, settings: ClusterSettings, keepRecentlyDead = true): string[][] | null {
    const active: PlacementMember[] = [];
    for (const id of Object.keys(map.members).sort()) {
      const m = map.members[id]!;
      // A recently dead member keeps its place until reReplicateAfterMs (see replacing()).
      const recentlyDead = keepRecentlyDead && m.status === 'dead' && nowMs < (this.deadSinceMs.get(id) ?? nowMs) + this.opts.reReplicateAfterMs;
      if (m.status === 'active' || recentlyDead) active.push({ peerId: id, capacity: m.capacity });
    }
    if (active.length === 0) return null;
    const key = `${keepRecentlyDead}/${settings.shardCount}/${settings.replicationFactor}/${active.map((m) => `${m.peerId}:${m.capacity}`).join(',')}`;
    if (key !== this.targetKey) {
      try {
        this.target = assignReplicas(active, {
          shardCount: settings.shardCount,
          replicationFactor: settings.replicationFactor,
          vnodesPerUnitCapacity: this.opts.vnodesPerUnitCapacity,
          loadFactor: this.opts.loadFactor,
        });
      } catch {
        // Capacities too large for the ring (ConfigError): no placement until they change.
        this.target = null;
      }
      this.targetKey = key;
    }
    return this.target;
  }

  private planInitial(nowMs: number, map: ClusterMapView, settings: ClusterSettings): ShardPlan | null {
    const active = Object.values(map.members).filter((m) => m.status === 'active').length;
    if (active === 0) return null;
    const waitedEnough = this.unassignedSinceMs !== null && nowMs >= this.unassignedSinceMs + this.opts.initialAssignmentDelayMs;
    if (active < settings.replicationFactor && !waitedEnough) return null;
    const target = this.targetFor(nowMs, map, settings, false);
    if (target === null) return null;
    const updates = target.map((replicas, shard) => ({
      shard,
      assignment: { replicas: [...replicas], primary: replicas[0]!, inSync: [...replicas], epoch: 1 },
    }));
    return {
      cmd: { type: 'set-shard-assignment', full: true, updates },
      reasons: [`initial assignment of ${settings.shardCount} shards over ${active} active members`],
    };
  }

  /** The one change for `shard`, by rule priority, that the map would accept; or null. */
  private planShard(ctx: PlanContext, shard: number, a: ShardAssignment): Change | null {
    const rules: Array<() => Change | null> = [
      () => this.applyRequests(ctx, shard, a),
      () => this.promote(ctx, shard, a),
      () => this.dropGone(ctx, a),
      () => this.abandonStalled(ctx, shard, a),
      () => this.addTargetReplicas(ctx, shard, a),
      () => this.trimToTarget(ctx, shard, a),
      () => this.balancePrimary(ctx, shard, a),
    ];
    for (const rule of rules) {
      const change = rule();
      if (change === null) continue;
      const final = this.withoutLeft(ctx, change);
      const problem = checkShardAssignment(final.assignment, ctx.settings, (id) => memberOf(ctx.map, id));
      if (problem === null) {
        if (rule === rules[4]) {
          for (const id of final.assignment.replicas) {
            if (!a.replicas.includes(id)) ctx.catchUps.set(id, (ctx.catchUps.get(id) ?? 0) + 1);
          }
        }
        return final;
      }
    }
    return null;
  }

  /** Also drop non-primary replicas that left or are gone (no new assignment may hold them). */
  private withoutLeft(ctx: PlanContext, change: Change): Change {
    const a = change.assignment;
    const left = a.replicas.filter((id) => id !== a.primary && (memberOf(ctx.map, id)?.status ?? 'left') === 'left');
    if (left.length === 0) return change;
    const replicas = without(a.replicas, left);
    const inSync = without(a.inSync, left);
    if (replicas.length === 0 || (a.inSync.length > 0 && inSync.length === 0)) return change; // the map will refuse it
    return { assignment: { ...a, replicas, inSync }, reason: `${change.reason}; drop ${left.join(', ')} (left)` };
  }

  /** Rule 1: the primary's in-sync change requests at the current epoch. */
  private applyRequests(ctx: PlanContext, shard: number, a: ShardAssignment): Change | null {
    const list = this.requests.get(shard);
    if (list === undefined || a.primary === null || this.leaseExpired(ctx.nowMs, a.primary)) return null;
    const inSync = new Set(a.inSync);
    const done: string[] = [];
    for (const r of list) {
      if (r.epoch !== a.epoch || r.from !== a.primary) continue;
      if (r.kind === 'renew-epoch') {
        // The primary restarted: a new epoch, nothing else (see protocols/replication/replica.ts)
        // — unless it came back with less than an in-sync backup holds (a log torn by a crash of
        // the machine, not just of the process): renewed, it would reconcile the backups down to
        // its shorter log and lose acknowledged writes. Then the shard is vacated for a backup.
        const ahead = this.aheadOfRestartedPrimary(shard, a);
        if (ahead === 'wait') continue;
        if (ahead !== null) return ahead;
        done.push('renew the epoch after a restart');
      } else if (r.kind === 'shrink-in-sync') {
        if (r.replica === a.primary || !inSync.has(r.replica)) continue;
        inSync.delete(r.replica);
        done.push(`shrink ${r.replica}`);
      } else {
        if (!a.replicas.includes(r.replica) || inSync.has(r.replica) || isGone(ctx.map, r.replica)) continue;
        inSync.add(r.replica);
        done.push(`expand ${r.replica}`);
      }
    }
    if (done.length === 0) return null;
    return {
      assignment: { replicas: [...a.replicas], primary: a.primary, inSync: inReplicaOrder(a.replicas, inSync), epoch: a.epoch + 1 },
      reason: `${done.join(', ')} (asked by primary ${a.primary})`,
    };
  }

  /**
   * For a primary asking for a fresh epoch after a restart: null when no in-sync backup reported
   * more of the log than it did (the renewal is safe); 'wait' while an in-sync backup has reported
   * nothing yet (decided on its next renewal); else a change that vacates the shard and leaves the
   * restarted primary out of the in-sync set (it catches up as a backup). Rule 2 then promotes the
   * in-sync replica with the most log once the vacating primary's lease has run out, as for any
   * vacancy.
   */
  private aheadOfRestartedPrimary(shard: number, a: ShardAssignment): Change | 'wait' | null {
    const p = a.primary!;
    const own = this.logRank(p, shard, a);
    const others = a.inSync.filter((id) => id !== p).map((id) => ({ id, rank: this.logRank(id, shard, a) }));
    if (own === null || others.some((o) => o.rank === null)) return 'wait';
    const ahead = others.find((o) => rankBelow(own, o.rank!));
    if (ahead === undefined) return null;
    const r = ahead.rank!;
    return {
      assignment: { replicas: [...a.replicas], primary: null, inSync: without(a.inSync, [p]), epoch: a.epoch + 1 },
      reason: `vacate: primary ${p} restarted with its log at ${own[0]}/${own[1]}, behind in-sync ${ahead.id}'s ${r[0]}/${r[1]}`,
    };
  }

  /**
   * How much of `shard`'s log `id` reported holding: (lastEpoch, lastSeq), or null when it reported
   * nothing or a position the map cannot back (an epoch beyond the shard's: no replica can hold
   * groups of an epoch the map never granted, so it is a lie or a bug).
   */
  private logRank(id: string, shard: number, a: ShardAssignment): [number, number] | null {
    const p = this.progress.get(id)?.get(shard);
    return p === undefined || p.lastEpoch > a.epoch || p.epoch > a.epoch ? null : [p.lastEpoch, p.lastSeq];
  }

  /** Rule 2: a new primary, once the current one (or the one that vacated) cannot be serving. */
  private promote(ctx: PlanContext, shard: number, a: ShardAssignment): Change | null {
    const { nowMs } = ctx;
    const x = a.primary;
    let why: string;
    if (x === null) {
      let vacancy = this.vacancies.get(shard);
      if (vacancy === undefined) this.vacancies.set(shard, (vacancy = { by: null, atMs: nowMs }));
      if (vacancy.by !== null && this.leaseExpired(nowMs, vacancy.by)) why = `vacated by ${vacancy.by}, whose lease expired`;
      else if (nowMs >= vacancy.atMs + this.opts.leaseMs) why = `vacated ${nowMs - vacancy.atMs} ms ago`;
      else return null;
    } else {
      if (!this.leaseExpired(nowMs, x)) return null;
      why = `primary ${x}'s lease expired`;
    }
    const leased = a.inSync.filter((id) => id !== x && this.leaseValid(nowMs, id));
    let candidates = leased.filter((id) => memberOf(ctx.map, id)?.status === 'active');
    if (candidates.length === 0) candidates = leased.filter((id) => memberOf(ctx.map, id)?.status === 'draining');
    const target = ctx.target?.[shard];
    if (target !== undefined && candidates.some((id) => target.includes(id))) candidates = candidates.filter((id) => target.includes(id));
    // Highest (lastEpoch, lastSeq); missing or unbacked progress ranks lowest; ties by order in `replicas`.
    const rankOf = (id: string): [number, number] => this.logRank(id, shard, a) ?? [-1, -1];
    // A shard vacated for balance goes to the replica it was vacated for, unless another
    // candidate reported more of the log: every in-sync replica should hold every acknowledged
    // write, but one whose machine lost unsynced writes (a torn log) and came back before anyone
    // noticed does not, and as primary it would cut the others down to its log.
    const preferred = x === null ? this.balancingTo.get(shard) : undefined;
    if (preferred !== undefined && candidates.includes(preferred) && !candidates.some((id) => rankBelow(rankOf(preferred), rankOf(id)))) candidates = [preferred];
    let best: string | null = null;
    let bestRank: [number, number] = [-Infinity, -Infinity];
    for (const id of candidates) {
      const rank = rankOf(id);
      const better =
        best === null ||
        rankBelow(bestRank, rank) ||
        (!rankBelow(rank, bestRank) && a.replicas.indexOf(id) < a.replicas.indexOf(best));
      if (better) {
        best = id;
        bestRank = rank;
      }
    }
    if (best === null) return null;
    const inSync = x === null ? [...a.inSync] : without(a.inSync, [x]);
    return {
      assignment: { replicas: [...a.replicas], primary: best, inSync, epoch: a.epoch + 1 },
      reason: `promote ${best} (${why}; progress ${bestRank[0]}/${bestRank[1]})`,
    };
  }

  /**
   * A member whose replicas are to be re-created elsewhere: left, no longer a member, or dead for
   * `reReplicateAfterMs` (DESIGN §4: a short outage or a restart does not move every shard).
   */
  private replacing(ctx: PlanContext, id: string): boolean {
    const m = memberOf(ctx.map, id);
    if (m === undefined || m.status === 'left') return true;
    if (m.status !== 'dead') return false;
    const since = this.deadSinceMs.get(id) ?? ctx.nowMs;
    return ctx.nowMs >= since + this.opts.reReplicateAfterMs;
  }

  /** Rule 3: drop backups that are dead, left or gone; never the last in-sync replica. */
  private dropGone(ctx: PlanContext, a: ShardAssignment): Change | null {
    let replicas = [...a.replicas];
    let inSync = [...a.inSync];
    const dropped: string[] = [];
    for (const id of a.replicas) {
      if (id === a.primary || !this.replacing(ctx, id) || replicas.length === 1) continue;
      if (inSync.length === 1 && inSync[0] === id) continue;
      replicas = without(replicas, [id]);
      inSync = without(inSync, [id]);
      dropped.push(id);
    }
    if (dropped.length === 0) return null;
    return {
      assignment: { replicas, primary: a.primary, inSync, epoch: a.epoch + 1 },
      reason: `drop ${dropped.map((id) => `${id} (${memberOf(ctx.map, id)?.status ?? 'not a member'})`).join(', ')}`,
    };
  }

  /** Rule 3b: remove catching-up replicas that made no progress for catchUpStallMs; back off. */
  private abandonStalled(ctx: PlanContext, shard: number, a: ShardAssignment): Change | null {
    if (a.primary === null) return null;
    const stalled: string[] = [];
    for (const peer of a.replicas) {
      if (peer === a.primary || a.inSync.includes(peer)) continue;
      const w = this.catchUpWatch.get(`${shard}:${peer}`);
      if (w !== undefined && ctx.nowMs - w.progressAtMs >= this.opts.catchUpStallMs) stalled.push(peer);
    }
    if (stalled.length === 0) return null;
    for (const peer of stalled) {
      const key = `${shard}:${peer}`;
      const w = this.catchUpWatch.get(key)!;
      const reason = `no progress for ${Math.round(ctx.nowMs - w.progressAtMs)} ms at seq ${w.lastSeq} (primary at ${this.primarySeq(shard) ?? '?'})`;
      if (!this.catchUpBackoff.has(key)) this.abandonedTotal++;
      this.catchUpBackoff.set(key, { shard, peer, untilMs: ctx.nowMs + this.opts.catchUpRetryAfterMs, reason });
    }
    return {
      assignment: { replicas: without(a.replicas, stalled), primary: a.primary, inSync: [...a.inSync], epoch: a.epoch + 1 },
      reason: `abandon the catch-up of ${stalled.join(', ')} (stalled for ${this.opts.catchUpStallMs} ms; retried after ${this.opts.catchUpRetryAfterMs} ms)`,
    };
  }

  /** Target replicas a shard lacks that could be added now (active, not backing off). */
  private missingTargets(ctx: PlanContext, shard: number, a: ShardAssignment): string[] {
    const target = ctx.target?.[shard];
    if (target === undefined || a.primary === null) return [];
    const backingOff = (id: string): boolean => (this.catchUpBackoff.get(`${shard}:${id}`)?.untilMs ?? Number.NEGATIVE_INFINITY) > ctx.nowMs;
    return target.filter((id) => !a.replicas.includes(id) && memberOf(ctx.map, id)?.status === 'active' && !backingOff(id));
  }

  /** Which shards start a move in this plan, and to whom: the rebalance planner's choice. */
  private chooseMoves(ctx: PlanContext): Map<number, string> {
    const candidates: MoveCandidate[] = [];
    const inFlight: MoveInFlight[] = [];
    ctx.map.shards.forEach((a, shard) => {
      if (a.primary === null) return;
      for (const id of a.replicas) if (!a.inSync.includes(id) && !isGone(ctx.map, id)) inFlight.push({ shard, to: id, from: a.primary });
      const liveInSync = a.inSync.filter((id) => memberOf(ctx.map, id)?.status === 'active').length;
      for (const to of this.missingTargets(ctx, shard, a)) candidates.push({ shard, to, from: a.primary, liveInSync });
    });
    if (candidates.length === 0) return new Map();
    const plan = planMoves(
      candidates,
      inFlight,
      {
        maxPerDestination: this.opts.maxCatchUpsPerPeer,
        maxPerSource: this.opts.maxSendsPerPeer,
        maxInFlight: this.opts.maxMovesInFlight,
        replicationFactor: ctx.settings.replicationFactor,
      },
      this.planCount++,
    );
    return new Map(plan.chosen.map((m) => [m.shard, m.to]));
  }

  /** Rule 4: add missing target replicas as catching-up, making room if the shard is full. */
  private addTargetReplicas(ctx: PlanContext, shard: number, a: ShardAssignment): Change | null {
    const target = ctx.target?.[shard];
    if (target === undefined || a.primary === null) return null;
    const chosen = ctx.moves.get(shard);
    const missing = this.missingTargets(ctx, shard, a).filter((id) => id === chosen);
    if (missing.length === 0) return null;
    const room = ctx.settings.replicationFactor + 1 - a.replicas.length;
    if (room > 0) {
      const add = missing.slice(0, room);
      return {
        assignment: { replicas: [...a.replicas, ...add], primary: a.primary, inSync: [...a.inSync], epoch: a.epoch + 1 },
        reason: `add ${add.join(', ')} (catching up, target ${target.join(', ')})`,
      };
    }
    // Full: a backup outside the target makes room: a catching-up one if there is one; an
    // in-sync one only while no target replica is still catching up (wait for it instead).
    const extras = a.replicas.filter((id) => id !== a.primary && !target.includes(id));
    const targetCatchingUp = a.replicas.some((id) => target.includes(id) && !a.inSync.includes(id));
    const victim = extras.find((id) => !a.inSync.includes(id)) ?? (targetCatchingUp ? undefined : extras[0]);
    if (victim === undefined) return null;
    const add = missing[0]!;
    return {
      assignment: {
        replicas: [...without(a.replicas, [victim]), add],
        primary: a.primary,
        inSync: without(a.inSync, [victim]),
        epoch: a.epoch + 1,
      },
      reason: `replace ${victim} by ${add} (catching up, target ${target.join(', ')})`,
    };
  }

  /** Rule 5: every target replica in sync: remove the others; vacate a non-target primary. */
  /**
   * Rule 6: preferred primaries (Kafka's preferred leader election). Failovers and joins leave
   * primaries where they landed, and a peer that joined after the first assignment would lead
   * nothing. In a settled shard (replicas exactly the target, all in sync) whose primary is not
   * the target's first replica, no replica anywhere is catching up, and the shard's log has not
   * grown for BALANCE_QUIET_MS, vacate it for that replica, a few shards at a time; the
   * promotion (rule 2) then waits out the old primary's lease and picks the preferred replica.
   */
  private balancePrimary(ctx: PlanContext, shard: number, a: ShardAssignment): Change | null {
    const target = ctx.target?.[shard];
    if (target === undefined || a.primary === null) return null;
    const preferred = target[0]!;
    if (preferred === a.primary) return null;
    const settled = a.replicas.length === target.length && target.every((id) => a.replicas.includes(id)) && a.inSync.length === a.replicas.length;
    if (!settled || !this.leaseValid(ctx.nowMs, preferred) || memberOf(ctx.map, preferred)?.status !== 'active') return null;
    // Moves first: balance only once no replica anywhere is catching up; and only a quiet shard.
    if (ctx.vacant >= MAX_BALANCING_VACANCIES || ctx.catchUps.size > 0) return null;
    if (ctx.nowMs - (this.activity.get(shard)?.atMs ?? Number.NEGATIVE_INFINITY) < BALANCE_QUIET_MS) return null;
    ctx.vacant++;
    this.balancingTo.set(shard, preferred);
    return {
      assignment: { replicas: [...a.replicas], primary: null, inSync: [...a.inSync], epoch: a.epoch + 1 },
      reason: `vacate primary ${a.primary} for the preferred replica ${preferred} (balance)`,
    };
  }

  private trimToTarget(ctx: PlanContext, shard: number, a: ShardAssignment): Change | null {
    const target = ctx.target?.[shard];
    if (target === undefined || !target.every((id) => a.inSync.includes(id))) return null;
    const extras = a.replicas.filter((id) => !target.includes(id));
    if (extras.length === 0) return null;
    const backups = extras.filter((id) => id !== a.primary);
    if (backups.length > 0) {
      return {
        assignment: { replicas: without(a.replicas, backups), primary: a.primary, inSync: without(a.inSync, backups), epoch: a.epoch + 1 },
        reason: `remove ${backups.join(', ')} (not in target ${target.join(', ')}, which is in sync)`,
      };
    }
    // Only the primary is outside the target: hand over, if some target replica could take it.
    const successor = target.some((id) => this.leaseValid(ctx.nowMs, id) && memberOf(ctx.map, id)?.status === 'active');
    if (!successor) return null;
    return {
      assignment: { replicas: [...a.replicas], primary: null, inSync: [...a.inSync], epoch: a.epoch + 1 },
      reason: `vacate primary ${a.primary} (not in target ${target.join(', ')}, which is in sync)`,
    };
  }
}
