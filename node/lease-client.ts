/**
 * This peer's side of the primary lease (DESIGN §3): renew it with the coordinator every
 * LEASE_RENEW_MS (and at once when a replica needs an in-sync change, a drain or a capacity
 * change), carrying every replica's progress and the snapshot transfers this peer sends; apply
 * the granted lease to the replica cores once the local map has reached the version it was
 * granted at; release it before a graceful stop.
 *
 * The other side (granting) is ShardControlService.grantLease; on the coordinator itself the
 * renewal is a local call.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { ClusterMapView } from '../protocols/cluster-map/types.js';
import type { InSyncChangeRequest, ReplicaProgress } from '../protocols/replication/types.js';
import type { TransferProgress } from '../protocols/rebalance/index.js';
import type { Logger } from './log.js';
import { MAX_REPORTED_TRANSFERS } from './shard-control-service.js';
import { decodeFrame, encodeFrame, FrameKind, int } from './store-wire.js';

/** How often each peer renews its lease, ms (DESIGN §3: ~100 ms). */
export const LEASE_RENEW_MS = 100;
/** An urgent renewal (a request to carry) waits at least this long after the last one, ms. */
const URGENT_MIN_GAP_MS = 20;
/** In-sync change requests held for the next renewal; the oldest are dropped beyond it (the cores repeat what they still need). */
const MAX_PENDING_REQUESTS = 1024;

export interface LeaseClientOptions {
  self: string;
  /** The lease length the coordinator grants (used for the renewal's timeout). */
  leaseMs: number;
  capacity: number;
  now: () => number;
  view: () => ClusterMapView;
  /** The coordinator (Raft leader) as this peer knows it, or null. */
  coordinator: () => string | null;
  /** Grants a lease locally (when this peer is the coordinator). */
  grantLocal: (header: Record<string, unknown>) => Record<string, unknown>;
  /** Sends a lease frame to the coordinator and resolves with its answer. */
  request: (to: string, frame: Uint8Array, timeoutMs: number) => Promise<Uint8Array>;
  /** Progress of every replica this peer holds. */
  progress: () => ReplicaProgress[];
  /** Snapshot transfers this peer sends (reported to the coordinator for `/v1/moves`). */
  transfers: () => TransferProgress[];
  /** Hands a lease (valid until this `now()` time) to every replica core. */
  apply: (until: number) => void;
  stopped: () => boolean;
  log: Logger;
}

export class LeaseClient {
  readonly counters = { leaseRenewals: 0, leaseFailures: 0 };
  /** The lease this peer holds, until this `now()` time. */
  private until = Number.NEGATIVE_INFINITY;
  /** A lease granted at a map version this peer has not applied yet. */
  private pending: { until: number; mapVersion: number } | null = null;
  private renewing = false;
  private releasing = false;
  private lastRenewAt = 0;
  private requests: InSyncChangeRequest[] = [];
  private capacityNow: number;
  private drainWanted: boolean | null = null;

  constructor(private readonly opts: LeaseClientOptions) {
    this.capacityNow = opts.capacity;
  }

  /** Until when (a `now()` time) this peer holds the lease. */
  get leaseUntil(): number {
    return this.until;
  }

  /** Whether a drain of this peer was asked for (and not withdrawn). */
  get draining(): boolean {
    return this.drainWanted === true;
  }

  /** The local map changed: a lease granted at its version applies now. */
  onMapChange(view: ClusterMapView): void {
    const p = this.pending;
    if (p !== null && view.version >= p.mapVersion) {
      this.pending = null;
      this.setLease(p.until);
    }
  }

  /** In-sync change requests of the replica cores: carried by an urgent renewal. */
  request(requests: readonly InSyncChangeRequest[]): void {
    if (requests.length === 0) return;
    this.requests.push(...requests);
    if (this.requests.length > MAX_PENDING_REQUESTS) this.requests.splice(0, this.requests.length - MAX_PENDING_REQUESTS);
    void this.renew(true);
  }

