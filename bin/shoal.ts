#!/usr/bin/env node
// The polyfill must be the first import (../shared/STACK.md: Node 20).
import '../node/polyfill.js';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { DEFAULT_PEER_OPTIONS, parseHostPort, validateJoinAddr, validateListenAddr, type PeerOptions } from '../node/config.js';
import { ConfigError, PeerStartError } from '../node/errors.js';
import { createPeer } from '../node/peer.js';
import { newSwarmKey } from '../node/swarm-key.js';
import { LOG_LEVELS } from '../node/log.js';
import { DEFAULT_MEMBERSHIP_CONFIG } from '../protocols/membership/config.js';
import { DEFAULT_RAFT_CONFIG } from '../protocols/raft/config.js';
import type { PeerStatus } from '../node/peer.js';

/** Usage errors exit 2; runtime failures exit 1. */
class UsageError extends Error {
  override readonly name = 'UsageError';
}

const EXIT_RUNTIME = 1;
const EXIT_USAGE = 2;
const m = DEFAULT_MEMBERSHIP_CONFIG;

const MAIN_HELP = `shoal: a peer-to-peer cluster for Node.js

Usage: shoal <command> [options]

Commands:
  start            run a peer (joins an existing cluster with --join)
  status           show the members a running peer sees
  leave            make a running peer leave the cluster and exit
  keygen FILE      write a new private-network (swarm) key to FILE
  help [COMMAND]   show help for a command

Run 'shoal <command> --help' for a command's options.
`;

const START_HELP = `Usage: shoal start [options]

Run a peer in the foreground. SIGINT or SIGTERM makes it leave gracefully.

Options:
  --listen MULTIADDR        address to listen on, repeatable; /tcp/0 picks a free port
                            (default ${DEFAULT_PEER_OPTIONS.listen[0]})
  --join MULTIADDR          full address of a peer to join through, with /p2p/<peer id>;
                            repeatable; retried with backoff until one answers (default: none,
                            start a new cluster)
  --data-dir DIR            identity and data (default ${DEFAULT_PEER_OPTIONS.dataDir})
  --http HOST:PORT|off      HTTP API address; port 0 picks a free port (default ${DEFAULT_PEER_OPTIONS.http})
  --swarm-key FILE          private-network key from 'shoal keygen'; peers without it cannot
                            connect (default: open network)
  --log-level LEVEL         debug, info, warn, error or silent (default ${DEFAULT_PEER_OPTIONS.logLevel})
  --heartbeat-interval-ms N heartbeat period (default ${m.heartbeatIntervalMs})
  --phi-threshold N         phi at which a member becomes suspect (default ${m.phiThreshold})
  --acceptable-pause-ms N   heartbeat pause tolerated before phi rises (default ${m.acceptableHeartbeatPauseMs})
  --min-std-deviation-ms N  floor of the inter-arrival standard deviation (default ${m.minStdDeviationMs})
  --suspicion-timeout-ms N  how long a member stays suspect before it is dead (default ${m.suspicionTimeoutMs})
  --voters N                Raft voters the coordinator keeps; the other peers are learners
                            (default ${DEFAULT_PEER_OPTIONS.voters}; 5 survives two failures)
  --replace-voter-after-ms N a voter dead this long is replaced by a live learner
                            (default ${DEFAULT_PEER_OPTIONS.replaceVoterAfterMs})
  --election-timeout-ms N   minimum Raft election timeout; the actual one is random in [N, 2N)
                            (default ${DEFAULT_RAFT_CONFIG.electionTicks * DEFAULT_RAFT_CONFIG.tickIntervalMs})
  -h, --help                this help

Logs are JSON lines on stderr; the peer id and join addresses are printed on stdout.
`;

const STATUS_HELP = `Usage: shoal status [options]

Show the members that a running peer sees.

Options:
  --http HOST:PORT   the peer's HTTP API (default ${DEFAULT_PEER_OPTIONS.http})
  --json             print the raw JSON of GET /v1/status
  --timeout-ms N     give up after N ms (default 5000)
  -h, --help         this help
`;

