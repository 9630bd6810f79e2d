/**
 * The web dashboard (issue 13): static assets served at `/` and one JSON snapshot of what the
 * page shows at `/v1/dashboard`, which the page polls every second.
 *
 * The assets (node/http/dashboard/, copied next to this module by `npm run build`) hold no
 * cluster data, so they load without the bearer token; the snapshot is an API route like any
 * other and needs the token when one is set (the page asks for it, or takes it from the URL's
 * `#token=` fragment, which browsers never send to the server). The page builds its DOM with
 * textContent only: peer ids, addresses and task types come from the network.
 */
import { readFileSync } from 'node:fs';
import type { MemberView } from '../../protocols/membership/types.js';
import type { ShardSummary } from '../store-api.js';
import type { MoveInfo } from '../store-service.js';
import type { HttpHandlers } from './server.js';

/** Samples of phi kept per member for the sparklines: one a second, a minute of them. */
export const PHI_HISTORY_SAMPLES = 60;

/**
 * Each member's phi over the last minute, sampled by the server (so a page opened now still
 * shows the past minute). Bounded: PHI_HISTORY_SAMPLES per member, members no longer in the
 * table are forgotten.
 */
export class PhiHistory {
  private readonly series = new Map<string, number[]>();

  record(members: readonly Pick<MemberView, 'peerId' | 'phi'>[]): void {
    const present = new Set<string>();
    for (const m of members) {
      present.add(m.peerId);
      let s = this.series.get(m.peerId);
      if (s === undefined) this.series.set(m.peerId, (s = []));
      s.push(Number.isFinite(m.phi) ? Math.round(m.phi * 100) / 100 : 0);
      if (s.length > PHI_HISTORY_SAMPLES) s.splice(0, s.length - PHI_HISTORY_SAMPLES);
    }
    for (const id of [...this.series.keys()]) if (!present.has(id)) this.series.delete(id);
  }

  of(peerId: string): number[] {
    return [...(this.series.get(peerId) ?? [])];
  }
}

/** One static asset, read once at start. */
interface Asset {
  type: string;
  body: Buffer;
}

const ASSET_TYPES: Record<string, string> = {
  'index.html': 'text/html; charset=utf-8',
  'dashboard.js': 'text/javascript; charset=utf-8',
  'dashboard.css': 'text/css; charset=utf-8',
};

/**
 * The dashboard's files by URL path (`/`, `/dashboard/dashboard.js`, ...), or the reason they
 * cannot be served (the page then answers 503 naming it, and the API works as before).
 */
export function loadDashboardAssets(dir: URL = new URL('./dashboard/', import.meta.url)): Map<string, Asset> | string {
  const out = new Map<string, Asset>();
  try {
    for (const [name, type] of Object.entries(ASSET_TYPES)) {
      const body = readFileSync(new URL(name, dir));
      out.set(name === 'index.html' ? '/' : `/dashboard/${name}`, { type, body });
    }
  } catch (err) {
    return `the dashboard's files are missing (${(err as Error).message}); run npm run build`;
  }
  return out;
}

/**
 * Headers of every dashboard response: the page runs only its own script and style, talks only
 * to this peer, and may not be framed by another site (clickjacking).
 */
export const DASHBOARD_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-cache',
});

/** The paths the static assets live at (served without the bearer token); the whole path is captured. */
export const DASHBOARD_ASSET_PATH = /^(\/|\/index\.html|\/dashboard\/[a-z.]{1,32})$/;

export function isDashboardAssetPath(path: string): boolean {
  return DASHBOARD_ASSET_PATH.test(path);
}

/** What `/v1/dashboard` answers: everything the page shows, from this peer's view. */
export interface DashboardSnapshot {
  /** Wall-clock ms when taken. */
  at: number;
  self: string;
  raft: { role: string; term: number; coordinator: string | null; commitIndex: number; clusterMapVersion: number; voters: string[]; learners: string[] };
  members: Array<
    Pick<MemberView, 'peerId' | 'state' | 'phi' | 'incarnation' | 'lastHeartbeatAgeMs' | 'self'> & {
      phiHistory: number[];
      cpuPercent: number | null;
      /** From the committed cluster map: capacity and status (active, draining...), null when not a member of it. */
      capacity: number | null;
      mapStatus: string | null;
      primaries: number;
      replicas: number;
    }
  >;
  shards: ShardSummary | null;
  /** Shards in order with their replicas (the ring's segments). */
  ring: Array<{ shard: number; primary: string | null; replicas: string[]; inSync: string[]; epoch: number }>;
  moves: MoveInfo[];
  /** The task queue (the coordinator holds it; null elsewhere) and the autoscaler (null when off or unknown). */
  scheduler: unknown;
  autoscaler: unknown;
}

/** The snapshot from the handlers; null while the peer starts (503). */
export function dashboardSnapshot(h: HttpHandlers, history: PhiHistory): DashboardSnapshot | null {
  const status = h.status();
  const map = h.clusterMap();
  if (status === null || map === null) return null;
  const perPeer = status.shards?.perPeer ?? {};
  let scheduler: unknown = null;
  try {
    scheduler = h.tasks?.()?.schedulerStatus() ?? null;
  } catch {
    scheduler = null;
  }
  return {
    at: Date.now(),
    self: status.peerId,
    raft: {
      role: status.role,
      term: status.term,
      coordinator: status.coordinator,
      commitIndex: status.commitIndex,
      clusterMapVersion: status.clusterMapVersion,
      voters: status.voters,
      learners: status.learners,
    },
    members: status.members.map((m) => ({
      peerId: m.peerId,
      state: m.state,
      phi: m.phi,
      incarnation: m.incarnation,
      lastHeartbeatAgeMs: m.lastHeartbeatAgeMs,
      self: m.self,
      phiHistory: history.of(m.peerId),
      cpuPercent: m.load?.cpuPercent ?? null,
      capacity: map.members[m.peerId]?.capacity ?? null,
      mapStatus: map.members[m.peerId]?.status ?? null,
      primaries: perPeer[m.peerId]?.primaries ?? 0,
      replicas: perPeer[m.peerId]?.replicas ?? 0,
    })),
    shards: status.shards,
    ring: map.shards.map((s, shard) => ({ shard, primary: s.primary, replicas: s.replicas, inSync: s.inSync, epoch: s.epoch })),
    moves: h.moves?.() ?? [],
    scheduler,
    autoscaler: h.autoscaler?.() ?? null,
  };
}
