#!/usr/bin/env node
// The polyfill must be the first import (../shared/STACK.md: Node 20).
import '../node/polyfill.js';
import { existsSync } from 'node:fs';
import { open, readFile, writeFile } from 'node:fs/promises';
import { join as joinPath } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { DEFAULT_PEER_OPTIONS, parseHostPort, validateJoinAddr, validateListenAddr, type PeerOptions } from '../node/config.js';
import { startOptionsFromFlags, startOptionsHelp, startParseOptions } from '../node/start-options.js';
import { ConfigError, PeerStartError } from '../node/errors.js';
// peer.js and swarm-key.js pull in libp2p (half a second to load): imported where used, so
// client commands (get, put, status, ...) start fast.
import type { Peer } from '../node/peer.js';
import { decodeJoinToken, looksLikeJoinToken } from '../node/join-token.js';
import type { PeerStatus } from '../node/peer.js';
import { READ_CONSISTENCIES } from '../node/store-api.js';
import { runDemo } from './demo.js';
import { isFinishedState, type TaskState } from '../protocols/scheduler/index.js';
import { isValidHttpToken } from '../node/http/request-guard.js';
import type { DrainStatus, MoveInfo } from '../node/store-service.js';

/** Usage errors exit 2; runtime failures exit 1. */
class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** A failure at run time (the peer refused, could not be reached, a file could not be read): exit 1. */
class RuntimeFailure extends Error {
  override readonly name = 'RuntimeFailure';
}

const EXIT_RUNTIME = 1;
const EXIT_USAGE = 2;

const MAIN_HELP = `shoal: a peer-to-peer cluster for Node.js

Usage: shoal <command> [options]

Commands:
  start            run a peer (joins an existing cluster with --join)
  status           show the members a running peer sees
  leave            make a running peer move its data to others, leave the cluster and exit
  drain            make a running peer move every replica it holds to others (it stays)
  capacity N       change a running peer's capacity (its share of replicas follows)
  put KEY VALUE    store a value under KEY (or --file FILE)
  get KEY          print the value stored under KEY
  del KEY          delete KEY
  task ...         submit, get, list or cancel tasks (shoal task --help)
  demo             start a local cluster of N peers in a temporary directory
  token            print the join token of a peer's data dir (the cluster key and its addresses)
  keygen FILE      write a new private-network (swarm) key to FILE
  help [COMMAND]   show help for a command

Run 'shoal <command> --help' for a command's options.
`;

const START_HELP = `Usage: shoal start [options]

Run a peer in the foreground. SIGTERM moves its replicas to the other peers, then it leaves
(see --stop-drain-ms); SIGINT (Ctrl-C) makes it leave at once. A second signal exits.

Secure by default: the first peer of a cluster generates the cluster key (DATA_DIR/cluster.key)
and prints a join token; other peers join with --join TOKEN. Peers without the key cannot
connect. Every peer keeps the key in its data dir and prints a token of its own.

${startOptionsHelp()}
Logs are JSON lines on stderr; the peer id, its addresses and its join token are printed
on stdout. The token is a secret: anyone holding it can join the cluster.
`;

const TOKEN_FLAG_HELP = `  --http-token-file FILE  the peer's bearer token, when it runs with --http-token-file`;

const STATUS_HELP = `Usage: shoal status [options]

Show the members that a running peer sees.

Options:
  --http HOST:PORT   the peer's HTTP API (default ${DEFAULT_PEER_OPTIONS.http})
${TOKEN_FLAG_HELP}
  --json             print the raw JSON of GET /v1/status
  --timeout-ms N     give up after N ms (default 5000)
  -h, --help         this help
`;

const LEAVE_HELP = `Usage: shoal leave [options]

Ask a running peer to leave the cluster gracefully. First it is drained: every shard replica
it holds is moved to the other active peers while writes go on (progress on stderr). Then it
hands over the coordinator role if it holds it, announces 'left', waits to be removed from
the Raft configuration, and exits 0. With no other active peer there is nothing to move to;
it leaves at once.

Options:
  --http HOST:PORT   the peer's HTTP API (default ${DEFAULT_PEER_OPTIONS.http})
${TOKEN_FLAG_HELP}
  --no-drain         leave without moving data first (the others re-replicate it afterwards)
  --drain-wait-ms N  give up if the drain takes longer (default 600000); nothing is lost, the
                     peer stays and keeps draining
  --wait-ms N        wait up to N ms until the peer has stopped answering (default 15000)
  -h, --help         this help
`;

const DRAIN_HELP = `Usage: shoal drain [options]

Move every shard replica a running peer holds to the other active peers, while writes go on;
the peer stays a member (draining) and takes no new replicas. Shows progress and an ETA on
stderr and exits 0 once the peer holds nothing. 'shoal drain --cancel' makes it active again
(it then takes its share of replicas back).

Options:
  --http HOST:PORT   the peer's HTTP API (default ${DEFAULT_PEER_OPTIONS.http})
${TOKEN_FLAG_HELP}
  --cancel           stop draining
  --no-wait          ask and return at once
  --wait-ms N        give up waiting after N ms (default 600000; the drain goes on)
  -h, --help         this help
`;

const CAPACITY_HELP = `Usage: shoal capacity N [options]

Change the relative capacity a running peer reports (a number above 0, at most 1024). The
coordinator applies it to the cluster map and the placement gives the peer a proportional
share of replicas: replicas move toward or away from it by themselves. Lasts until the peer
restarts (then --capacity applies).

Options:
  --http HOST:PORT   the peer's HTTP API (default ${DEFAULT_PEER_OPTIONS.http})
${TOKEN_FLAG_HELP}
  -h, --help         this help
`;

const KV_COMMON_OPTIONS = `  --http HOST:PORT   the peer's HTTP API, any peer of the cluster (default ${DEFAULT_PEER_OPTIONS.http})
${TOKEN_FLAG_HELP}
  --timeout-ms N     give up after N ms (default 10000; a peer itself answers 503 after
                     waiting 5 s for a shard's primary)
  -h, --help         this help`;

