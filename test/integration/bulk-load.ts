/**
 * Load drivers over HTTP for process tests and benchmarks of data movement: many large values
 * from concurrent clients, a small-value writer beside them for latency, a watcher of the
 * writable shard count, and a read-back that checks every acknowledged value by digest.
 * Every loop is bounded in count and time.
 */
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import { jsonOf, kvPath, request, type StoreStatus } from './process-cluster.js';

const now = (): number => performance.now();
const pause = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const digest = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** Sorted-copy quantile (q in [0, 1]); NaN when empty. */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return NaN;
  const sorted = values.slice().sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number;
}

/** What a rejected or lost request looked like: `503 not_enough_replicas`, `timeout after ...`. */
function describeReply(status: number, body: Buffer): string {
  const code = jsonOf(body).error;
  return `${status}${typeof code === 'string' ? ` ${code}` : ''}`;
}

function count(map: Map<string, number>, key: string): void {
  map.set(key, (map.get(key) ?? 0) + 1);
}

export interface BulkLoadOptions {
  /** HTTP addresses to send to, in turn. */
  targets: readonly string[];
  totalBytes: number;
  valueBytes: number;
  clients: number;
  keyPrefix: string;
  /** Bound on one request, ms. */
  requestTimeoutMs: number;
  /** Attempts per key before the load gives up on it (each failure is recorded). */
  maxAttemptsPerKey: number;
  /** Bound on the whole load, ms. */
  deadlineMs: number;
}

export interface BulkLoadResult {
  /** key → sha256 of the value whose put was acknowledged. */
  acked: Map<string, string>;
  /** Latency of every acknowledged put, ms. */
  latenciesMs: number[];
  /** Every non-200 answer or request error, by description. */
  failures: Map<string, number>;
  /** Keys given up on (attempts or deadline exhausted). */
  abandoned: string[];
  elapsedMs: number;
  bytesAcked: number;
}

/** Writes `totalBytes` as distinct keys of `valueBytes` random bytes from `clients` concurrent clients. */
export async function loadLargeValues(o: BulkLoadOptions): Promise<BulkLoadResult> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: o.clients });
  const keys = Math.ceil(o.totalBytes / o.valueBytes);
  const r: BulkLoadResult = { acked: new Map(), latenciesMs: [], failures: new Map(), abandoned: [], elapsedMs: 0, bytesAcked: 0 };
  const started = now();
  const deadline = started + o.deadlineMs;
  let next = 0;
  let turn = 0;
  const client = async (): Promise<void> => {
    for (let guard = 0; guard < keys; guard++) {
      const k = next++;
      if (k >= keys) return;
      const key = `${o.keyPrefix}${String(k).padStart(6, '0')}`;
      const value = randomBytes(o.valueBytes);
      let done = false;
      for (let attempt = 0; attempt < o.maxAttemptsPerKey && !done && now() < deadline; attempt++) {
        const target = o.targets[turn++ % o.targets.length] as string;
        const t0 = now();
        try {
          const reply = await request(agent, target, 'PUT', kvPath(key), value, o.requestTimeoutMs);
          if (reply.status === 200) {
            r.latenciesMs.push(now() - t0);
            r.acked.set(key, digest(value));
            r.bytesAcked += value.length;
            done = true;
          } else {
            count(r.failures, describeReply(reply.status, reply.body));
            await pause(50);
          }
        } catch (err) {
          count(r.failures, (err as Error).message.replace(/\d+/g, 'N'));
          await pause(50);
        }
      }
      if (!done) r.abandoned.push(key);
    }
  };
  try {
    await Promise.all(Array.from({ length: o.clients }, () => client()));
  } finally {
    agent.destroy();
  }
  r.elapsedMs = now() - started;
  return r;
}

/** Reads every acknowledged key back (strong reads, a few at a time); returns the keys that differ or fail. */
export async function readBack(targets: readonly string[], acked: ReadonlyMap<string, string>, timeoutMs: number): Promise<string[]> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  const entries = [...acked.entries()];
  const bad: string[] = [];
  let next = 0;
  const reader = async (): Promise<void> => {
    for (let guard = 0; guard < entries.length; guard++) {
      const k = next++;
      if (k >= entries.length) return;
      const [key, want] = entries[k] as [string, string];
      const target = targets[k % targets.length] as string;
      try {
        const reply = await request(agent, target, 'GET', `${kvPath(key)}?consistency=strong`, undefined, timeoutMs);
        if (reply.status !== 200) bad.push(`${key}: ${describeReply(reply.status, reply.body)}`);
        else if (digest(reply.body) !== want) bad.push(`${key}: a different value (${reply.body.length} bytes)`);
      } catch (err) {
        bad.push(`${key}: ${(err as Error).message}`);
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: 4 }, () => reader()));
  } finally {
    agent.destroy();
  }
  return bad;
}

