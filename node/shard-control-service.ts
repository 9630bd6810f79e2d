/**
 * The coordinator's side of leases and shard control: one concern of the store service, kept
 * apart. Only the Raft leader acts on it; every peer holds one, idle until it leads.
 *
 * - `grantLease`: a peer's lease renewal (or release): its replicas' progress and the requests of
 *   its primaries (in-sync changes, fresh epochs) go to the pure ShardController
 *   (protocols/shard-control); its reported capacity and `shoal drain` wish become map updates;
 *   the snapshot transfers it reports are kept for `/v1/moves`. Every field is checked
 *   (InvalidMessageError names the bad one).
 * - `control`: every CONTROL_MS (and at once after a request), the controller's plan is proposed
 *   to the cluster map, one proposal at a time.
 */
import type { ClusterMapView } from '../protocols/cluster-map/types.js';
import { InvalidMessageError } from '../protocols/errors.js';
import type { InSyncChangeRequest, ReplicaProgress } from '../protocols/replication/types.js';
import { ShardController, type CatchUpReport } from '../protocols/shard-control/index.js';
import type { Coordinator } from './coordinator.js';
import type { Logger } from './log.js';
import { arr, int, obj, str } from './store-wire.js';

/** Most snapshot transfers one renewal reports. */
export const MAX_REPORTED_TRANSFERS = 256;
/** A reported transfer not refreshed for this long is dropped, ms. */
const REPORTED_TRANSFER_TTL_MS = 5000;

/** What a primary reported of one snapshot transfer it sends. */
export interface ReportedTransfer {
  from: string;
  atMs: number;
  bytesDone: number;
  bytesTotal: number | null;
  rateBps: number;
  resumes: number;
}

/** A renewal's progress and requests, checked (`from` must be the sender). */
export function decodeRenewal(from: string, h: Record<string, unknown>): { progress: ReplicaProgress[]; requests: InSyncChangeRequest[] } {
  const progress = arr(h, 'progress', 1024).map((p, k) => {
    const o = obj(p, `progress[${k}]`);
    return { shard: int(o, 'shard', 0, 1023), epoch: int(o, 'epoch'), lastSeq: int(o, 'lastSeq'), lastEpoch: int(o, 'lastEpoch'), commitSeq: int(o, 'commitSeq') };
  });
  const requests = arr(h, 'requests', 4096).map((r, k): InSyncChangeRequest => {
    const o = obj(r, `requests[${k}]`);
    const kind = o.kind;
    if (kind !== 'shrink-in-sync' && kind !== 'expand-in-sync' && kind !== 'renew-epoch') throw new InvalidMessageError(`requests[${k}].kind: unknown`);
    const req: InSyncChangeRequest = { kind, shard: int(o, 'shard', 0, 1023), from: str(o, 'from', 128), replica: str(o, 'replica', 128), epoch: int(o, 'epoch') };
    if (req.from !== from) throw new InvalidMessageError(`requests[${k}].from: not the sender`);
    return req;
  });
  return { progress, requests };
}

export interface ShardControlServiceOptions {
  coordinator: Coordinator;
  /** Lease length granted, ms. */
  leaseMs: number;
  log: Logger;
  now(): number;
  /** The committed map as the store service last saw it. */
  view(): ClusterMapView;
}

export class ShardControlService {
  readonly counters = { assignmentsProposed: 0 };
  private readonly controller: ShardController;
  private wasLeader = false;
  private planning = false;
  private stopped = false;
  private readonly capacityUpdates = new Set<string>();
  private readonly reportedCapacity = new Map<string, number>();
  /** Status updates (draining / active) proposed and not seen committed. */
  private readonly drainUpdates = new Set<string>();
  private readonly reported = new Map<string, ReportedTransfer>();

  constructor(private readonly opts: ShardControlServiceOptions) {
    this.controller = new ShardController({ leaseMs: opts.leaseMs });
  }

  stop(): void {
    this.stopped = true;
  }

  /** Call after every applied map change. */
  observe(now: number, view: ClusterMapView): void {
    if (this.opts.coordinator.isLeader) this.controller.observe(now, view);
  }

