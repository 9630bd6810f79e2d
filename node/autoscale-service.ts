/**
 * The autoscaler's shell (issue 11): on the coordinator, every SAMPLE_MS, a load sample (the
 * peers' CPU from their membership heartbeats, the task demand from the scheduler) goes to the
 * pure rule (protocols/scheduler/autoscaler.ts); a decision to act goes to a provider:
 *
 * - `dry-run`: only logged (and shown by `GET /v1/autoscaler`);
 * - `exec`: runs the operator's command with the desired count (`{count}` in the command, and
 *   SHOAL_DESIRED_PEERS / SHOAL_CURRENT_PEERS in its environment), bounded in time;
 * - `local`: starts `shoal start` processes on this machine joined with this peer's join token
 *   (data dirs under `--autoscale-dir`), and for a scale-down sends SIGTERM to one it started
 *   (which drains its replicas first, then leaves). It stops only peers it started.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { Autoscaler, type AutoscalerPolicy, type ScaleDecision } from '../protocols/scheduler/index.js';
import type { Coordinator } from './coordinator.js';
import type { Logger } from './log.js';
import type { MembershipService } from './membership-service.js';
import type { TaskService } from './task-service.js';

export type AutoscaleMode = 'off' | 'dry-run' | 'exec' | 'local';

export interface AutoscaleOptions {
  mode: AutoscaleMode;
  policy: Partial<AutoscalerPolicy> & Pick<AutoscalerPolicy, 'minPeers' | 'maxPeers'>;
  /** `exec`: the command (run with `sh -c`). */
  execCommand: string | null;
  /** `local`: where the started peers' data dirs go. */
  dir: string;
  /** How often a sample is taken, ms. Default 2000. */
  sampleMs: number;
}

const EXEC_TIMEOUT_MS = 300_000;
/** How long an action may take to show in the membership (peers starting, or draining then leaving), ms. */
const ACTION_SETTLE_MS = 120_000;

export class AutoscaleService {
  private readonly rule: Autoscaler;
  private timer: NodeJS.Timeout | null = null;
  private busy = false;
  private stopped = false;
  /** Peers the local provider started (oldest first). */
  private readonly started: ChildProcess[] = [];
  private seq = 0;
  private lastProvider = '';
  /** The last action's target, until the alive peers reach it (or ACTION_SETTLE_MS pass). */
  private awaiting: { desired: number; untilMs: number } | null = null;

  constructor(
    private readonly opts: AutoscaleOptions,
    private readonly deps: { coordinator: Coordinator; membership: MembershipService; tasks: TaskService; log: Logger; joinToken: () => string | null },
  ) {
    this.rule = new Autoscaler(opts.policy);
  }

  start(): void {
    if (this.opts.mode === 'off') return;
    this.timer = setInterval(() => void this.sample(), this.opts.sampleMs);
    this.timer.unref();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== null) clearInterval(this.timer);
  }

  status(): unknown {
    return {
      mode: this.opts.mode,
      policy: this.rule.policy,
      active: this.opts.mode !== 'off' && this.deps.coordinator.isLeader,
      startedPeers: this.started.filter((c) => c.exitCode === null && c.signalCode === null).map((c) => c.pid),
      lastProvider: this.lastProvider,
      decisions: this.rule.recentDecisions().slice(-30),
      /** The last decisions that acted (up or down), with their reasons. */
      actions: this.rule.recentDecisions().filter((d) => d.action !== 'none'),
    };
  }

  private async sample(): Promise<void> {
    if (this.stopped || this.busy || !this.deps.coordinator.isLeader) return;
    this.busy = true;
    try {
      const members = this.deps.membership.members().filter((m) => m.state === 'alive');
      // One action at a time: peers being started or drained still count as they were.
      const now0 = performance.now();
      if (this.awaiting !== null) {
        if (members.length !== this.awaiting.desired && now0 < this.awaiting.untilMs) return;
        this.awaiting = null;
      }
      const cores = availableParallelism();
      const cpu = members.length === 0 ? 0 : members.reduce((a, m) => a + (m.load?.cpuPercent ?? 0), 0) / members.length / (100 * cores);
      const sched = this.deps.tasks.schedulerStatus() as { queued: number; running: number; workers: Array<{ alive: boolean; freeCpu: number; running: number }> } | null;
      const slots = sched === null ? 0 : sched.workers.filter((w) => w.alive).reduce((a, w) => a + w.freeCpu, 0) + sched.running;
      const d = this.rule.observe(performance.now(), { peers: members.length, cpuUtilization: cpu, tasksDemand: sched === null ? 0 : sched.queued + sched.running, taskSlots: slots });
      if (d.action === 'none') return;
      this.deps.log.info('autoscaler decision', { ...d, mode: this.opts.mode });
      if (this.opts.mode === 'dry-run') {
        this.rule.acted(performance.now(), d.action);
        return;
      }
      await this.carryOut(d);
      this.rule.acted(performance.now(), d.action);
      this.awaiting = { desired: d.desired, untilMs: performance.now() + ACTION_SETTLE_MS };
    } catch (err) {
      this.deps.log.warn('autoscaler step failed', { err });
    } finally {
      this.busy = false;
    }
  }

  private async carryOut(d: ScaleDecision): Promise<void> {
    if (this.opts.mode === 'exec') {
      const cmd = (this.opts.execCommand ?? '').replaceAll('{count}', String(d.desired));
      const code = await new Promise<number | null>((resolve) => {
        const child = spawn('sh', ['-c', cmd], { stdio: 'ignore', env: { ...process.env, SHOAL_DESIRED_PEERS: String(d.desired), SHOAL_CURRENT_PEERS: String(d.current) } });
        const t = setTimeout(() => child.kill('SIGKILL'), EXEC_TIMEOUT_MS);
        child.on('exit', (c) => {
          clearTimeout(t);
          resolve(c);
        });
        child.on('error', () => resolve(-1));
      });
      this.lastProvider = `exec ${JSON.stringify(cmd)} exited ${code}`;
      if (code !== 0) this.deps.log.warn('autoscaler command failed', { command: cmd, exitCode: code });
      return;
    }
    // local
    if (d.action === 'up') {
      const token = this.deps.joinToken();
      const bin = fileURLToPath(new URL('../bin/shoal.js', import.meta.url));
      for (let i = d.current; i < d.desired; i++) {
        const dir = join(this.opts.dir, `auto-${process.pid}-${this.seq++}`);
        await mkdir(dir, { recursive: true });
        const args = [bin, 'start', '--data-dir', dir, '--listen', '/ip4/127.0.0.1/tcp/0', '--http', '127.0.0.1:0', '--log-level', 'warn'];
        if (token !== null) args.push('--join', token);
        if (token !== null && !token.startsWith('SHOAL-')) args.push('--insecure');
        const child = spawn(process.execPath, args, { stdio: 'ignore', detached: false });
        this.started.push(child);
      }
      this.lastProvider = `local: started ${d.desired - d.current} peers`;
      return;
    }
    let stopped = 0;
    for (let i = this.started.length - 1; i >= 0 && stopped < d.current - d.desired; i--) {
      const c = this.started[i]!;
      if (c.exitCode !== null || c.signalCode !== null) continue;
      c.kill('SIGTERM'); // drains its replicas first, then leaves
      stopped++;
    }
    this.lastProvider = `local: asked ${stopped} started peers to leave${stopped < d.current - d.desired ? ' (it stops only peers it started)' : ''}`;
  }
}