const PUT_HELP = `Usage: shoal put KEY VALUE [options]
       shoal put KEY --file FILE [options]

Store VALUE (its UTF-8 bytes) or the bytes of FILE under KEY, through any running peer
(PUT /v1/kv/KEY). Prints the key's new version on stdout: "version N".
Put -- before a VALUE that starts with '-'.

Options:
  --file FILE        read the value from FILE; - reads standard input (at most 1 MiB)
  --if-version N     compare-and-set: write only if the key's current version is N
                     (0: only if the key is absent); otherwise exit 1, nothing written
${KV_COMMON_OPTIONS}

Exit codes: 0 written; 1 version mismatch, the peer refused the write or could not be
reached (after a timeout the write may or may not have been applied); 2 usage error.
`;

const GET_HELP = `Usage: shoal get KEY [options]

Print the value stored under KEY, exactly its bytes with no newline added, on stdout
(GET /v1/kv/KEY).

Options:
  --consistency C    strong (default): read from the shard's primary; any: from one
                     in-sync replica (may miss the latest writes for a moment)
  --verbose          also print "version N" on stderr
${KV_COMMON_OPTIONS}

Exit codes: 0 found; 1 not found ("not found" on stderr), the peer refused or could not
be reached; 2 usage error.
`;

const DEL_HELP = `Usage: shoal del KEY [options]

Delete KEY (DELETE /v1/kv/KEY). Deleting an absent key succeeds too. Prints the key's new
version on stdout: "version N" (a delete counts as a write).

Options:
${KV_COMMON_OPTIONS}

Exit codes: 0 deleted; 1 the peer refused or could not be reached (after a timeout the
delete may or may not have been applied); 2 usage error.
`;

const DEMO_HELP = `Usage: shoal demo [--peers N]

Start a local cluster in one command: N 'shoal start' processes on 127.0.0.1 (free ports),
with data dirs in one temporary directory. The first makes the cluster, the others join with
its token. Prints each peer's HTTP address and commands to try once every shard is writable.
Ctrl-C stops every peer gracefully and removes the directory.

Options:
  --peers N      peers to start, 1 to 9 (default 3)
  --peer-arg A   an extra 'shoal start' argument for every peer (repeatable), e.g. --peer-arg=--sync
  -h, --help     this help
`;

const TOKEN_HELP = `Usage: shoal token [--data-dir DIR]

Print the join token a peer wrote to DIR/join-token at its last start: the cluster key and
that peer's addresses. Another peer joins with 'shoal start --join TOKEN'. The token is a
secret; reading it needs read access to the data dir.

Options:
  --data-dir DIR   the peer's data dir (default ${DEFAULT_PEER_OPTIONS.dataDir})
  -h, --help       this help
`;

const KEYGEN_HELP = `Usage: shoal keygen FILE [--force]

Write a new private-network key to FILE (mode 0600). Give the same file to every peer
with --swarm-key; a peer without it cannot connect to them.

Options:
  --force      overwrite FILE if it exists
  -h, --help   this help
`;

/** Run node's parseArgs (strict: unknown flags are errors) and turn its errors into usage errors. */
function parse<T extends ParseArgsConfig>(config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs<T>(config);
  } catch (err) {
    // node's messages name the flag: "Unknown option '--foo'", "Option '--join <value>' argument missing".
    // Some span several lines; keep one.
    throw new UsageError((err as Error).message.replace(/\s*\n\s*/g, ' '));
  }
}

function intFlag(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n <= 0) throw new UsageError(`${flag}: expected a positive number, got ${JSON.stringify(value)}`);
  return n;
}

