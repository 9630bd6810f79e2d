/**
 * The options of `shoal start`, in one table: each row names its flag, how its value is read and
 * checked, which PeerOptions field it sets, its default as shown, and its help. The table drives
 * the flag parser (`startParseOptions`), the conversion of flags into PeerOptions with errors
 * naming the flag (`startOptionsFromFlags`), the `--help` text (`startOptionsHelp`), the README's
 * table (`startOptionsMarkdown`, checked by a unit test) and the range checks of
 * `validatePeerOptions` for the fields a row owns (`checkOwnedFields`), so a default, a bound or
 * a description is written once.
 */
import { ConfigError } from '../protocols/errors.js';
import { DEFAULT_MEMBERSHIP_CONFIG } from '../protocols/membership/config.js';
import { DEFAULT_RAFT_CONFIG } from '../protocols/raft/config.js';
import { DEFAULT_CLUSTER_SETTINGS } from '../protocols/cluster-map/commands.js';
import { MAX_KEY_BYTES, MAX_VALUE_BYTES } from '../protocols/replication/config.js';
import { LOG_LEVELS } from './log.js';
import { READ_POLICIES } from './store-api.js';

export type StartSection = 'Options' | 'Failure detector and coordinator' | 'Store options' | 'Autoscaler' | 'New-cluster options (read only by the peer that starts a cluster, i.e. without --join)';

/**
 * How a flag's value is read. Numeric readers: a value in [min, max] (above min with
 * `minExclusive`); `keyword`, when given, is a word that leaves the field at its default.
 */
type Reader =
  | { kind: 'boolean' }
  | { kind: 'string'; multiple?: boolean }
  | { kind: 'choice'; choices: readonly string[] }
  | { kind: 'integer'; min: number; max: number; minExclusive?: boolean }
  | { kind: 'number'; min: number; max: number; minExclusive?: boolean; keyword?: string };

/**
 * The PeerOptions field a row sets, as a path (`leaseMs`, `membership.phiThreshold`,
 * `cluster.shardCount`). `validatePeerOptions` checks the integer and number rows' bounds on the
 * field (naming the field) when a row says `owns`.
 */
export interface StartOption {
  flag: string;
  /** Placeholder of the value in help (none for a boolean flag). */
  arg?: string;
  section: StartSection;
  read: Reader;
  /** Field path the value goes to; absent for --autoscale-dry-run (a spelling of --autoscale dry-run). */
  field?: string;
  /** validatePeerOptions checks this row's bounds on `field` for callers that skip the CLI. */
  owns?: boolean;
  /** What null in an owned field means (then null is accepted), e.g. "the CPU count". */
  nullMeans?: string;
  /** Turn the read value into what the field holds (units, shapes). */
  convert?: (v: number) => number | object;
  /** Extra check on the read value: a message when refused. */
  check?: (v: number) => string | null;
  /** Default as shown in help and the README. */
  shown: string;
  help: string;
}

const m = DEFAULT_MEMBERSHIP_CONFIG;
const TICK = DEFAULT_RAFT_CONFIG.tickIntervalMs;
const S_MAIN: StartSection = 'Options';
const S_FD: StartSection = 'Failure detector and coordinator';
const S_STORE: StartSection = 'Store options';
const S_AUTO: StartSection = 'Autoscaler';
const S_NEW: StartSection = 'New-cluster options (read only by the peer that starts a cluster, i.e. without --join)';
const int = (min: number, max: number): Reader => ({ kind: 'integer', min, max });
const positive = (max: number): Reader => ({ kind: 'number', min: 0, max, minExclusive: true });

