/**
 * A recorded client workload for process tests (shared by store-process and drain-process):
 * concurrent clients doing puts, strong gets, cas and deletes over HTTP, every operation
 * recorded; final strong reads; the history checked for linearizability and lost writes.
 *
 * Outcomes (see node/store-api.ts): a 200 (or a 412 for a cas) is ok; a 503 `indeterminate`,
 * a timeout or a connection error on a write is unknown; any other 503 or 4xx did not apply.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SeededRandom } from '../../protocols/random.js';
import { describeOperation, HistoryRecorder, type KvOp, type Outcome } from '../checker/history.js';
import { checkLinearizable } from '../checker/linearizability.js';
import { findLostAcknowledgedWrites, type FinalRead } from '../checker/lost-writes.js';
import { type ProcessPeer, waitFor } from './harness.js';
import { jsonOf, kvPath, request, type Reply } from './process-cluster.js';

export const now = (): number => performance.now();
export const pause = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The outcome of one store operation as the history records it, and a short note of what was seen. */
export interface Sent {
  outcome: Outcome;
  /** HTTP status and error code, or the exception: for summaries and dumps. */
  detail: string;
}

/** Sends `op` to the peer at `address` and classifies the answer (never throws). */
export async function sendOp(agent: http.Agent, address: string, op: KvOp, timeoutMs: number): Promise<Sent> {
  let reply: Reply;
  try {
    if (op.type === 'read') reply = await request(agent, address, 'GET', `${kvPath(op.key)}?consistency=strong`, undefined, timeoutMs);
    else if (op.type === 'cas') reply = await request(agent, address, 'PUT', `${kvPath(op.key)}?ifVersion=${op.expectVersion}`, Buffer.from(op.value), timeoutMs);
    else if (op.value === null) reply = await request(agent, address, 'DELETE', kvPath(op.key), undefined, timeoutMs);
    else reply = await request(agent, address, 'PUT', kvPath(op.key), Buffer.from(op.value), timeoutMs);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    // A read that got no answer observed nothing; a write that got none may have applied.
    return { outcome: { status: 'unknown' }, detail: e.code ?? e.message };
  }
  const body = jsonOf(reply.body);
  const code = typeof body.error === 'string' ? body.error : '';
  const detail = `${reply.status}${code === '' ? '' : ` ${code}`}`;
  if (op.type === 'read') {
    if (reply.status === 200) {
      const header = reply.headers['x-shoal-version'];
      const version = typeof header === 'string' && /^\d+$/.test(header) ? Number(header) : undefined;
      const value = reply.body.toString('utf8');
      return { outcome: version === undefined ? { status: 'ok', value } : { status: 'ok', value, version }, detail };
    }
    // The store's 404 carries no version of the tombstone.
    if (reply.status === 404 && code === 'not_found') return { outcome: { status: 'ok', value: null }, detail };
    return { outcome: { status: 'fail' }, detail };
  }
  if (reply.status === 200) {
    return { outcome: typeof body.version === 'number' ? { status: 'ok', version: body.version } : { status: 'ok' }, detail };
  }
  if (reply.status === 412 && op.type === 'cas' && code === 'version_mismatch') {
    const current = body.currentVersion;
    return { outcome: typeof current === 'number' ? { status: 'ok', casFailed: true, version: current } : { status: 'ok', casFailed: true }, detail };
  }
  if (reply.status === 503 && code !== 'indeterminate' && code !== '') return { outcome: { status: 'fail' }, detail };
  if (reply.status >= 400 && reply.status < 500) return { outcome: { status: 'fail' }, detail };
  // 503 indeterminate, a 5xx without a code, anything unexpected: it may have applied.
  return { outcome: { status: 'unknown' }, detail };
}


// ---------------------------------------------------------------------------------------------
// Clients

/** One completed client operation, with who served it. */
export interface OpRecord {
  client: string;
  peerId: string;
  op: KvOp;
  invokeAt: number;
  completeAt: number;
  outcome: Outcome;
  detail: string;
}

export const isAppliedWrite = (r: OpRecord): boolean => r.op.type !== 'read' && r.outcome.status === 'ok' && r.outcome.casFailed !== true;

/**
 * Concurrent clients, each with one operation in flight, over a fixed key set: puts of unique
 * values, strong gets, cas from the last version the client saw, and a few deletes. Each
 * client sends to the peers of `targets` in turn (or to `focus`, when set, half the time).
 */
export class Workload {
  readonly recorder = new HistoryRecorder({ now });
  readonly agent = new http.Agent({ keepAlive: true, maxSockets: 32 });
  readonly records: OpRecord[] = [];
  targets: ProcessPeer[];
  focus: ProcessPeer | null = null;
  private stopping = false;
  private loops: Promise<void>[] = [];

