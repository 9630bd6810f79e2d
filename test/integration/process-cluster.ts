/**
 * A cluster of real `shoal` processes on 127.0.0.1 for process tests and benchmarks: start,
 * restart, wait until writable or settled, dump what every peer shows; and a bounded HTTP client.
 */
import assert from 'node:assert/strict';
import { readdirSync, statSync, truncateSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import type { PeerStatus } from '../../node/peer.js';
import type { ShardInfo, ShardSummary } from '../../node/store-api.js';
import { makeTempDir, ProcessPeer, removeDir, waitFor } from './harness.js';

/** The status with the store's summary (`shards` is null until the store runs). */
export type StoreStatus = PeerStatus & { shards?: ShardSummary | null };

const now = (): number => performance.now();

// ---------------------------------------------------------------------------------------------
// HTTP

export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** One HTTP request over `agent`, bounded by `timeoutMs` (then the request is destroyed and rejects). */
export function request(agent: http.Agent, address: string, method: string, path: string, body: Buffer | undefined, timeoutMs: number): Promise<Reply> {
  const colon = address.lastIndexOf(':');
  const host = address.slice(0, colon);
  const port = Number(address.slice(colon + 1));
  return new Promise<Reply>((resolve, reject) => {
    let settled = false;
    const settle = (fn: () => void): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      fn();
    };
    const headers: Record<string, string | number> = {};
    if (body !== undefined) {
      headers['content-type'] = 'application/octet-stream';
      headers['content-length'] = body.length;
    }
    const req = http.request({ host, port, method, path, agent, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => settle(() => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) })));
      res.on('error', (err) => settle(() => reject(err)));
      res.on('aborted', () => settle(() => reject(new Error('response aborted'))));
    });
    const timer = setTimeout(() => {
      settle(() => reject(new Error(`timeout after ${timeoutMs} ms`)));
      req.destroy();
    }, timeoutMs);
    req.on('error', (err) => settle(() => reject(err)));
    req.end(body);
  });
}