/** Every `shoal start` option, in help order. */
export const START_OPTIONS: readonly StartOption[] = Object.freeze([
  { flag: 'listen', arg: 'MULTIADDR', section: S_MAIN, read: { kind: 'string', multiple: true }, field: 'listen', shown: '/ip4/127.0.0.1/tcp/4001', help: 'address to listen on; repeatable; /tcp/0 picks a free port' },
  {
    flag: 'join',
    arg: 'TOKEN|MULTIADDR',
    section: S_MAIN,
    read: { kind: 'string', multiple: true },
    field: 'join',
    shown: 'none: start a new cluster',
    help: "the join token a member printed (SHOAL-1-...: the cluster key and its addresses), or a member's full address ending in /p2p/<peer id> when the key comes from the data dir or --swarm-key; repeatable; retried with backoff (250 ms up to 5 s) until one answers",
  },
  { flag: 'data-dir', arg: 'DIR', section: S_MAIN, read: { kind: 'string' }, field: 'dataDir', shown: './shoal-data', help: 'identity (the libp2p key, so a restarted peer keeps its id), cluster key and data' },
  { flag: 'http', arg: 'HOST:PORT|off', section: S_MAIN, read: { kind: 'string' }, field: 'http', shown: '127.0.0.1:7070', help: 'HTTP API and dashboard (at /); port 0 picks a free port' },
  {
    flag: 'http-allowed-host',
    arg: 'NAME',
    section: S_MAIN,
    read: { kind: 'string', multiple: true },
    field: 'httpAllowedHosts',
    shown: 'none',
    help: 'a host name the HTTP API answers to besides IP addresses and localhost; repeatable; requests naming any other Host get 421',
  },
  { flag: 'swarm-key', arg: 'FILE', section: S_MAIN, read: { kind: 'string' }, field: 'swarmKeyFile', shown: "none: the data dir's key, a join token's, or a generated one", help: "cluster key from 'shoal keygen' instead; peers without the same key cannot connect" },
  { flag: 'insecure', section: S_MAIN, read: { kind: 'boolean' }, field: 'insecure', shown: 'off', help: 'open network: no cluster key, and the HTTP API beyond loopback without a token; refused when the data dir holds a key. Only for trusted networks' },
  {
    flag: 'http-token-file',
    arg: 'FILE',
    section: S_MAIN,
    read: { kind: 'string' },
    field: 'httpTokenFile',
    shown: 'none',
    help: 'bearer token (16 to 4096 visible ASCII characters) every HTTP request except GET /healthz must carry; required to serve HTTP beyond loopback unless --insecure',
  },
  { flag: 'log-level', arg: 'LEVEL', section: S_MAIN, read: { kind: 'choice', choices: LOG_LEVELS }, field: 'logLevel', shown: 'info', help: `${LOG_LEVELS.join(', ')}` },
  { flag: 'heartbeat-interval-ms', arg: 'N', section: S_FD, read: positive(Number.MAX_SAFE_INTEGER), field: 'membership.heartbeatIntervalMs', shown: String(m.heartbeatIntervalMs), help: 'how often a peer publishes its heartbeat' },
  { flag: 'phi-threshold', arg: 'N', section: S_FD, read: positive(Number.MAX_SAFE_INTEGER), field: 'membership.phiThreshold', shown: String(m.phiThreshold), help: "phi at which a member becomes suspect (Cassandra's and Akka's default)" },
  { flag: 'acceptable-pause-ms', arg: 'N', section: S_FD, read: positive(Number.MAX_SAFE_INTEGER), field: 'membership.acceptableHeartbeatPauseMs', shown: String(m.acceptableHeartbeatPauseMs), help: 'heartbeat pause tolerated before phi starts to rise (GC, event-loop stalls)' },
  { flag: 'min-std-deviation-ms', arg: 'N', section: S_FD, read: positive(Number.MAX_SAFE_INTEGER), field: 'membership.minStdDeviationMs', shown: String(m.minStdDeviationMs), help: "floor of the inter-arrival standard deviation, so steady heartbeats don't make phi jumpy" },
  { flag: 'suspicion-timeout-ms', arg: 'N', section: S_FD, read: positive(Number.MAX_SAFE_INTEGER), field: 'membership.suspicionTimeoutMs', shown: String(m.suspicionTimeoutMs), help: 'how long a member stays suspect before it is declared dead' },
  { flag: 'voters', arg: 'N', section: S_FD, read: int(1, 9), field: 'voters', owns: true, shown: '3', help: 'Raft voters the coordinator keeps; the other peers are learners. 5 survives two failures' },
  { flag: 'replace-voter-after-ms', arg: 'N', section: S_FD, read: int(1000, 86_400_000), field: 'replaceVoterAfterMs', owns: true, shown: '30000', help: 'a voter dead this long is replaced by a live learner (a restart should not reshuffle voters)' },
  {
    flag: 'election-timeout-ms',
    arg: 'N',
    section: S_FD,
    read: int(2 * TICK, 600_000),
    field: 'raft',
    check: (v) => (v % TICK === 0 ? null : `must be a multiple of ${TICK}`),
    convert: (v) => ({ electionTicks: v / TICK }),
    shown: String(DEFAULT_RAFT_CONFIG.electionTicks * TICK),
    help: `minimum Raft election timeout, a multiple of ${TICK}; the actual one is random in [N, 2N)`,
  },
  {
    flag: 'capacity',
    arg: 'N',
    section: S_STORE,
    read: positive(1024),
    field: 'capacity',
    owns: true,
    shown: '1',
    help: 'relative capacity: placement gives this peer a proportional share of replicas (applied when the peer joins or restarts with a new value; PUT /v1/cluster/members/{id} overrides it)',
  },
  {
    flag: 'sync',
    section: S_STORE,
    read: { kind: 'boolean' },
    field: 'sync',
    shown: 'off',
    help: 'fsync every group commit before acknowledging it (survives power loss); off: acknowledged once in the OS buffers of every in-sync replica (survives any process crash)',
  },
  { flag: 'read-policy', arg: 'POLICY', section: S_STORE, read: { kind: 'choice', choices: READ_POLICIES }, field: 'readPolicy', shown: 'round-robin', help: 'replica for consistency=any reads: round-robin, random, weighted (by capacity), least-latency (EWMA of observed latency)' },
  { flag: 'lease-ms', arg: 'N', section: S_STORE, read: int(100, 60_000), field: 'leaseMs', owns: true, shown: '500', help: 'primary lease the coordinator grants (used while this peer is the coordinator); failover takes about this long' },
  { flag: 'request-timeout-ms', arg: 'N', section: S_STORE, read: int(100, 600_000), field: 'requestTimeoutMs', owns: true, shown: '5000', help: 'how long an operation waits for a serving primary before 503' },
  { flag: 'max-key-bytes', arg: 'N', section: S_STORE, read: int(1, MAX_KEY_BYTES), field: 'maxKeyBytes', owns: true, shown: String(MAX_KEY_BYTES), help: 'largest key in UTF-8 bytes' },
  { flag: 'max-value-bytes', arg: 'N', section: S_STORE, read: int(0, MAX_VALUE_BYTES), field: 'maxValueBytes', owns: true, shown: String(MAX_VALUE_BYTES), help: 'largest value in bytes' },
  {
    flag: 'rebalance-rate',
    arg: 'MB/S',
    section: S_STORE,
    read: { kind: 'number', min: 0.01, max: 100_000, keyword: 'unlimited' },
    field: 'rebalanceRate',
    convert: (mb) => Math.round(mb * 1024 * 1024),
    shown: 'unlimited',
    help: 'bandwidth (MiB/s, a decimal number, or "unlimited") all snapshot transfers from this peer share when data moves (join, drain, leave, capacity change, re-replication after a death)',
  },
  { flag: 'stop-drain-ms', arg: 'N', section: S_STORE, read: int(0, 86_400_000), field: 'stopDrainMs', shown: '300000', help: "on SIGTERM, move this peer's replicas to the other peers for up to N ms before leaving; 0 leaves at once (as SIGINT does)" },
  { flag: 'task-slots', arg: 'N', section: S_STORE, read: int(1, 4096), field: 'taskSlots', owns: true, nullMeans: 'the CPU count', shown: 'CPU count', help: 'CPU cores tasks may hold at once on this peer at capacity 1; it offers N x its capacity (see Tasks)' },
  { flag: 'log-retain-groups', arg: 'N', section: S_STORE, read: int(0, 1_000_000), field: 'logRetainGroups', owns: true, shown: '256', help: 'op-log groups a shard keeps for backups that fall behind (also bounded by 32 MiB); a replica further behind gets a snapshot' },
  {
    flag: 'autoscale',
    arg: 'MODE',
    section: S_AUTO,
    read: { kind: 'choice', choices: ['off', 'dry-run', 'exec', 'local'] },
    field: 'autoscale.mode',
    shown: 'off',
    help: 'off, dry-run (log decisions only), exec (run --autoscale-exec CMD with {count}), local (start and stop shoal processes on this machine); acts while this peer is the coordinator',
  },
  { flag: 'autoscale-dry-run', section: S_AUTO, read: { kind: 'boolean' }, shown: 'off', help: 'the same as --autoscale dry-run' },
  { flag: 'autoscale-min', arg: 'N', section: S_AUTO, read: int(1, 1000), field: 'autoscale.minPeers', shown: '3', help: 'fewest peers the autoscaler keeps' },
  { flag: 'autoscale-max', arg: 'N', section: S_AUTO, read: int(1, 1000), field: 'autoscale.maxPeers', shown: '9', help: 'most peers the autoscaler keeps (at least --autoscale-min)' },
  { flag: 'autoscale-target', arg: 'F', section: S_AUTO, read: positive(1), field: 'autoscale.targetUtilization', shown: '0.6', help: 'utilization to size for, a fraction in (0, 1]' },
  { flag: 'autoscale-exec', arg: 'CMD', section: S_AUTO, read: { kind: 'string' }, field: 'autoscale.execCommand', shown: 'none', help: 'exec: the command run with {count} replaced by the wanted peer count' },
  { flag: 'autoscale-dir', arg: 'DIR', section: S_AUTO, read: { kind: 'string' }, field: 'autoscale.dir', shown: 'DATA_DIR/autoscaled', help: 'local: where started peers keep their data' },
  { flag: 'autoscale-up-window-ms', arg: 'N', section: S_AUTO, read: int(0, 3_600_000), field: 'autoscale.scaleUpWindowMs', shown: '10000', help: 'load must call for more peers this long before it scales up' },
  { flag: 'autoscale-down-window-ms', arg: 'N', section: S_AUTO, read: int(0, 3_600_000), field: 'autoscale.scaleDownWindowMs', shown: '300000', help: 'load must allow fewer peers this long before it scales down' },
  { flag: 'autoscale-cooldown-ms', arg: 'N', section: S_AUTO, read: int(0, 3_600_000), field: 'autoscale.cooldownMs', shown: '30000', help: 'quiet time after a scaling action' },
  {
    flag: 'shards',
    arg: 'N',
    section: S_NEW,
    read: int(8, 1024),
    field: 'cluster.shardCount',
    check: (v) => ((v & (v - 1)) === 0 ? null : 'must be a power of two'),
    shown: String(DEFAULT_CLUSTER_SETTINGS.shardCount),
    help: 'number of shards, a power of two from 8 to 1024',
  },
  { flag: 'replication-factor', arg: 'N', section: S_NEW, read: int(1, 16), field: 'cluster.replicationFactor', shown: String(DEFAULT_CLUSTER_SETTINGS.replicationFactor), help: 'replicas per shard' },
  { flag: 'min-in-sync', arg: 'N', section: S_NEW, read: int(1, 16), field: 'cluster.minInSync', shown: String(DEFAULT_CLUSTER_SETTINGS.minInSync), help: 'writes are refused while fewer replicas are in sync (at most the replication factor)' },
] satisfies StartOption[]);