const LEAVE_HELP = `Usage: shoal leave [options]

Ask a running peer to leave the cluster gracefully: it hands over the coordinator role if it
holds it, announces 'left', waits to be removed from the Raft configuration, and exits 0.

Options:
  --http HOST:PORT   the peer's HTTP API (default ${DEFAULT_PEER_OPTIONS.http})
  --wait-ms N        wait up to N ms until the peer has stopped answering (default 15000)
  -h, --help         this help
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
    throw new UsageError((err as Error).message);
  }
}

function intFlag(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n <= 0) throw new UsageError(`${flag}: expected a positive number, got ${JSON.stringify(value)}`);
  return n;
}

async function cmdStart(argv: string[]): Promise<number> {
  const { values } = parse({
    args: argv,
    strict: true,
    options: {
      listen: { type: 'string', multiple: true },
      join: { type: 'string', multiple: true },
      'data-dir': { type: 'string' },
      http: { type: 'string' },
      'swarm-key': { type: 'string' },
      'log-level': { type: 'string' },
      'heartbeat-interval-ms': { type: 'string' },
      'phi-threshold': { type: 'string' },
      'acceptable-pause-ms': { type: 'string' },
      'min-std-deviation-ms': { type: 'string' },
      'suspicion-timeout-ms': { type: 'string' },
      voters: { type: 'string' },
      'replace-voter-after-ms': { type: 'string' },
      'election-timeout-ms': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help === true) {
    process.stdout.write(START_HELP);
    return 0;
  }
  // Check addresses here so the error names the flag the user typed.
  for (const a of values.listen ?? []) validateListenAddr(a, '--listen');
  for (const a of values.join ?? []) validateJoinAddr(a, '--join');
  if (values.http !== undefined && values.http !== 'off') parseHostPort(values.http, '--http');
  const logLevel = values['log-level'];
  if (logLevel !== undefined && !(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new UsageError(`--log-level: expected one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(logLevel)}`);
  }

  const membership: PeerOptions['membership'] = {};
  const setNum = (key: keyof typeof m, flag: string, v: string | undefined): void => {
    const n = intFlag(v, flag);
    if (n !== undefined) (membership as Record<string, number>)[key] = n;
  };
  setNum('heartbeatIntervalMs', '--heartbeat-interval-ms', values['heartbeat-interval-ms']);
  setNum('phiThreshold', '--phi-threshold', values['phi-threshold']);
  setNum('acceptableHeartbeatPauseMs', '--acceptable-pause-ms', values['acceptable-pause-ms']);
  setNum('minStdDeviationMs', '--min-std-deviation-ms', values['min-std-deviation-ms']);
  setNum('suspicionTimeoutMs', '--suspicion-timeout-ms', values['suspicion-timeout-ms']);

  const options: Partial<PeerOptions> = { membership };
  const voters = intFlag(values.voters, '--voters');
  if (voters !== undefined) {
    if (!Number.isInteger(voters) || voters > 9) throw new UsageError(`--voters: expected an integer from 1 to 9, got ${values.voters}`);
    options.voters = voters;
  }
  const replaceAfter = intFlag(values['replace-voter-after-ms'], '--replace-voter-after-ms');
  if (replaceAfter !== undefined) {
    if (replaceAfter < 1000) throw new UsageError('--replace-voter-after-ms: must be at least 1000');
    options.replaceVoterAfterMs = replaceAfter;
  }
  const election = intFlag(values['election-timeout-ms'], '--election-timeout-ms');
  if (election !== undefined) {
    const tick = DEFAULT_RAFT_CONFIG.tickIntervalMs;
    if (!Number.isInteger(election / tick) || election / tick < 2) {
      throw new UsageError(`--election-timeout-ms: must be a multiple of ${tick} and at least ${2 * tick}`);
    }
    options.raft = { electionTicks: election / tick };
  }
  if (values.listen !== undefined) options.listen = values.listen;
  if (values.join !== undefined) options.join = values.join;
  if (values['data-dir'] !== undefined) options.dataDir = values['data-dir'];
  if (values.http !== undefined) options.http = values.http;
  if (values['swarm-key'] !== undefined) options.swarmKeyFile = values['swarm-key'];
  if (values['log-level'] !== undefined) options.logLevel = values['log-level'] as PeerOptions['logLevel'];

  const peer = await createPeer(options);
  const lines = [
    `shoal peer ${peer.peerId}`,
    ...peer.addrs.map((a) => `  join with: ${a}`),
    `  http: ${peer.httpAddress ?? 'off'}`,
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
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    // `shoal leave` (POST /v1/leave) stops the peer from the inside.
    void peer.stopped.then(() => resolve(0));
  });
}

function formatAge(ms: number | null): string {
  if (ms === null) return '-';
  return ms < 10_000 ? `${Math.round(ms)}ms` : `${(ms / 1000).toFixed(1)}s`;
}

/** The member table as aligned text columns. */
export function formatStatusTable(status: PeerStatus): string {
  const header = ['PEER ID', 'STATE', 'PHI', 'INC', 'LAST HEARTBEAT', 'ADDRESS'];
  const rows = status.members.map((mem) => [
    mem.peerId + (mem.self ? ' *' : ''),
    mem.state,
    mem.phi.toFixed(2),
    String(mem.incarnation),
    mem.self ? '-' : formatAge(mem.lastHeartbeatAgeMs),
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
  return [`peer ${status.peerId}  (${counts.join(', ')}; * = this peer)`, ...coord, '', fmt(header), ...rows.map(fmt)].join('\n') + '\n';
}

async function fetchJson(hostPort: string, path: string, timeoutMs: number, method = 'GET'): Promise<unknown> {
  const url = `http://${hostPort}${path}`;
  let res: Response;
  try {
    res = await fetch(url, { method, signal: AbortSignal.timeout(timeoutMs) });
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
      json: { type: 'boolean' },
      'timeout-ms': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help === true) {
    process.stdout.write(STATUS_HELP);
    return 0;
  }
  const hostPort = values.http ?? DEFAULT_PEER_OPTIONS.http;
  parseHostPort(hostPort, '--http');
  const timeoutMs = intFlag(values['timeout-ms'], '--timeout-ms') ?? 5000;
  const status = (await fetchJson(hostPort, '/v1/status', timeoutMs)) as PeerStatus;
  process.stdout.write(values.json === true ? JSON.stringify(status, null, 2) + '\n' : formatStatusTable(status));
  return 0;
}