  constructor(
    initialTargets: ProcessPeer[],
    readonly keys: string[],
    readonly hotKeys: ReadonlySet<string>,
    readonly timeoutMs = 4000,
  ) {
    this.targets = initialTargets.slice();
  }

  start(clients: number, seed: number): void {
    for (let c = 0; c < clients; c++) this.loops.push(this.client(`c${c}`, new SeededRandom(seed + c), c));
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(this.loops);
  }

  close(): void {
    this.agent.destroy();
  }

  /** Runs `op` against `peer` and records it (invoke, then complete). */
  async run(client: string, peer: ProcessPeer, op: KvOp): Promise<OpRecord> {
    const invokeAt = now();
    const id = this.recorder.invoke(client, op);
    const sent = await sendOp(this.agent, peer.httpAddress, op, this.timeoutMs);
    this.recorder.complete(id, sent.outcome);
    const record: OpRecord = { client, peerId: peer.peerId, op, invokeAt, completeAt: now(), outcome: sent.outcome, detail: sent.detail };
    this.records.push(record);
    return record;
  }

  private async client(name: string, rng: SeededRandom, offset: number): Promise<void> {
    const hot = this.keys.filter((k) => this.hotKeys.has(k));
    const cold = this.keys.filter((k) => !this.hotKeys.has(k));
    /** The last version this client saw for each key (from a read, a write or a mismatch). */
    const seen = new Map<string, number>();
    let turn = offset;
    let n = 0;
    while (!this.stopping) {
      const targets = this.targets;
      if (targets.length === 0) {
        await pause(20);
        continue;
      }
      const peer = this.focus !== null && rng.chance(0.5) ? this.focus : (targets[turn++ % targets.length] as ProcessPeer);
      const key = hot.length > 0 && (cold.length === 0 || rng.chance(0.5)) ? rng.pick(hot) : rng.pick(cold);
      const dice = rng.next();
      const value = `${name}-${n++}`;
      let op: KvOp;
      if (dice < 0.4) op = { type: 'write', key, value };
      else if (dice < 0.75) op = { type: 'read', key };
      else if (dice < 0.95) op = { type: 'cas', key, expectVersion: seen.get(key) ?? 0, value };
      else op = { type: 'write', key, value: null };
      const r = await this.run(name, peer, op);
      if (r.outcome.status === 'ok' && r.outcome.version !== undefined) seen.set(key, r.outcome.version);
      // A refused request comes back at once: do not spin on a shard that is failing over.
      if (r.outcome.status !== 'ok') await pause(10);
    }
  }

  /** Completion time of the first write or cas to a hot key, invoked after `since`, that applied. */
  firstHotWriteAfter(since: number): number | null {
    let first: number | null = null;
    for (const r of this.records) {
      if (r.invokeAt > since && this.hotKeys.has(r.op.key) && isAppliedWrite(r) && (first === null || r.completeAt < first)) first = r.completeAt;
    }
    return first;
  }

  countHotWrites(since = -Infinity): number {
    return this.records.filter((r) => r.invokeAt > since && this.hotKeys.has(r.op.key) && isAppliedWrite(r)).length;
  }

  /** Ok operations served by `peerId`, invoked after `since`. */
  okServedBy(peerId: string, since: number, type?: KvOp['type']): number {
    return this.records.filter((r) => r.peerId === peerId && r.invokeAt > since && r.outcome.status === 'ok' && (type === undefined || r.op.type === type)).length;
  }

  /** Counts of outcomes by operation type and detail, e.g. `write 503 unavailable: 12`. */
  summary(label: (peerId: string) => string): string {
    const counts = new Map<string, number>();
    const add = (k: string): void => {
      counts.set(k, (counts.get(k) ?? 0) + 1);
    };
    for (const r of this.records) {
      const kind = r.op.type === 'write' && r.op.value === null ? 'delete' : r.op.type;
      add(`${kind} ${r.outcome.status}${r.outcome.status === 'ok' && r.outcome.casFailed === true ? '(mismatch)' : ''} ${r.detail}`);
    }
    const byPeer = new Map<string, number>();
    for (const r of this.records) byPeer.set(label(r.peerId), (byPeer.get(label(r.peerId)) ?? 0) + 1);
    return (
      `${this.records.length} ops; by peer: ${[...byPeer].map(([p, c]) => `${p}=${c}`).join(' ')}\n  ` +
      [...counts]
        .sort()
        .map(([k, c]) => `${k}: ${c}`)
        .join('\n  ')
    );
  }