/** node:util parseArgs options of `shoal start` (with -h/--help). */
export function startParseOptions(): Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string }> {
  const out: Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string }> = {};
  for (const o of START_OPTIONS) {
    out[o.flag] = o.read.kind === 'boolean' ? { type: 'boolean' } : o.read.kind === 'string' && o.read.multiple === true ? { type: 'string', multiple: true } : { type: 'string' };
  }
  out.help = { type: 'boolean', short: 'h' };
  return out;
}

function describeBounds(r: Extract<Reader, { kind: 'integer' | 'number' }>): string {
  if (r.kind === 'integer') return `an integer from ${r.min} to ${r.max}`;
  if (r.minExclusive === true) return r.max === Number.MAX_SAFE_INTEGER ? 'a positive number' : `a positive number up to ${r.max}`;
  return `a number from ${r.min} to ${r.max}`;
}

function inBounds(r: Extract<Reader, { kind: 'integer' | 'number' }>, n: unknown): n is number {
  return typeof n === 'number' && Number.isFinite(n) && (r.kind !== 'integer' || Number.isInteger(n)) && (r.minExclusive === true ? n > r.min : n >= r.min) && n <= r.max;
}

/** The value of one numeric flag, or ConfigError naming it. */
function readNumber(o: StartOption, r: Extract<Reader, { kind: 'integer' | 'number' }>, text: string): number {
  const n = Number(text);
  if (text.trim() === '' || !inBounds(r, n)) {
    const word = r.kind === 'number' && r.keyword !== undefined ? `, or "${r.keyword}"` : '';
    throw new ConfigError(`--${o.flag}`, `expected ${describeBounds(r)}${word}, got ${JSON.stringify(text)}`);
  }
  const problem = o.check?.(n) ?? null;
  if (problem !== null) throw new ConfigError(`--${o.flag}`, `${problem}, got ${n}`);
  return n;
}