async function cmdLeave(argv: string[]): Promise<number> {
  const { values } = parse({
    args: argv,
    strict: true,
    options: {
      http: { type: 'string' },
      'wait-ms': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help === true) {
    process.stdout.write(LEAVE_HELP);
    return 0;
  }
  const hostPort = values.http ?? DEFAULT_PEER_OPTIONS.http;
  parseHostPort(hostPort, '--http');
  const waitMs = intFlag(values['wait-ms'], '--wait-ms') ?? 15_000;
  const status = (await fetchJson(hostPort, '/v1/status', 5000)) as PeerStatus;
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
    await writeFile(file, newSwarmKey(), { mode: 0o600 });
  } catch (err) {
    throw new PeerStartError('SWARM_KEY', `cannot write ${file}: ${(err as Error).message}`);
  }
  process.stdout.write(`wrote swarm key to ${file}\n`);
  return 0;
}

const COMMANDS: Record<string, { run: (argv: string[]) => Promise<number>; help: string }> = {
  start: { run: cmdStart, help: START_HELP },
  status: { run: cmdStatus, help: STATUS_HELP },
  leave: { run: cmdLeave, help: LEAVE_HELP },
  keygen: { run: cmdKeygen, help: KEYGEN_HELP },
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
    if (e instanceof PeerStartError) {
      process.stderr.write(`shoal: ${e.message}\n`);
      process.exit(EXIT_RUNTIME);
    }
    process.stderr.write(`shoal: unexpected error: ${e.stack ?? String(e)}\n`);
    process.exit(EXIT_RUNTIME);
  },
);