  /** Operations on `keys` invoked in [from, to], for a dump. */
  excerpt(keys: ReadonlySet<string>, from: number, to: number, label: (peerId: string) => string, max = 60): string {
    const picked = this.records.filter((r) => keys.has(r.op.key) && r.invokeAt >= from && r.invokeAt <= to).sort((a, b) => a.invokeAt - b.invokeAt);
    return picked
      .slice(0, max)
      .map((r) => `${r.invokeAt.toFixed(1)}..${r.completeAt.toFixed(1)} ${r.client}@${label(r.peerId)} ${JSON.stringify(r.op)} → ${JSON.stringify(r.outcome)} (${r.detail})`)
      .join('\n');
  }
}

/**
 * Final strong reads of every key through `peer`, recorded in the history (client `final@pN`).
 * A 404 carries no version, so an absent key's version is learnt from a cas that cannot match
 * (recorded too: a refused cas changes nothing). Retries refusals, bounded.
 */
export async function finalReads(workload: Workload, peer: ProcessPeer, name: string, keys: readonly string[]): Promise<Map<string, FinalRead>> {
  const finals = new Map<string, FinalRead>();
  for (const key of keys) {
    const read = await waitFor(
      `a final strong read of ${key} through ${name}`,
      async () => {
        const r = await workload.run(`final@${name}`, peer, { type: 'read', key });
        return r.outcome.status === 'ok' ? r : null;
      },
      { timeoutMs: 15_000, intervalMs: 100 },
    );
    const outcome = read.outcome as { value: string | null; version?: number };
    if (outcome.value !== null) {
      assert.ok(outcome.version !== undefined, `a 200 read of ${key} without X-Shoal-Version`);
      finals.set(key, { value: outcome.value, version: outcome.version });
      continue;
    }
    const probe = await waitFor(
      `the version of absent ${key} through ${name}`,
      async () => {
        const r = await workload.run(`final@${name}`, peer, { type: 'cas', key, expectVersion: 1_000_000_000, value: 'never' });
        return r.outcome.status === 'ok' ? r : null;
      },
      { timeoutMs: 15_000, intervalMs: 100 },
    );
    const p = probe.outcome as { casFailed?: boolean; version?: number };
    assert.ok(p.casFailed === true && p.version !== undefined, `the probe cas on absent ${key} must be refused with the current version: ${JSON.stringify(p)}`);
    finals.set(key, { value: null, version: p.version });
  }
  return finals;
}

/** Saves the history for later study; returns the file name. */
export async function saveHistory(workload: Workload, tag: string): Promise<string> {
  const file = join(tmpdir(), `shoal-store-history-${tag}-${Date.now()}.json`);
  await writeFile(file, JSON.stringify(workload.recorder.toJSON()));
  return file;
}

/** Linearizability of the whole history and no lost acknowledged write, with a readable failure. */
export async function checkHistory(workload: Workload, finals: ReadonlyMap<string, FinalRead>, tag: string): Promise<void> {
  // The checker is only as sharp as the versions it gets: every ok answer but a 404 carries one.
  const unversioned = workload.records.filter((r) => r.outcome.status === 'ok' && r.outcome.version === undefined && !(r.op.type === 'read' && r.outcome.value === null));
  assert.equal(unversioned.length, 0, `ok answers without a version: ${unversioned.slice(0, 5).map((r) => `${JSON.stringify(r.op)} (${r.detail})`).join('; ')}`);
  const history = workload.recorder.history();
  const started = now();
  const lin = checkLinearizable(history, { timeoutMs: 30_000 });
  const linMs = now() - started;
  const lost = findLostAcknowledgedWrites(history, finals);
  console.log(`    [${tag}] checked ${workload.records.length} ops: linearizable=${String(lin.ok)} (${linMs.toFixed(0)} ms), lost-write reports=${lost.length}`);
  if (lin.ok !== true || lost.length > 0) {
    const file = await saveHistory(workload, tag);
    let msg = `history saved to ${file}\n`;
    if (lin.ok === false) {
      msg += `NOT LINEARIZABLE: ${lin.reason}\n`;
      if (lin.witnessStart !== undefined) msg += `witness starts from ${JSON.stringify(lin.witnessStart)}\n`;
      msg += (lin.minimalWitness ?? []).map((o) => `  ${describeOperation(o)}`).join('\n') + '\n';
    } else if (lin.ok === 'unknown') {
      msg += `linearizability check gave up: ${lin.reason}\n`;
    }
    if (lost.length > 0) msg += `LOST ACKNOWLEDGED WRITES:\n${lost.map((l) => `  ${l.key} ${l.kind}: ${l.detail}`).join('\n')}\n`;
    assert.fail(msg);
  }
}