  /** A lease renewal or release from `from`; the reply carries the lease length and map version. Throws `not_leader` unless this peer leads. */
  grantLease(from: string, h: Record<string, unknown>): Record<string, unknown> {
    const { coordinator, log } = this.opts;
    if (!coordinator.isLeader) throw Object.assign(new Error('not the coordinator'), { code: 'not_leader' });
    const now = this.opts.now();
    const view = this.opts.view();
    this.checkLeader(now);
    const { progress, requests } = decodeRenewal(from, h);
    if (h.release === true) {
      this.controller.release(now, from);
      setImmediate(() => this.control());
      return { leaseMs: this.opts.leaseMs, mapVersion: view.version };
    }
    this.controller.renew(now, from, progress, requests);
    this.noteTransfers(now, from, h.transfers);
    // --capacity takes effect when a peer joins (the map starts members at 1) or restarts with a
    // new value; an operator's PUT /v1/cluster/members/{id} overrides it until then.
    const capacity = h.capacity;
    const member = view.members[from];
    const prev = this.reportedCapacity.get(from);
    if (typeof capacity === 'number') this.reportedCapacity.set(from, capacity);
    const wanted = prev === undefined ? member?.capacity === 1 && capacity !== 1 : prev !== capacity;
    if (typeof capacity === 'number' && member !== undefined && wanted && member.capacity !== capacity && !this.capacityUpdates.has(from)) {
      this.capacityUpdates.add(from);
      coordinator
        .propose({ type: 'update-member', peerId: from, capacity })
        .catch((err: unknown) => {
          this.reportedCapacity.delete(from);
          log.warn('capacity update not applied', { member: from, capacity, err });
        })
        .finally(() => this.capacityUpdates.delete(from));
    }
    // `shoal drain` on that peer: its status goes to draining (the controller then moves its
    // replicas to the active members) or back to active.
    if (typeof h.drain === 'boolean' && member !== undefined && !this.drainUpdates.has(from)) {
      const status = h.drain ? (member.status === 'active' ? 'draining' : null) : member.status === 'draining' ? 'active' : null;
      if (status !== null) {
        this.drainUpdates.add(from);
        coordinator
          .propose({ type: 'update-member', peerId: from, status })
          .then(() => log.info(status === 'draining' ? 'draining a peer: moving its replicas away' : 'drain cancelled', { member: from }))
          .catch((err: unknown) => log.warn('drain status not applied', { member: from, status, err }))
          .finally(() => this.drainUpdates.delete(from));
      }
    }
    if (requests.length > 0) setImmediate(() => this.control());
    return { leaseMs: this.opts.leaseMs, mapVersion: view.version };
  }

  /** The snapshot transfer of `shard` to `to` as its primary last reported it (coordinator only). */
  reportedTransfer(shard: number, to: string): ReportedTransfer | undefined {
    return this.reported.get(`${shard}:${to}`);
  }

  /** Catch-ups under way and abandoned ones, as the shard controller sees them; null unless this peer is the coordinator. */
  catchUps(): CatchUpReport | null {
    return this.wasLeader && this.opts.coordinator.isLeader ? this.controller.catchUpReport(this.opts.now()) : null;
  }

  /** Proposes the controller's next plan, if this peer leads and no proposal is in flight. */
  control(): void {
    if (this.stopped) return;
    const { coordinator, log } = this.opts;
    const now = this.opts.now();
    this.checkLeader(now);
    if (!this.wasLeader || this.planning) return;
    const plan = this.controller.plan(now, this.opts.view());
    if (plan === null) return;
    this.planning = true;
    this.counters.assignmentsProposed++;
    log.info('shard assignment proposed', { shards: plan.cmd.updates.length, reasons: plan.reasons.slice(0, 8) });
    for (const reason of plan.reasons) if (reason.includes('abandon the catch-up')) log.warn('catch-up abandoned', { reason });
    coordinator
      .propose(plan.cmd)
      .catch((err: unknown) => log.info('shard assignment not applied', { err }))
      .finally(() => {
        this.planning = false;
      });
  }

  /** The snapshot transfers a primary reported in its renewal (bounded, checked, shown in /v1/moves). */
  private noteTransfers(now: number, from: string, raw: unknown): void {
    const before = new Map<string, number>();
    for (const [k, t] of this.reported) {
      if (t.from === from) before.set(k, t.bytesDone);
      if (t.from === from || now - t.atMs > REPORTED_TRANSFER_TTL_MS) this.reported.delete(k);
    }
    if (raw === undefined) return;
    const list = arr({ transfers: raw }, 'transfers', MAX_REPORTED_TRANSFERS);
    for (const [k, row] of list.entries()) {
      if (!Array.isArray(row) || row.length !== 6 || !row.every((v, i) => (i === 1 ? typeof v === 'string' && v.length <= 128 : typeof v === 'number' && Number.isFinite(v)))) {
        throw new InvalidMessageError(`transfers[${k}]: must be [shard, to, bytesDone, bytesTotal, rateBps, resumes]`);
      }
      const [shard, to, bytesDone, bytesTotal, rateBps, resumes] = row as [number, string, number, number, number, number];
      this.reported.set(`${shard}:${to}`, { from, atMs: now, bytesDone, bytesTotal: bytesTotal < 0 ? null : bytesTotal, rateBps, resumes });
      if (bytesDone > (before.get(`${shard}:${to}`) ?? 0)) this.controller.transferProgress(now, shard, to);
    }
  }

  private checkLeader(now: number): void {
    const leader = this.opts.coordinator.isLeader;
    if (leader && !this.wasLeader) {
      this.controller.becameLeader(now);
      this.reportedCapacity.clear();
      this.controller.observe(now, this.opts.view());
      this.opts.log.info('shard controller active', { leaseMs: this.opts.leaseMs });
    }
    this.wasLeader = leader;
  }
}