async function cmdStart(argv: string[]): Promise<number> {
  const { values } = parse({ args: argv, strict: true, options: startParseOptions() });
  if (values.help === true) {
    process.stdout.write(START_HELP);
    return 0;
  }
  // Check addresses here so the error names the flag the user typed.
  for (const a of (values.listen as string[] | undefined) ?? []) validateListenAddr(a, '--listen');
  for (const a of (values.join as string[] | undefined) ?? []) {
    if (looksLikeJoinToken(a)) decodeJoinToken(a, '--join');
    else validateJoinAddr(a, '--join');
  }
  const http = values.http as string | undefined;
  if (http !== undefined && http !== 'off') parseHostPort(http, '--http');
  // Every other flag: read, checked and placed by its row of node/start-options.ts.
  const { stopDrainMs = 300_000, ...fields } = startOptionsFromFlags(values) as { stopDrainMs?: number } & Record<string, unknown>;
  const options = fields as Partial<PeerOptions>;
  options.membership ??= {};
  options.cluster ??= {};
  const auto = (fields.autoscale ?? {}) as Partial<PeerOptions['autoscale']>;
  const minPeers = auto.minPeers ?? DEFAULT_PEER_OPTIONS.autoscale.minPeers;
  // Given alone, --autoscale-min lifts the default maximum (startOptionsFromFlags checks the pair).
  const maxPeers = auto.maxPeers ?? Math.max(minPeers, DEFAULT_PEER_OPTIONS.autoscale.maxPeers);
  options.autoscale = { ...DEFAULT_PEER_OPTIONS.autoscale, ...auto, minPeers, maxPeers };

  const { createPeer } = await import('../node/peer.js');
  const peer = await createPeer(options);
  const lines = [
    `shoal peer ${peer.peerId}`,
    ...peer.addrs.map((a) => `  join with: ${a}`),
    `  http: ${peer.httpAddress ?? 'off'}`,
    ...(peer.httpAddress !== null ? [`  dashboard: http://${peer.httpAddress}/`] : []),
    peer.joinToken !== null ? `  join token: ${peer.joinToken}` : '  insecure: open network, no cluster key',
  ];
  process.stdout.write(lines.join('\n') + '\n');

  return new Promise<number>((resolve) => {
    let signalled = false;
    const onSignal = (sig: NodeJS.Signals): void => {
      if (signalled) {
        process.stderr.write(`shoal: second ${sig}, exiting without a clean stop\n`);
        process.exit(EXIT_RUNTIME);
      }
      signalled = true;
      const stop = (): void => {
        const guard = setTimeout(() => {
          process.stderr.write('shoal: clean stop took over 10 s, exiting\n');
          process.exit(EXIT_RUNTIME);
        }, 10_000);
        guard.unref();
        peer.stop().then(
          () => resolve(0),
          (err: unknown) => {
            process.stderr.write(`shoal: error while stopping: ${(err as Error).message}\n`);
            resolve(EXIT_RUNTIME);
          },
        );
      };
      // SIGTERM (a service manager stopping the peer for good): move its replicas to the other
      // peers first, as `shoal leave` does; SIGINT (Ctrl-C) leaves at once.
      if (sig === 'SIGTERM' && stopDrainMs > 0) drainBeforeStop(peer, stopDrainMs).then(stop, stop);
      else stop();
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    // `shoal leave` (POST /v1/leave) stops the peer from the inside.
    void peer.stopped.then(() => resolve(0));
  });
}

/** Moves every replica the peer holds to the other active peers (bounded by `maxMs`), printing progress. */
async function drainBeforeStop(peer: Peer, maxMs: number): Promise<void> {
  const first = peer.drainStatus();
  if (first.status === null || first.replicas === 0 || first.activePeersLeft === 0) return;
  process.stderr.write(`shoal: SIGTERM: moving ${first.replicas} replicas to the other peers before leaving (up to ${formatMs(maxMs)}; a second signal stops at once)\n`);
  peer.setDraining(true);
  const started = Date.now();
  let lastPrint = started;
  for (let i = 0; i <= maxMs / 250 && Date.now() - started < maxMs; i++) {
    const st = peer.drainStatus();
    if (st.done || st.activePeersLeft === 0) {
      process.stderr.write(`shoal: drained in ${formatMs(Date.now() - started)}${st.done ? '' : ' (no active peer left to take the rest)'}\n`);
      return;
    }
    if (Date.now() - lastPrint >= 2000) {
      process.stderr.write(`shoal: draining: ${st.replicas} replicas left, ${st.movesInFlight} moves in flight\n`);
      lastPrint = Date.now();
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  process.stderr.write(`shoal: the drain did not finish within ${formatMs(maxMs)}; leaving anyway (the others re-create its replicas)\n`);
}

function formatAge(ms: number | null): string {
  if (ms === null) return '-';
  return ms < 10_000 ? `${Math.round(ms)}ms` : `${(ms / 1000).toFixed(1)}s`;
}

/** The member table as aligned text columns. */
export function formatStatusTable(status: PeerStatus): string {
  const header = ['PEER ID', 'STATE', 'PHI', 'INC', 'LAST HEARTBEAT', 'PRIMARIES', 'REPLICAS', 'ADDRESS'];
  const perPeer = status.shards?.perPeer ?? {};
  const rows = status.members.map((mem) => [
    mem.peerId + (mem.self ? ' *' : ''),
    mem.state,
    mem.phi.toFixed(2),
    String(mem.incarnation),
    mem.self ? '-' : formatAge(mem.lastHeartbeatAgeMs),
    String(perPeer[mem.peerId]?.primaries ?? 0),
    String(perPeer[mem.peerId]?.replicas ?? 0),
    mem.addrs[0] ?? '-',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] as string).length)));
  const fmt = (r: string[]): string => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] as number))).join('  ');
  const counts = ['alive', 'suspect', 'dead', 'left'].map((s) => `${status.members.filter((x) => x.state === s).length} ${s}`);
  const short = (id: string | null): string => (id === null ? 'none' : id);
  const coord = [
    `coordinator ${short(status.coordinator)}  term ${status.term}  role ${status.role}  commit ${status.commitIndex}  map version ${status.clusterMapVersion}`,
    `voters   ${status.voters.join(', ') || '-'}`,
    `learners ${status.learners.join(', ') || '-'}`,
  ];
  const sh = status.shards;
  if (sh !== null && sh !== undefined) {
    const lowered = sh.effectiveMinInSync !== undefined && sh.effectiveMinInSync < sh.minInSync ? ` (${sh.effectiveMinInSync} while the cluster has fewer peers)` : '';
    coord.push(`shards   ${sh.shardCount} (replication factor ${sh.replicationFactor}, min in-sync ${sh.minInSync}${lowered}): ${sh.writableShards} writable`);
    if (sh.movesInFlight !== undefined) {
      const draining = (sh.draining ?? []).length > 0 ? `; draining ${(sh.draining ?? []).join(', ')}` : '';
      coord.push(`moves    ${sh.movesInFlight} replicas being filled${draining}`);
    }
  }
  return [`peer ${status.peerId}  (${counts.join(', ')}; * = this peer)`, ...coord, '', fmt(header), ...rows.map(fmt)].join('\n') + '\n';
}

/** `--http` (checked, default 127.0.0.1:7070) of a command that talks to a running peer; reads `--http-token-file` too. */
async function peerAddress(values: { http?: string; 'http-token-file'?: string }): Promise<string> {
  const hostPort = values.http ?? DEFAULT_PEER_OPTIONS.http;
  parseHostPort(hostPort, '--http');
  await useHttpToken(values['http-token-file']);
  return hostPort;
}

/** Headers every HTTP request of this CLI run carries (the bearer token of --http-token-file). */
let clientHeaders: Record<string, string> = {};