function setPath(target: Record<string, unknown>, path: string, value: unknown): void {
  const parts = path.split('.');
  let cur = target;
  for (const p of parts.slice(0, -1)) {
    if (typeof cur[p] !== 'object' || cur[p] === null) cur[p] = {};
    cur = cur[p] as Record<string, unknown>;
  }
  cur[parts[parts.length - 1] as string] = value;
}

function getPath(source: unknown, path: string): unknown {
  let cur = source;
  for (const p of path.split('.')) {
    if (typeof cur !== 'object' || cur === null) return undefined;
    cur = (cur as Record<string, unknown>)[p];
  }
  return cur;
}

/**
 * Parsed flag values (parseArgs' `values`) to the fields they set: PeerOptions fields and the
 * start-only extras (`stopDrainMs`). Each value is read and checked by its row; an error names
 * the flag. Cross-flag rules are checked here too. Fields of flags not given are left out.
 */
export function startOptionsFromFlags(values: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const o of START_OPTIONS) {
    const v = values[o.flag];
    if (v === undefined || o.field === undefined) continue;
    const r = o.read;
    let value: unknown;
    if (r.kind === 'boolean') {
      if (v !== true) continue;
      value = true;
    } else if (r.kind === 'string') {
      value = v;
    } else if (r.kind === 'choice') {
      if (!r.choices.includes(v as string)) throw new ConfigError(`--${o.flag}`, `expected one of ${r.choices.join(', ')}, got ${JSON.stringify(v)}`);
      value = v;
    } else {
      if (r.kind === 'number' && r.keyword !== undefined && v === r.keyword) continue;
      const n = readNumber(o, r, v as string);
      value = o.convert !== undefined ? o.convert(n) : n;
    }
    setPath(out, o.field, value);
  }
  if (values['autoscale-dry-run'] === true) setPath(out, 'autoscale.mode', 'dry-run');
  const auto = (out.autoscale ?? {}) as Record<string, unknown>;
  if (auto.mode === 'exec' && auto.execCommand === undefined) throw new ConfigError('--autoscale', 'exec needs --autoscale-exec COMMAND');
  if (typeof auto.minPeers === 'number' && typeof auto.maxPeers === 'number' && auto.maxPeers < auto.minPeers) {
    throw new ConfigError('--autoscale-max', `must be at least --autoscale-min (${auto.minPeers})`);
  }
  const cluster = (out.cluster ?? {}) as Record<string, unknown>;
  const rf = (cluster.replicationFactor as number | undefined) ?? DEFAULT_CLUSTER_SETTINGS.replicationFactor;
  if (typeof cluster.minInSync === 'number' && cluster.minInSync > rf) throw new ConfigError('--min-in-sync', `must not exceed the replication factor (${rf})`);
  if (Array.isArray(out.httpAllowedHosts)) {
    out.httpAllowedHosts = (out.httpAllowedHosts as string[]).map((h) => {
      const name = h.trim().toLowerCase();
      if (!/^[a-z0-9.-]{1,253}$/.test(name)) throw new ConfigError('--http-allowed-host', `expected a host name without port, got ${JSON.stringify(h)}`);
      return name;
    });
  }
  return out;
}

