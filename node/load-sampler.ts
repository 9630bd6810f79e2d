import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import type { LoadSample } from '../protocols/membership/types.js';

/** Samples this process's load for heartbeats: event-loop delay, RSS and CPU since the previous sample. */
export class LoadSampler {
  private readonly histogram: IntervalHistogram;
  private lastCpu = process.cpuUsage();
  private lastWallMs = performance.now();

  constructor() {
    this.histogram = monitorEventLoopDelay({ resolution: 20 });
    this.histogram.enable();
  }

  sample(): LoadSample {
    const now = performance.now();
    const cpu = process.cpuUsage(this.lastCpu);
    const wallMs = Math.max(1, now - this.lastWallMs);
    const cpuPercent = ((cpu.user + cpu.system) / 1000 / wallMs) * 100;
    const meanNs = this.histogram.mean;
    this.histogram.reset();
    this.lastCpu = process.cpuUsage();
    this.lastWallMs = now;
    return {
      eventLoopDelayMs: Number.isFinite(meanNs) ? round2(meanNs / 1e6) : 0,
      rssBytes: process.memoryUsage.rss(),
      cpuPercent: round2(Math.max(0, cpuPercent)),
    };
  }

  stop(): void {
    this.histogram.disable();
  }
}

function round2(x: number): number {
  return Math.round(x * 100) / 100;
}