export function jsonOf(body: Buffer): Record<string, unknown> {
  try {
    const v: unknown = JSON.parse(body.toString('utf8'));
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

export const kvPath = (key: string): string => `/v1/kv/${encodeURIComponent(key)}`;

// ---------------------------------------------------------------------------------------------
// A cluster of processes

export const short = (id: string | null | undefined): string => (id == null ? '-' : id.slice(-6));

export class Cluster {
  /** The current process of each slot (p0, p1, ...). */
  readonly peers: ProcessPeer[] = [];
  /** Processes that were replaced by a restart (kept for their stderr in dumps). */
  readonly retired: ProcessPeer[] = [];

  private constructor(readonly dir: string, readonly extraArgs: string[]) {}

  /** An empty cluster with its temp dir; {@link startPeers} starts the processes. */
  static async create(extraArgs: string[] = []): Promise<Cluster> {
    return new Cluster(await makeTempDir('shoal-store-it-'), extraArgs);
  }

  /** Starts `n` peers, the first one seeding the others (each kept as soon as it runs, for cleanup). */
  async startPeers(n: number): Promise<void> {
    const seed = await ProcessPeer.start(join(this.dir, 'p0'), { extraArgs: this.extraArgs });
    this.peers.push(seed);
    const others = await Promise.allSettled(
      Array.from({ length: n - 1 }, (_, i) => ProcessPeer.start(join(this.dir, `p${i + 1}`), { join: [seed.joinRef], extraArgs: this.extraArgs })),
    );
    for (const o of others) if (o.status === 'fulfilled') this.peers.push(o.value);
    const failed = others.find((o) => o.status === 'rejected');
    if (failed !== undefined) throw (failed as PromiseRejectedResult).reason;
  }

  label(peerId: string | null | undefined): string {
    if (peerId == null) return '-';
    const i = this.peers.findIndex((p) => p.peerId === peerId);
    return i >= 0 ? `p${i}` : short(peerId);
  }

  async status(p: ProcessPeer, timeoutMs = 2000): Promise<StoreStatus> {
    const res = await fetch(`http://${p.httpAddress}/v1/status`, { signal: AbortSignal.timeout(timeoutMs) });
    if (!res.ok) throw new Error(`status ${res.status}`);
    return (await res.json()) as StoreStatus;
  }

  async shards(p: ProcessPeer, timeoutMs = 2000): Promise<ShardInfo[]> {
    const res = await fetch(`http://${p.httpAddress}/v1/shards`, { signal: AbortSignal.timeout(timeoutMs) });
    if (!res.ok) throw new Error(`/v1/shards: ${res.status} ${await res.text()}`);
    return ((await res.json()) as { shards: ShardInfo[] }).shards;
  }

  /** Every peer of `ps` is alive in every view, they agree on a coordinator, and all shards are writable everywhere. */
  async waitWritable(what: string, ps: ProcessPeer[] = this.peers, timeoutMs = 40_000): Promise<StoreStatus[]> {
    return waitFor(
      `${what}: every peer alive everywhere, one coordinator, shards.writableShards === shardCount on every peer`,
      async () => {
        const st = await Promise.all(ps.map((p) => this.status(p)));
        const f = st[0] as StoreStatus;
        const ok =
          f.coordinator !== null &&
          st.every(
            (s) =>
              s.coordinator === f.coordinator &&
              s.shards != null &&
              s.shards.shardCount > 0 &&
              s.shards.writableShards === s.shards.shardCount &&
              ps.every((p) => s.members.find((m) => m.peerId === p.peerId)?.state === 'alive'),
          );
        return ok ? st : null;
      },
      { timeoutMs, intervalMs: 200 },
    ).catch(async (err: Error) => {
      throw new Error(`${err.message}\n${await this.dump()}`);
    });
  }

  /**
   * A settled cluster: writable everywhere (see waitWritable), and every peer shows the same shard
   * table in which every shard has a primary and all its replicas (min(R, peers)) in sync, the
   * same table on two polls in a row (no move or in-sync change under way).
   */
  async waitSettled(what: string, timeoutMs = 60_000): Promise<void> {
    const deadline = now() + timeoutMs;
    await this.waitWritable(what, this.peers, timeoutMs);
    let previous = '';
    await waitFor(
      `${what}: the same settled shard table (all replicas in sync) on every peer, twice in a row`,
      async () => {
        const st = await this.status(this.peers[0] as ProcessPeer);
        const want = Math.min((st.shards as ShardSummary).replicationFactor, this.peers.length);
        const views = await Promise.all(this.peers.map((p) => this.shards(p)));
        const strip = (v: ShardInfo[]): string => JSON.stringify(v.map(({ seq: _seq, ...rest }) => rest));
        const text = strip(views[0] as ShardInfo[]);
        const settled =
          views.every((v) => strip(v) === text) &&
          (views[0] as ShardInfo[]).every((s) => s.primary !== null && s.replicas.length === want && s.inSync.length === want);
        const stable = settled && text === previous;
        previous = settled ? text : '';
        return stable;
      },
      { timeoutMs: Math.max(1000, deadline - now()), intervalMs: 500 },
    ).catch(async (err: Error) => {
      throw new Error(`${err.message}\n${await this.dump()}`);
    });
  }

  /** Restarts slot `i` on its data dir, joining through `via`. */
  async restart(i: number, via: ProcessPeer[]): Promise<ProcessPeer> {
    const old = this.peers[i] as ProcessPeer;
    this.retired.push(old);
    const again = await ProcessPeer.start(old.dataDir, { join: via.map((p) => p.joinRef), extraArgs: this.extraArgs });
    this.peers[i] = again;
    assert.equal(again.peerId, old.peerId, 'the restarted peer keeps its identity');
    return again;
  }

  /** What every peer shows: status summary, its shard table, and the tail of its stderr. */
  async dump(): Promise<string> {
    const lines: string[] = ['---- cluster dump ----'];
    for (const [i, p] of this.peers.entries()) {
      const head = `p${i} ${short(p.peerId)} http=${p.httpAddress} pid=${p.child.pid} ${p.running ? 'running' : `exited(${p.child.exitCode ?? p.child.signalCode})`}`;
      if (!p.running) {
        lines.push(head);
        continue;
      }
      try {
        const s = await this.status(p, 1500);
        lines.push(
          `${head} role=${s.role} term=${s.term} commit=${s.commitIndex} coordinator=${this.label(s.coordinator)} map=${s.clusterMapVersion} ` +
            `members=[${s.members.map((m) => `${this.label(m.peerId)}:${m.state}`).join(' ')}] shards=${JSON.stringify(s.shards ?? null)}`,
        );
      } catch (err) {
        lines.push(`${head} status: ${(err as Error).message}`);
      }
      try {
        const table = await this.shards(p, 1500);
        lines.push(
          `  p${i} /v1/shards: ` +
            table
              .map(
                (s) =>
                  `${s.shard}:${this.label(s.primary)}[${s.inSync.map((r) => this.label(r)).join(',')}/${s.replicas.map((r) => this.label(r)).join(',')}]e${s.epoch}s${s.seq ?? '?'}`,
              )
              .join(' '),
        );
      } catch (err) {
        lines.push(`  p${i} /v1/shards: ${(err as Error).message}`);
      }
    }
    for (const [i, p] of this.peers.entries()) lines.push(`---- p${i} ${short(p.peerId)} stderr (tail) ----`, p.stderr.slice(-3000));
    for (const p of this.retired) lines.push(`---- retired process of ${this.label(p.peerId)} (pid ${p.child.pid}) stderr (tail) ----`, p.stderr.slice(-3000));
    return lines.join('\n');
  }

  async destroy(): Promise<void> {
    await Promise.all([...this.peers, ...this.retired].map((p) => p.destroy()));
    await removeDir(this.dir);
  }
}

/**
 * Cut the newest LevelDB log of a stopped peer's data dir in half, as a machine crash that lost
 * writes the OS had not put on disk would leave it.
 */
export function tearNewestLevelDbLog(dataDir: string): void {
  const db = join(dataDir, 'db');
  const logs = readdirSync(db)
    .filter((f) => f.endsWith('.log'))
    .map((f) => ({ f, size: statSync(join(db, f)).size, mtimeMs: statSync(join(db, f)).mtimeMs }))
    .sort((a, b) => b.mtimeMs - a.mtimeMs);
  assert.ok(logs.length > 0 && logs[0]!.size > 0, 'a LevelDB log to tear');
  truncateSync(join(db, logs[0]!.f), Math.floor(logs[0]!.size / 2));
}