/**
 * The bounds of every row that `owns` its field, checked on a PeerOptions object (naming the
 * field): the checks validatePeerOptions needs for callers that build options in code.
 */
export function checkOwnedFields(options: object): void {
  for (const o of START_OPTIONS) {
    if (o.owns !== true || o.field === undefined) continue;
    const r = o.read;
    if (r.kind !== 'integer' && r.kind !== 'number') continue;
    const v = getPath(options, o.field);
    if (v === null && o.nullMeans !== undefined) continue;
    if (!inBounds(r, v)) throw new ConfigError(o.field, `must be ${describeBounds(r)}${o.nullMeans !== undefined ? ` (or null: ${o.nullMeans})` : ''}, got ${String(v)}`);
  }
}

function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/)) {
    if (line.length > 0 && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line.length > 0 ? `${line} ${word}` : word;
  }
  if (line.length > 0) lines.push(line);
  return lines;
}

/** The options part of `shoal start --help`, section by section. */
export function startOptionsHelp(): string {
  const col = 28;
  const out: string[] = [];
  let section: StartSection | null = null;
  for (const o of START_OPTIONS) {
    if (o.section !== section) {
      if (section !== null) out.push('');
      out.push(`${o.section}:`);
      section = o.section;
    }
    const name = `  --${o.flag}${o.arg !== undefined ? ` ${o.arg}` : ''}`;
    const body = wrap(`${o.help} (default ${o.shown})`, 96 - col);
    if (name.length + 1 > col) {
      out.push(name);
      for (const l of body) out.push(' '.repeat(col) + l);
    } else {
      out.push(name.padEnd(col) + body[0]);
      for (const l of body.slice(1)) out.push(' '.repeat(col) + l);
    }
  }
  out.push('  -h, --help                this help');
  return out.join('\n') + '\n';
}

const mdEscape = (s: string): string => s.replace(/\|/g, '\\|').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** The README's table of `shoal start` options (between the start-options markers). */
export function startOptionsMarkdown(): string {
  const rows = ['| option | default | meaning |', '| --- | --- | --- |'];
  for (const o of START_OPTIONS) {
    const name = `\`--${o.flag}${o.arg !== undefined ? ` ${o.arg}` : ''}\``;
    rows.push(`| ${mdEscape(name)} | ${mdEscape(o.shown)} | ${mdEscape(o.help)} |`);
  }
  return rows.join('\n') + '\n';
}

export const README_MARKERS = Object.freeze({ begin: '<!-- start-options: generated by `npm run docs:options`; edit node/start-options.ts -->', end: '<!-- end start-options -->' });