/** One client writing small values over a fixed key set until stopped; records each put's latency. */
export class SmallWriter {
  readonly latenciesMs: number[] = [];
  readonly failures = new Map<string, number>();
  private stopping = false;
  private loop: Promise<void> | null = null;
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

  constructor(
    private readonly targets: readonly string[],
    private readonly valueBytes = 100,
    private readonly requestTimeoutMs = 10_000,
    private readonly maxOps = 1_000_000,
  ) {}

  start(): void {
    this.stopping = false;
    this.loop = this.run();
  }

  /** Stops and returns the latencies recorded since the last `stop` (or since the start). */
  async stop(): Promise<number[]> {
    this.stopping = true;
    await this.loop;
    this.loop = null;
    return this.latenciesMs.splice(0);
  }

  close(): void {
    this.agent.destroy();
  }

  private async run(): Promise<void> {
    const value = Buffer.alloc(this.valueBytes, 120);
    for (let i = 0; i < this.maxOps && !this.stopping; i++) {
      const target = this.targets[i % this.targets.length] as string;
      const t0 = now();
      try {
        const reply = await request(this.agent, target, 'PUT', kvPath(`small-${i % 1000}`), value, this.requestTimeoutMs);
        if (reply.status === 200) this.latenciesMs.push(now() - t0);
        else {
          count(this.failures, describeReply(reply.status, reply.body));
          await pause(20);
        }
      } catch (err) {
        count(this.failures, (err as Error).message.replace(/\d+/g, 'N'));
        await pause(20);
      }
    }
  }
}

/**
 * Polls one peer's /v1/status in turn every `intervalMs` and remembers the fewest writable shards
 * seen (a shard is writable with a primary and at least minInSync in-sync replicas in the map).
 */
export class WritableWatch {
  minWritable = Number.POSITIVE_INFINITY;
  shardCount = 0;
  polls = 0;
  /** Polls that saw fewer writable shards than shards. */
  degradedPolls = 0;
  private stopping = false;
  private loop: Promise<void> | null = null;

  constructor(
    private readonly targets: () => readonly string[],
    private readonly intervalMs = 250,
    private readonly maxPolls = 100_000,
  ) {}

  start(): void {
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await this.loop;
  }

  private async run(): Promise<void> {
    for (let i = 0; i < this.maxPolls && !this.stopping; i++) {
      const ts = this.targets();
      const target = ts[i % ts.length] as string;
      try {
        const res = await fetch(`http://${target}/v1/status`, { signal: AbortSignal.timeout(2000) });
        const st = (await res.json()) as StoreStatus;
        if (st.shards != null && st.shards.shardCount > 0) {
          this.polls++;
          this.shardCount = st.shards.shardCount;
          this.minWritable = Math.min(this.minWritable, st.shards.writableShards);
          if (st.shards.writableShards < st.shards.shardCount) this.degradedPolls++;
        }
      } catch {
        // A slow status answer is not a verdict on the shards; the next poll asks again.
      }
      await pause(this.intervalMs);
    }
  }
}

/** Replication stream resets (and raft's), dropped frames and frames or messages refused over the limit, summed over peers. */
export async function replicationTrouble(addresses: readonly string[]): Promise<{ resets: number; dropped: number; refused: number }> {
  let resets = 0;
  let dropped = 0;
  let refused = 0;
  for (const a of addresses) {
    resets += (await metricSum(a, 'shoal_replication_streams_reset_total')) + (await metricSum(a, 'shoal_raft_streams_reset_total'));
    dropped += await metricSum(a, 'shoal_replication_frames_dropped_total');
    refused += (await metricSum(a, 'shoal_replication_frames_refused_total')) + (await metricSum(a, 'shoal_replication_messages_refused_total'));
  }
  return { resets, dropped, refused };
}

/** The samples of one metric family in a peer's /metrics text, summed over labels. */
export async function metricSum(address: string, name: string): Promise<number> {
  const res = await fetch(`http://${address}/metrics`, { signal: AbortSignal.timeout(3000) });
  const text = await res.text();
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$/.exec(line);
    if (m !== null && m[1] === name) sum += Number(m[3]);
  }
  return sum;
}
