import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { PeerStatus } from '../../node/peer.js';

const here = dirname(fileURLToPath(import.meta.url));
/** The compiled CLI (dist/bin/shoal.js). */
export const SHOAL_BIN = join(here, '..', '..', 'bin', 'shoal.js');

export async function makeTempDir(prefix = 'shoal-it-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true, maxRetries: 3 });
}

/**
 * Poll `check` until it returns a truthy value or `timeoutMs` passes; the
 * failure names `what` and the last value seen. Bounded in time and count.
 */
export async function waitFor<T>(
  what: string,
  check: () => T | Promise<T>,
  { timeoutMs = 15_000, intervalMs = 50 }: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  const maxPolls = Math.ceil(timeoutMs / intervalMs) + 1;
  let last: unknown;
  let lastError: unknown;
  for (let i = 0; i < maxPolls && Date.now() <= deadline; i++) {
    try {
      last = await check();
      if (last) return last as NonNullable<T>;
    } catch (err) {
      lastError = err;
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  const detail = lastError !== undefined ? `; last error: ${(lastError as Error).message}` : `; last value: ${JSON.stringify(last)}`;
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail}`);
}

export async function getStatus(httpAddress: string, timeoutMs = 2000): Promise<PeerStatus> {
  const res = await fetch(`http://${httpAddress}/v1/status`, { signal: AbortSignal.timeout(timeoutMs) });
  if (!res.ok) throw new Error(`status ${res.status}`);
  return (await res.json()) as PeerStatus;
}

/** The state `observer` shows for `peerId`, or undefined if it does not know it. */
export function stateOf(status: PeerStatus, peerId: string): string | undefined {
  return status.members.find((m) => m.peerId === peerId)?.state;
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Run the CLI to completion (bounded by timeoutMs, then SIGKILL). */
export function runCli(args: string[], { timeoutMs = 15_000, cwd }: { timeoutMs?: number; cwd?: string } = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [SHOAL_BIN, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** A `shoal start` child process. */
export class ProcessPeer {
  peerId = '';
  joinAddr = '';
  /** The join token the peer printed (SHOAL-1-...), or '' when it runs with --insecure. */
  joinToken = '';
  httpAddress = '';
  stdout = '';
  stderr = '';
  private exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  private constructor(readonly child: ChildProcess, readonly dataDir: string) {
    this.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    child.stdout?.on('data', (d: Buffer) => (this.stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (this.stderr = (this.stderr + d.toString()).slice(-200_000)));
  }

  /** Spawn a peer on a free TCP port and a free HTTP port; resolves once it printed its addresses. */
  static async start(dataDir: string, { join: joinAddrs = [], extraArgs = [] }: { join?: string[]; extraArgs?: string[] } = {}): Promise<ProcessPeer> {
    const args = [SHOAL_BIN, 'start', '--data-dir', dataDir, '--listen', '/ip4/127.0.0.1/tcp/0', '--http', '127.0.0.1:0', '--log-level', 'warn'];
    for (const j of joinAddrs) args.push('--join', j);
    args.push(...extraArgs);
    // SHOAL_PEER_NODE_ARGS: node flags for the peers (for example `--cpu-prof --cpu-prof-dir=D`
    // for the benches' profiles; Node 20 refuses --cpu-prof in NODE_OPTIONS).
    const nodeArgs = (process.env.SHOAL_PEER_NODE_ARGS ?? '').split(' ').filter((a) => a.length > 0);
    const child = spawn(process.execPath, [...nodeArgs, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const peer = new ProcessPeer(child, dataDir);
    let exitedEarly = false;
    void peer.exited.then(() => (exitedEarly = true));
    await waitFor(
      'the peer to print its addresses',
      () => {
        if (exitedEarly) throw new Error(`peer exited early: ${peer.stderr}`);
        return /(join token|insecure): \S+/.test(peer.stdout);
      },
      { timeoutMs: 20_000 },
    );
    peer.peerId = /shoal peer (\S+)/.exec(peer.stdout)?.[1] ?? '';
    peer.joinAddr = /join with: (\S+)/.exec(peer.stdout)?.[1] ?? '';
    peer.httpAddress = /http: (\S+)/.exec(peer.stdout)?.[1] ?? '';
    peer.joinToken = /join token: (\S+)/.exec(peer.stdout)?.[1] ?? '';
    return peer;
  }

  /** What another peer joins this one by: its token, or its address when it runs with --insecure. */
  get joinRef(): string {
    return this.joinToken !== '' ? this.joinToken : this.joinAddr;
  }

  status(): Promise<PeerStatus> {
    return getStatus(this.httpAddress);
  }

  signal(sig: NodeJS.Signals): void {
    this.child.kill(sig);
  }

  /** Wait for exit, SIGKILLing after timeoutMs. */
  async waitExit(timeoutMs = 15_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Make sure it is gone (used in after hooks): SIGCONT in case it is frozen, then SIGKILL. */
  async destroy(): Promise<void> {
    if (!this.running) return;
    this.child.kill('SIGCONT');
    this.child.kill('SIGKILL');
    await this.waitExit(5000);
  }
}