/** Read --http-token-file for a client command; its first line is the token. */
async function useHttpToken(file: string | undefined): Promise<void> {
  if (file === undefined) return;
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new RuntimeFailure(`--http-token-file ${file}: cannot read it: ${(err as Error).message}`);
  }
  const token = text.trim();
  if (!isValidHttpToken(token)) throw new UsageError(`--http-token-file ${file}: expected one token of 16 to 4096 visible ASCII characters`);
  clientHeaders = { authorization: `Bearer ${token}` };
}

async function fetchJson(hostPort: string, path: string, timeoutMs: number, method = 'GET', payload: unknown = {}): Promise<unknown> {
  const url = `http://${hostPort}${path}`;
  let res: Response;
  try {
    // A JSON body on POSTs: POST /v1/leave wants application/json (a web page cannot send it cross-origin).
    const post = method === 'POST' ? { body: JSON.stringify(payload), headers: { 'content-type': 'application/json', ...clientHeaders } } : { headers: clientHeaders };
    res = await fetch(url, { method, signal: AbortSignal.timeout(timeoutMs), ...post });
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).name;
    throw new PeerStartError('HTTP', `cannot reach a shoal peer at ${hostPort} (${cause}); is it running? (--http HOST:PORT)`);
  }
  const body = (await res.json().catch(() => null)) as unknown;
  if (!res.ok) {
    const msg = (body as { message?: string } | null)?.message ?? res.statusText;
    throw new PeerStartError('HTTP', `${url}: HTTP ${res.status}: ${msg}`);
  }
  return body;
}