  /** Ask the coordinator to drain this peer (move every replica it holds to others), or to stop. */
  setDraining(on: boolean): void {
    this.drainWanted = on;
    void this.renew(true);
  }

  /** Change the capacity this peer reports; the coordinator applies it to the map. */
  setCapacity(capacity: number): void {
    this.capacityNow = capacity;
    void this.renew(true);
  }

  private setLease(until: number): void {
    this.until = until;
    this.opts.apply(until);
  }

  /**
   * Before a graceful stop: stop serving as primary at once and tell the coordinator, which can
   * then promote other replicas without waiting out the lease (no write outage on a rolling
   * restart). Best effort and bounded: without it the lease simply lapses.
   */
  async release(timeoutMs = 1000): Promise<void> {
    if (this.opts.stopped() || this.releasing) return;
    this.releasing = true;
    for (let i = 0; i < 100 && this.renewing; i++) await sleep(5);
    this.pending = null;
    this.setLease(Number.NEGATIVE_INFINITY);
    const leader = this.opts.coordinator();
    if (leader === null) return;
    const header = { release: true, mapVersion: this.opts.view().version, capacity: this.capacityNow, progress: [], requests: [] };
    try {
      if (leader === this.opts.self) this.opts.grantLocal(header);
      else await this.opts.request(leader, encodeFrame(FrameKind.lease, header), timeoutMs);
      this.opts.log.info('lease released', { coordinator: leader });
    } catch (err) {
      this.opts.log.info('lease release not delivered; it will lapse', { err });
    }
  }

  /** Renew the lease with the coordinator, carrying progress and in-sync requests. */
  async renew(urgent = false): Promise<void> {
    if (this.opts.stopped() || this.renewing || this.releasing) return;
    const now = this.opts.now();
    if (urgent && now - this.lastRenewAt < URGENT_MIN_GAP_MS) return;
    const leader = this.opts.coordinator();
    const view = this.opts.view();
    if (leader === null || view.settings === null) return;
    this.renewing = true;
    this.lastRenewAt = now;
    const requests = this.requests.splice(0);
    const sending = this.opts.transfers();
    // Snapshot transfers this peer sends: the coordinator shows their bytes, rate and ETA in /v1/moves.
    const transfers = sending.length === 0 ? undefined : sending.slice(0, MAX_REPORTED_TRANSFERS).map((t) => [t.shard, t.to, t.bytesDone, t.bytesTotal ?? -1, t.rateBps, t.resumes]);
    const header = {
      mapVersion: view.version,
      capacity: this.capacityNow,
      progress: this.opts.progress(),
      requests,
      ...(this.drainWanted !== null ? { drain: this.drainWanted } : {}),
      ...(transfers !== undefined ? { transfers } : {}),
    };
    const sentAt = this.opts.now();
    try {
      let reply: Record<string, unknown>;
      if (leader === this.opts.self) {
        reply = this.opts.grantLocal(header);
      } else {
        const bytes = await this.opts.request(leader, encodeFrame(FrameKind.lease, header), Math.max(50, this.opts.leaseMs));
        reply = decodeFrame(bytes).header;
      }
      const leaseMs = int(reply, 'leaseMs', 1, 600_000);
      const mapVersion = int(reply, 'mapVersion');
      // Count from when the renewal was sent, minus a margin for clock-rate drift and scheduling.
      const until = sentAt + leaseMs - Math.max(20, Math.floor(leaseMs / 10));
      this.counters.leaseRenewals++;
      if (this.opts.view().version >= mapVersion) this.setLease(until);
      else this.pending = { until, mapVersion };
    } catch (err) {
      this.counters.leaseFailures++;
      // The cores repeat the requests they still need.
      this.opts.log.debug('lease renewal failed', { leader, err });
    } finally {
      this.renewing = false;
    }
  }
}
