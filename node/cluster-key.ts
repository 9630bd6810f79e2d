/**
 * Which private-network key a starting peer uses (issue 9, "secure by default", DESIGN §4a).
 *
 * A cluster is secured by default: its first peer generates a 32-byte libp2p private-network
 * (pnet) key and keeps it in `<data dir>/cluster.key` (mode 0600, the `shoal keygen` format).
 * Peers without the key cannot even finish a connection handshake with the cluster. Every peer
 * keeps the key in its own data dir, so a restart needs no flags, and prints a join token that
 * carries the key and its addresses. `--insecure` runs an open network (today's behaviour before
 * issue 9); it is refused when the data dir holds a key, and keys are refused with it.
 *
 * The rules, in order:
 *  1. Keys named by flags (join tokens, `--swarm-key`) must all be the same key.
 *  2. `--insecure` with a key from a flag or from the data dir is an error.
 *  3. A key in the data dir wins; a flag naming another key is an error (wrong cluster).
 *  4. A key from a flag is copied into the data dir.
 *  5. No key anywhere: a data dir that already holds data is refused (it ran insecure or with
 *     an older shoal); a joiner is refused (it could never connect); a new cluster generates one.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError } from '../protocols/errors.js';
import { PeerStartError } from './errors.js';
import { decodeJoinToken, encodeJoinToken, looksLikeJoinToken } from './join-token.js';
import { SWARM_KEY_HEADER as HEADER, validateSwarmKey } from './swarm-key.js';

export const CLUSTER_KEY_FILE = 'cluster.key';
export const JOIN_TOKEN_FILE = 'join-token';

export type KeySource = 'insecure' | 'data-dir' | 'join-token' | 'swarm-key-file' | 'generated';

export interface ClusterKeyPlan {
  /** The pnet key file contents libp2p takes, or null for an open network (--insecure). */
  swarmKey: Uint8Array | null;
  /** The key as 64 hex digits, or null. */
  keyHex: string | null;
  source: KeySource;
  /** Multiaddrs to dial: the plain `--join` addresses plus the addresses inside join tokens. */
  joinAddrs: string[];
}

export interface ClusterKeyInputs {
  dataDir: string;
  /** `--join` values: multiaddrs or join tokens. */
  join: string[];
  swarmKeyFile: string | null;
  insecure: boolean;
  /** Whether the data dir held a database before this start. */
  hadData: boolean;
}

function hexOfSwarmKey(bytes: Uint8Array): string {
  return new TextDecoder().decode(bytes).slice(HEADER.length);
}

export function swarmKeyOfHex(hex: string): Uint8Array {
  return new TextEncoder().encode(HEADER + hex);
}

async function readKeyFile(path: string, what: string): Promise<string | null> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' && what === 'data-dir') return null;
    throw new PeerStartError(what === 'data-dir' ? 'CLUSTER_KEY' : 'SWARM_KEY', `cannot read ${path}: ${(err as Error).message}`);
  }
  return hexOfSwarmKey(validateSwarmKey(bytes, path));
}

/** Write `text` to `path` with mode 0600 and fsync it. */
export async function writeSecretFile(path: string, text: string): Promise<void> {
  const fh = await open(path, 'w', 0o600);
  try {
    await fh.writeFile(text);
    await fh.chmod(0o600);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Decide the key (see the module comment); writes `<data dir>/cluster.key` when it adopts or generates one. */
export async function resolveClusterKey(inp: ClusterKeyInputs): Promise<ClusterKeyPlan> {
  const joinAddrs: string[] = [];
  const flagKeys = new Map<string, string>(); // hex -> where it came from
  for (const j of inp.join) {
    if (looksLikeJoinToken(j)) {
      const t = decodeJoinToken(j, '--join');
      joinAddrs.push(...t.addrs);
      flagKeys.set(t.keyHex, 'a join token');
    } else {
      joinAddrs.push(j);
    }
  }
  if (inp.swarmKeyFile !== null) {
    const hex = (await readKeyFile(inp.swarmKeyFile, 'swarm-key')) as string;
    if (flagKeys.size > 0 && !flagKeys.has(hex)) {
      throw new ConfigError('swarmKeyFile', `${inp.swarmKeyFile} and the join token name different clusters`);
    }
    flagKeys.set(hex, inp.swarmKeyFile);
  }
  if (flagKeys.size > 1) throw new ConfigError('join', 'the join tokens name different clusters (their keys differ)');
  const uniqueJoin = [...new Set(joinAddrs)];
  const keyPath = join(inp.dataDir, CLUSTER_KEY_FILE);

  if (inp.insecure && flagKeys.size > 0) {
    throw new ConfigError('insecure', '--insecure runs an open network; it cannot be combined with a join token or --swarm-key');
  }
  const dataKey = await readKeyFile(keyPath, 'data-dir');
  if (inp.insecure) {
    if (dataKey !== null) {
      throw new PeerStartError('CLUSTER_KEY', `${keyPath} exists: this peer belongs to a secured cluster; start it without --insecure`);
    }
    return { swarmKey: null, keyHex: null, source: 'insecure', joinAddrs: uniqueJoin };
  }
  const flagKey = flagKeys.size === 1 ? ([...flagKeys.keys()][0] as string) : null;
  if (dataKey !== null) {
    if (flagKey !== null && flagKey !== dataKey) {
      throw new PeerStartError(
        'CLUSTER_KEY',
        `${keyPath} holds the key of another cluster than ${flagKeys.get(flagKey)}; use a fresh --data-dir to join that cluster`,
      );
    }
    return { swarmKey: swarmKeyOfHex(dataKey), keyHex: dataKey, source: 'data-dir', joinAddrs: uniqueJoin };
  }
  if (flagKey !== null) {
    await mkdir(inp.dataDir, { recursive: true, mode: 0o700 });
    await writeSecretFile(keyPath, HEADER + flagKey);
    return {
      swarmKey: swarmKeyOfHex(flagKey),
      keyHex: flagKey,
      source: inp.swarmKeyFile !== null ? 'swarm-key-file' : 'join-token',
      joinAddrs: uniqueJoin,
    };
  }
  if (inp.hadData) {
    throw new PeerStartError(
      'CLUSTER_KEY',
      `${inp.dataDir} holds data but no cluster key (it ran with --insecure or an older shoal): start it with --insecure, ` +
        'or give its cluster key with --join TOKEN or --swarm-key FILE',
    );
  }
  if (uniqueJoin.length > 0) {
    throw new ConfigError(
      'join',
      'joining a cluster needs its key: pass the join token a member printed (--join SHOAL-1-...; ' +
        "'shoal token --data-dir DIR' prints it again) or --swarm-key FILE; a cluster started with --insecure is joined with --insecure",
    );
  }
  const hex = randomBytes(32).toString('hex');
  await mkdir(inp.dataDir, { recursive: true, mode: 0o700 });
  await writeSecretFile(keyPath, HEADER + hex);
  return { swarmKey: swarmKeyOfHex(hex), keyHex: hex, source: 'generated', joinAddrs: uniqueJoin };
}

/** The token this peer prints, and keeps in `<data dir>/join-token` for `shoal token`. */
export async function publishJoinToken(dataDir: string, keyHex: string, addrs: string[]): Promise<string> {
  const token = encodeJoinToken({ keyHex, addrs: addrs.slice(0, 16) });
  await writeSecretFile(join(dataDir, JOIN_TOKEN_FILE), token + '\n');
  return token;
}