async function cmdStatus(argv: string[]): Promise<number> {
  const { values } = parse({
    args: argv,
    strict: true,
    options: {
      http: { type: 'string' },
      'http-token-file': { type: 'string' },
      json: { type: 'boolean' },
      'timeout-ms': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help === true) {
    process.stdout.write(STATUS_HELP);
    return 0;
  }
  const timeoutMs = intFlag(values['timeout-ms'], '--timeout-ms') ?? 5000;
  const hostPort = await peerAddress(values);
  const status = (await fetchJson(hostPort, '/v1/status', timeoutMs)) as PeerStatus;
  if (values.json === true) {
    process.stdout.write(JSON.stringify(status, null, 2) + '\n');
    return 0;
  }
  let table = formatStatusTable(status);
  // Moves in flight, with their bytes, rate and ETA where a snapshot streams (best effort).
  const moves = ((await fetchJson(hostPort, '/v1/moves', timeoutMs).catch(() => null)) as { moves?: MoveInfo[] } | null)?.moves ?? [];
  if (moves.length > 0) table += formatMoves(moves);
  process.stdout.write(table);
  return 0;
}

function formatMoves(moves: MoveInfo[]): string {
  const mb = (b: number): string => `${(b / 1048576).toFixed(1)} MB`;
  const lines = moves.slice(0, 20).map((m) => {
    const bytes = m.bytesDone === null ? 'catching up' : `${mb(m.bytesDone)}${m.bytesTotal !== null ? ` of ~${mb(m.bytesTotal)}` : ''}`;
    const rate = m.rateBps !== null && m.rateBps > 0 ? `, ${mb(m.rateBps)}/s` : '';
    const eta = m.etaMs !== null ? `, ETA ${formatMs(m.etaMs)}` : '';
    const id = (x: string | null): string => (x === null ? 'none' : `…${x.slice(-8)}`);
    return `  shard ${String(m.shard).padStart(4)}  ${id(m.from)} -> ${id(m.to)}  ${bytes}${rate}${eta}`;
  });
  const more = moves.length > 20 ? [`  ... and ${moves.length - 20} more (GET /v1/moves)`] : [];
  return ['', `moves in flight (${moves.length}):`, ...lines, ...more].join('\n') + '\n';
}

function formatMs(ms: number): string {
  if (!Number.isFinite(ms)) return '?';
  return ms < 60_000 ? `${Math.ceil(ms / 1000)} s` : `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
}

/**
 * Ask the peer at hostPort to drain and follow it until it holds no replica: a progress line on
 * stderr (rewritten in place on a terminal, every 2 s otherwise). Returns false when there is no
 * other active peer to move to.
 */
async function drainAndWait(hostPort: string, waitMs: number): Promise<boolean> {
  let st = (await fetchJson(hostPort, '/v1/drain', 5000, 'POST')) as DrainStatus;
  if (st.activePeersLeft === 0 && st.replicas > 0) return false;
  const start = Date.now();
  const initial = Math.max(st.replicas, 1);
  const tty = process.stderr.isTTY === true;
  let lastPrint = 0;
  for (let i = 0; i < waitMs / 250 + 1 && Date.now() - start < waitMs; i++) {
    st = (await fetchJson(hostPort, '/v1/drain', 5000)) as DrainStatus;
    const moved = Math.max(0, initial - st.replicas);
    const elapsed = Date.now() - start;
    const eta = moved > 0 ? (st.replicas * elapsed) / moved : Number.POSITIVE_INFINITY;
    const width = 30;
    const filled = Math.round((moved / initial) * width);
    const line = `draining [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${moved}/${initial} replicas moved, ${st.movesInFlight} moves in flight, ${st.replicas === 0 ? 'done' : `ETA ${formatMs(eta)}`}`;
    if (st.done) {
      process.stderr.write(tty ? `\r${line}\n` : `${line}\n`);
      return true;
    }
    if (tty) process.stderr.write(`\r${line}`);
    else if (Date.now() - lastPrint >= 2000) {
      process.stderr.write(`${line}\n`);
      lastPrint = Date.now();
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  if (tty) process.stderr.write('\n');
  throw new RuntimeFailure(`the drain did not finish within ${waitMs} ms (${st.replicas} replicas left); it goes on: see 'shoal drain --http ${hostPort}'`);
}

async function cmdLeave(argv: string[]): Promise<number> {
  const { values } = parse({
    args: argv,
    strict: true,
    options: {
      http: { type: 'string' },
      'http-token-file': { type: 'string' },
      'no-drain': { type: 'boolean' },
      'drain-wait-ms': { type: 'string' },
      'wait-ms': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help === true) {
    process.stdout.write(LEAVE_HELP);
    return 0;
  }
  const waitMs = intFlag(values['wait-ms'], '--wait-ms') ?? 15_000;
  const drainWaitMs = intFlag(values['drain-wait-ms'], '--drain-wait-ms') ?? 600_000;
  const hostPort = await peerAddress(values);
  const status = (await fetchJson(hostPort, '/v1/status', 5000)) as PeerStatus;
  if (values['no-drain'] !== true && status.shards != null) {
    const drained = await drainAndWait(hostPort, drainWaitMs);
    if (!drained) process.stderr.write('no other active peer to move replicas to: leaving without moving data\n');
  }
  await fetchJson(hostPort, '/v1/leave', 5000, 'POST');
  // Done when the peer no longer answers (it closes its HTTP server as the last step).
  const deadline = Date.now() + waitMs;
  for (let i = 0; i < waitMs / 100 + 1 && Date.now() < deadline; i++) {
    const up = await fetch(`http://${hostPort}/healthz`, { signal: AbortSignal.timeout(1000) }).then(
      () => true,
      () => false,
    );
    if (!up) {
      process.stdout.write(`peer ${status.peerId} left\n`);
      return 0;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new PeerStartError('HTTP', `peer ${status.peerId} at ${hostPort} was still running after ${waitMs} ms`);
}

async function cmdDrain(argv: string[]): Promise<number> {
  const { values } = parse({
    args: argv,
    strict: true,
    options: {
      http: { type: 'string' },
      'http-token-file': { type: 'string' },
      cancel: { type: 'boolean' },
      'no-wait': { type: 'boolean' },
      'wait-ms': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help === true) {
    process.stdout.write(DRAIN_HELP);
    return 0;
  }
  const waitMs = intFlag(values['wait-ms'], '--wait-ms') ?? 600_000;
  const hostPort = await peerAddress(values);
  if (values.cancel === true) {
    await fetchJson(hostPort, '/v1/drain', 5000, 'POST', { cancel: true });
    process.stdout.write('drain cancelled: the peer takes its share of replicas again\n');
    return 0;
  }
  if (values['no-wait'] === true) {
    const st = (await fetchJson(hostPort, '/v1/drain', 5000, 'POST')) as DrainStatus;
    process.stdout.write(`draining: ${st.replicas} replicas to move\n`);
    return 0;
  }
  if (!(await drainAndWait(hostPort, waitMs))) throw new RuntimeFailure('no other active peer to move replicas to; nothing moved');
  process.stdout.write('drained: the peer holds no replica\n');
  return 0;
}

async function cmdCapacity(argv: string[]): Promise<number> {
  const { values, positionals } = parse({
    args: argv,
    strict: true,
    allowPositionals: true,
    options: { http: { type: 'string' }, 'http-token-file': { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help === true) {
    process.stdout.write(CAPACITY_HELP);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError('capacity: expected exactly one number N (usage: shoal capacity N)');
  const n = Number(positionals[0]);
  if ((positionals[0] as string).trim() === '' || !Number.isFinite(n) || n <= 0 || n > 1024) {
    throw new UsageError(`capacity: expected a number above 0 and at most 1024, got ${JSON.stringify(positionals[0])}`);
  }
  const hostPort = await peerAddress(values);
  await fetchJson(hostPort, '/v1/capacity', 5000, 'POST', { capacity: n });
  process.stdout.write(`capacity ${n} reported; replicas follow it\n`);
  return 0;
}

async function cmdDemo(argv: string[]): Promise<number> {
  const { values } = parse({
    args: argv,
    strict: true,
    options: { peers: { type: 'string' }, 'peer-arg': { type: 'string', multiple: true }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help === true) {
    process.stdout.write(DEMO_HELP);
    return 0;
  }
  const peers = values.peers === undefined ? 3 : Number(values.peers);
  if (!Number.isInteger(peers) || peers < 1 || peers > 9) throw new UsageError(`--peers: expected an integer from 1 to 9, got ${JSON.stringify(values.peers)}`);
  return runDemo({ peers, script: process.argv[1] as string, peerArgs: values['peer-arg'] ?? [], out: (line) => process.stdout.write(line + '\n') });
}

async function cmdToken(argv: string[]): Promise<number> {
  const { values } = parse({ args: argv, strict: true, options: { 'data-dir': { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help === true) {
    process.stdout.write(TOKEN_HELP);
    return 0;
  }
  const dir = values['data-dir'] ?? DEFAULT_PEER_OPTIONS.dataDir;
  const { JOIN_TOKEN_FILE } = await import('../node/cluster-key.js');
  const file = joinPath(dir, JOIN_TOKEN_FILE);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
    throw new RuntimeFailure(
      missing
        ? `${file} does not exist: no peer has started with --data-dir ${dir}, or it runs with --insecure (no key, no token)`
        : `cannot read ${file}: ${(err as Error).message}`,
    );
  }
  const token = text.trim();
  decodeJoinToken(token, file);
  await writeStdout(token + '\n');
  return 0;
}

async function cmdKeygen(argv: string[]): Promise<number> {
  const { values, positionals } = parse({
    args: argv,
    strict: true,
    allowPositionals: true,
    options: { force: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help === true) {
    process.stdout.write(KEYGEN_HELP);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError('keygen: expected exactly one FILE argument');
  const file = positionals[0] as string;
  if (existsSync(file) && values.force !== true) {
    throw new PeerStartError('SWARM_KEY', `${file} already exists; use --force to overwrite it`);
  }
  try {
    const { newSwarmKey } = await import('../node/swarm-key.js');
    await writeFile(file, newSwarmKey(), { mode: 0o600 });
  } catch (err) {
    throw new PeerStartError('SWARM_KEY', `cannot write ${file}: ${(err as Error).message}`);
  }
  process.stdout.write(`wrote swarm key to ${file}\n`);
  return 0;
}

/** The largest value any peer accepts (StoreLimits.maxValueBytes is at most 1 MiB). */
const MAX_VALUE_BYTES = 1024 * 1024;
const DEFAULT_KV_TIMEOUT_MS = 10_000;

const KV_COMMON_FLAGS = {
  http: { type: 'string' },
  'http-token-file': { type: 'string' },
  'timeout-ms': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** `--http`, `--timeout-ms` and `--http-token-file` of a KV command, checked. */
async function kvTarget(values: { http?: string; 'timeout-ms'?: string; 'http-token-file'?: string }): Promise<{ hostPort: string; timeoutMs: number }> {
  const timeoutMs = intFlag(values['timeout-ms'], '--timeout-ms') ?? DEFAULT_KV_TIMEOUT_MS;
  return { hostPort: await peerAddress(values), timeoutMs };
}

/** The single KEY positional of a KV command (plus `extra` more positionals allowed). */
function kvKey(cmd: string, positionals: string[], maxPositionals: number, usage: string): string {
  if (positionals.length === 0) throw new UsageError(`${cmd}: missing KEY (usage: ${usage})`);
  if (positionals.length > maxPositionals) {
    throw new UsageError(`${cmd}: unexpected argument ${JSON.stringify(positionals[maxPositionals])} (usage: ${usage})`);
  }
  const key = positionals[0] as string;
  if (key === '') throw new UsageError(`${cmd}: KEY must not be empty`);
  return key;
}

/** `/v1/kv/<key, every reserved character percent-encoded (so / is %2F)>`. */
function kvPath(key: string): string {
  return `/v1/kv/${encodeURIComponent(key)}`;
}

/** A key as messages show it. */
function quoteKey(key: string): string {
  return JSON.stringify(key.length > 80 ? `${key.slice(0, 80)}…` : key);
}

/** Read at most MAX_VALUE_BYTES from a file or (`-`) standard input; over that is an error. */
async function readValueFile(file: string): Promise<Uint8Array> {
  const tooBig = (): RuntimeFailure =>
    new RuntimeFailure(`--file ${file}: the value is over ${MAX_VALUE_BYTES} bytes, more than any peer accepts`);
  if (file === '-') {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > MAX_VALUE_BYTES) throw tooBig();
      chunks.push(chunk);
    }
    return Buffer.concat(chunks, size);
  }
  let handle;
  try {
    handle = await open(file, 'r');
  } catch (err) {
    throw new RuntimeFailure(`--file ${file}: cannot read it: ${(err as Error).message}`);
  }
  try {
    // Read one byte past the limit, so an endless file (a device, a pipe) is refused in bounded time.
    const buf = Buffer.alloc(MAX_VALUE_BYTES + 1);
    let size = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buf, size, buf.length - size, null);
      if (bytesRead === 0) break;
      size += bytesRead;
      if (size > MAX_VALUE_BYTES) throw tooBig();
    }
    return buf.subarray(0, size);
  } catch (err) {
    if (err instanceof RuntimeFailure) throw err;
    throw new RuntimeFailure(`--file ${file}: cannot read it: ${(err as Error).message}`);
  } finally {
    await handle.close();
  }
}

/** A KV request; resolves to the answer (any status) with its body read, within timeoutMs overall. */
async function kvRequest(
  hostPort: string,
  method: 'GET' | 'PUT' | 'DELETE',
  path: string,
  timeoutMs: number,
  body?: Uint8Array,
): Promise<{ status: number; headers: Headers; body: Uint8Array }> {
  const signal = AbortSignal.timeout(timeoutMs);
  const isWrite = method !== 'GET';
  const failed = (err: unknown): RuntimeFailure => {
    const name = (err as Error).name;
    if (name === 'TimeoutError' || name === 'AbortError') {
      const outcome = isWrite ? '; the write may or may not have been applied' : '';
      return new RuntimeFailure(`no answer from the peer at ${hostPort} within ${timeoutMs} ms (--timeout-ms)${outcome}`);
    }
    const c = (err as { cause?: { code?: string; message?: string } }).cause;
    const cause = c?.code ?? c?.message ?? name;
    return new RuntimeFailure(`cannot reach a shoal peer at ${hostPort} (${cause}); is it running? (--http HOST:PORT)`);
  };
  try {
    const res = await fetch(`http://${hostPort}${path}`, { method, body, signal, headers: clientHeaders });
    return { status: res.status, headers: res.headers, body: new Uint8Array(await res.arrayBuffer()) };
  } catch (err) {
    throw failed(err);
  }
}

/** A JSON object body, or null when the body is not one. */
function parseJsonObject(body: Uint8Array): object | null {
  try {
    const v = JSON.parse(Buffer.from(body).toString('utf8')) as unknown;
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? v : null;
  } catch {
    return null;
  }
}

/** The error an unsuccessful KV answer means: the server's code and message, on one line. */
function kvFailure(op: string, key: string, answer: { status: number; headers: Headers; body: Uint8Array }): RuntimeFailure {
  const parsed = parseJsonObject(answer.body) as { error?: unknown; message?: unknown; currentVersion?: unknown; present?: unknown } | null;
  const code = typeof parsed?.error === 'string' ? parsed.error : `HTTP ${answer.status}`;
  const message = (typeof parsed?.message === 'string' ? parsed.message : '').replace(/\s+/g, ' ');
  if (answer.status === 404 && code === 'not_found' && op === 'get') return new RuntimeFailure(`not found: key ${quoteKey(key)}`);
  if (answer.status === 412 && code === 'version_mismatch') {
    const cur = typeof parsed?.currentVersion === 'number' ? parsed.currentVersion : '?';
    const where = parsed?.present === false ? `is absent (version ${cur})` : `is at version ${cur}`;
    return new RuntimeFailure(`version mismatch: key ${quoteKey(key)} ${where}; nothing written`);
  }
  const retry = answer.headers.get('retry-after');
  const hint = retry !== null ? ` (retry in ${retry} s)` : '';
  return new RuntimeFailure(`${op} ${quoteKey(key)}: HTTP ${answer.status} ${code}${message !== '' ? `: ${message}` : ''}${hint}`);
}

/** Write to stdout and wait until it is handed to the OS (a value can be 1 MiB). */
function writeStdout(data: Uint8Array | string): Promise<void> {
  return new Promise((resolve, reject) => process.stdout.write(data, (err) => (err ? reject(err) : resolve())));
}

/** The `version` of a `{ key, version }` answer. */
function versionOf(answer: { body: Uint8Array }): number | null {
  const v = (parseJsonObject(answer.body) as { version?: unknown } | null)?.version;
  return typeof v === 'number' ? v : null;
}

async function cmdPut(argv: string[]): Promise<number> {
  const { values, positionals } = parse({
    args: argv,
    strict: true,
    allowPositionals: true,
    options: { ...KV_COMMON_FLAGS, file: { type: 'string' }, 'if-version': { type: 'string' } },
  });
  if (values.help === true) {
    process.stdout.write(PUT_HELP);
    return 0;
  }
  const usage = 'shoal put KEY VALUE | shoal put KEY --file FILE';
  const withFile = values.file !== undefined;
  const key = kvKey('put', positionals, withFile ? 1 : 2, usage);
  if (withFile && values.file === '') throw new UsageError('--file: expected a file name or - for standard input');
  if (!withFile && positionals.length < 2) throw new UsageError(`put: missing VALUE or --file FILE (usage: ${usage})`);
  let query = '';
  const ifVersion = values['if-version'];
  if (ifVersion !== undefined) {
    if (!/^[0-9]{1,15}$/.test(ifVersion)) throw new UsageError(`--if-version: expected a non-negative integer, got ${JSON.stringify(ifVersion)}`);
    query = `?ifVersion=${Number(ifVersion)}`;
  }
  const { hostPort, timeoutMs } = await kvTarget(values);
  const value = withFile ? await readValueFile(values.file as string) : Buffer.from(positionals[1] as string, 'utf8');
  const answer = await kvRequest(hostPort, 'PUT', kvPath(key) + query, timeoutMs, value);
  if (answer.status !== 200) throw kvFailure('put', key, answer);
  await writeStdout(`version ${versionOf(answer) ?? '?'}\n`);
  return 0;
}

async function cmdGet(argv: string[]): Promise<number> {
  const { values, positionals } = parse({
    args: argv,
    strict: true,
    allowPositionals: true,
    options: { ...KV_COMMON_FLAGS, consistency: { type: 'string' }, verbose: { type: 'boolean' } },
  });
  if (values.help === true) {
    process.stdout.write(GET_HELP);
    return 0;
  }
  const key = kvKey('get', positionals, 1, 'shoal get KEY');
  let query = '';
  if (values.consistency !== undefined) {
    if (!(READ_CONSISTENCIES as readonly string[]).includes(values.consistency)) {
      throw new UsageError(`--consistency: expected one of ${READ_CONSISTENCIES.join(', ')}, got ${JSON.stringify(values.consistency)}`);
    }
    query = `?consistency=${values.consistency}`;
  }
  const { hostPort, timeoutMs } = await kvTarget(values);
  const answer = await kvRequest(hostPort, 'GET', kvPath(key) + query, timeoutMs);
  if (answer.status !== 200) throw kvFailure('get', key, answer);
  await writeStdout(answer.body);
  if (values.verbose === true) process.stderr.write(`version ${answer.headers.get('x-shoal-version') ?? '?'}\n`);
  return 0;
}

async function cmdDel(argv: string[]): Promise<number> {
  const { values, positionals } = parse({ args: argv, strict: true, allowPositionals: true, options: { ...KV_COMMON_FLAGS } });
  if (values.help === true) {
    process.stdout.write(DEL_HELP);
    return 0;
  }
  const key = kvKey('del', positionals, 1, 'shoal del KEY');
  const { hostPort, timeoutMs } = await kvTarget(values);
  const answer = await kvRequest(hostPort, 'DELETE', kvPath(key), timeoutMs);
  if (answer.status !== 200) throw kvFailure('del', key, answer);
  await writeStdout(`version ${versionOf(answer) ?? '?'}\n`);
  return 0;
}

const TASK_HELP = `Usage: shoal task <submit|get|list|cancel> [options]

  shoal task submit TYPE [--payload JSON] [--priority N] [--cpu N] [--mem-mb N]
                         [--timeout-ms N] [--max-attempts N] [--idempotency-key K] [--wait]
      queue a task; prints its id (with --wait: waits and prints the finished record).
      Built-in types every peer runs: sleep ({"ms": N}) and hash ({"data": S, "rounds": N}).
  shoal task get ID      print a task's record (state, attempts, peer, result or reasons)
  shoal task list [--state queued|running|succeeded|failed|cancelled]
  shoal task cancel ID   cancel a queued or running task

Options for all:
  --http HOST:PORT   the peer's HTTP API (default ${DEFAULT_PEER_OPTIONS.http})
${TOKEN_FLAG_HELP}
`;

async function cmdTask(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h') {
    process.stdout.write(TASK_HELP);
    return sub === undefined ? EXIT_USAGE : 0;
  }
  const { values, positionals } = parse({
    args: rest,
    strict: true,
    allowPositionals: true,
    options: {
      http: { type: 'string' },
      'http-token-file': { type: 'string' },
      payload: { type: 'string' },
      priority: { type: 'string' },
      cpu: { type: 'string' },
      'mem-mb': { type: 'string' },
      'timeout-ms': { type: 'string' },
      'max-attempts': { type: 'string' },
      'idempotency-key': { type: 'string' },
      state: { type: 'string' },
      wait: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help === true) {
    process.stdout.write(TASK_HELP);
    return 0;
  }
  const one = (what: string): string => {
    if (positionals.length !== 1) throw new UsageError(`task ${sub}: expected one ${what}, got ${positionals.length === 0 ? 'none' : positionals.slice(1).map((p) => JSON.stringify(p)).join(' ') + ' extra'}`);
    return positionals[0]!;
  };
  const hostPort = await peerAddress(values);
  const print = (x: unknown): void => void process.stdout.write(JSON.stringify(x, null, 2) + '\n');
  switch (sub) {
    case 'submit': {
      const type = one('TYPE');
      const body: Record<string, unknown> = { type };
      if (values.payload !== undefined) {
        try {
          body.payload = JSON.parse(values.payload);
        } catch {
          throw new UsageError(`--payload: not JSON: ${JSON.stringify(values.payload)}`);
        }
      }
      const numFlag = (flag: string, v: string | undefined): number | undefined => {
        if (v === undefined) return undefined;
        const n = Number(v);
        if (v.trim() === '' || !Number.isFinite(n)) throw new UsageError(`${flag}: expected a number, got ${JSON.stringify(v)}`);
        return n;
      };
      const pr = numFlag('--priority', values.priority);
      if (pr !== undefined) body.priority = pr;
      const cpu = numFlag('--cpu', values.cpu);
      const mem = numFlag('--mem-mb', values['mem-mb']);
      if (cpu !== undefined || mem !== undefined) body.resources = { ...(cpu !== undefined ? { cpu } : {}), ...(mem !== undefined ? { memMb: mem } : {}) };
      const to = numFlag('--timeout-ms', values['timeout-ms']);
      if (to !== undefined) body.timeoutMs = to;
      const ma = numFlag('--max-attempts', values['max-attempts']);
      if (ma !== undefined) body.maxAttempts = ma;
      if (values['idempotency-key'] !== undefined) body.idempotencyKey = values['idempotency-key'];
      const { id } = (await fetchJson(hostPort, '/v1/tasks', 20_000, 'POST', body)) as { id: string };
      if (values.wait !== true) {
        process.stdout.write(`${id}\n`);
        return 0;
      }
      for (let i = 0; i < 100_000; i++) {
        const rec = (await fetchJson(hostPort, `/v1/tasks/${id}`, 10_000)) as { state: TaskState };
        if (isFinishedState(rec.state)) {
          print(rec);
          return rec.state === 'succeeded' ? 0 : EXIT_RUNTIME;
        }
        await new Promise((r) => setTimeout(r, Math.min(500, 20 * (i + 1))));
      }
      throw new RuntimeFailure(`task ${id} did not finish`);
    }
    case 'get':
      print(await fetchJson(hostPort, `/v1/tasks/${encodeURIComponent(one('ID'))}`, 10_000));
      return 0;
    case 'list': {
      if (positionals.length > 0) throw new UsageError(`task list: unexpected ${JSON.stringify(positionals[0])}`);
      const q = values.state !== undefined ? `?state=${encodeURIComponent(values.state)}` : '';
      const { tasks } = (await fetchJson(hostPort, `/v1/tasks${q}`, 20_000)) as { tasks: Array<{ id: string; type: string; state: string; attempts: number; peer: string | null }> };
      for (const t of tasks) process.stdout.write(`${t.id}  ${t.type.padEnd(12)} ${t.state.padEnd(10)} attempts ${t.attempts}  ${t.peer ?? '-'}\n`);
      return 0;
    }
    case 'cancel': {
      const r = (await fetchJson(hostPort, `/v1/tasks/${encodeURIComponent(one('ID'))}`, 10_000, 'DELETE')) as { cancelled: boolean };
      process.stdout.write(r.cancelled ? 'cancelled\n' : 'already finished\n');
      return 0;
    }
    default:
      throw new UsageError(`task: unknown subcommand '${sub}' (submit, get, list, cancel)`);
  }
}

const COMMANDS: Record<string, { run: (argv: string[]) => Promise<number>; help: string }> = {
  task: { run: cmdTask, help: TASK_HELP },
  start: { run: cmdStart, help: START_HELP },
  status: { run: cmdStatus, help: STATUS_HELP },
  leave: { run: cmdLeave, help: LEAVE_HELP },
  drain: { run: cmdDrain, help: DRAIN_HELP },
  capacity: { run: cmdCapacity, help: CAPACITY_HELP },
  demo: { run: cmdDemo, help: DEMO_HELP },
  token: { run: cmdToken, help: TOKEN_HELP },
  keygen: { run: cmdKeygen, help: KEYGEN_HELP },
  put: { run: cmdPut, help: PUT_HELP },
  get: { run: cmdGet, help: GET_HELP },
  del: { run: cmdDel, help: DEL_HELP },
};

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === '--help' || cmd === '-h') {
    process.stdout.write(MAIN_HELP);
    return cmd === undefined ? EXIT_USAGE : 0;
  }
  if (cmd === 'help') {
    const topic = rest[0];
    process.stdout.write(topic !== undefined && COMMANDS[topic] !== undefined ? COMMANDS[topic].help : MAIN_HELP);
    return 0;
  }
  const command = COMMANDS[cmd];
  if (command === undefined) throw new UsageError(`unknown command '${cmd}' (try 'shoal --help')`);
  return command.run(rest);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    const e = err as Error;
    if (e instanceof UsageError || e instanceof ConfigError) {
      process.stderr.write(`shoal: ${e.message}\n`);
      process.exit(EXIT_USAGE);
    }
    if (e instanceof PeerStartError || e instanceof RuntimeFailure) {
      process.stderr.write(`shoal: ${e.message}\n`);
      process.exit(EXIT_RUNTIME);
    }
    process.stderr.write(`shoal: unexpected error: ${e.stack ?? String(e)}\n`);
    process.exit(EXIT_RUNTIME);
  },
);
