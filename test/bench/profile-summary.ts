// node dist/test/bench/profile-summary.js DIR [--top N]
// Sums the self time of every .cpuprofile in DIR (written by NODE_OPTIONS=--cpu-prof) by
// component (where the code lives) and by function, and prints the shares: where a run's CPU
// went. Not a test.
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** A readable component for a script URL. */
function component(url: string, fn: string): string {
  if (url === '') return fn === '(garbage collector)' ? 'GC' : fn === '(idle)' || fn === '(program)' ? fn : `native ${fn}`;
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (m !== null) {
    const pkg = m[1]!;
    if (/noise|chacha|poly1305|as-sha256|curve|noble/.test(pkg)) return `crypto/noise (${pkg})`;
    if (/yamux|mplex|it-|uint8arraylist|multiformats|libp2p|length-prefixed|protons|race-signal|p-queue/.test(pkg)) return `libp2p streams (${pkg})`;
    if (/level/.test(pkg)) return `leveldb (${pkg})`;
    return pkg;
  }
  if (url.startsWith('node:')) return url;
  const d = /dist\/(.+)$/.exec(url);
  return d !== null ? d[1]! : url;
}

async function main(): Promise<void> {
  const dir = process.argv[2];
  const topIdx = process.argv.indexOf('--top');
  const top = topIdx > 0 ? Number(process.argv[topIdx + 1]) : 25;
  if (dir === undefined) {
    process.stderr.write('usage: profile-summary DIR [--top N]\n');
    process.exit(2);
  }
  const byComponent = new Map<string, number>();
  const byFunction = new Map<string, number>();
  let total = 0;
  for (const f of (await readdir(dir)).filter((x) => x.endsWith('.cpuprofile'))) {
    const p = JSON.parse(await readFile(join(dir, f), 'utf8')) as Profile;
    const nodes = new Map(p.nodes.map((n) => [n.id, n]));
    for (let i = 0; i < p.samples.length; i++) {
      const n = nodes.get(p.samples[i]!)!;
      const us = p.timeDeltas[i] ?? 0;
      const fn = n.callFrame.functionName || '(anonymous)';
      if (fn === '(idle)') continue;
      total += us;
      const c = component(n.callFrame.url, fn);
      byComponent.set(c, (byComponent.get(c) ?? 0) + us);
      const key = `${fn} ${c}:${n.callFrame.lineNumber + 1}`;
      byFunction.set(key, (byFunction.get(key) ?? 0) + us);
    }
  }
  const show = (m: Map<string, number>, n: number): string =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([k, v]) => `  ${((v / total) * 100).toFixed(1).padStart(5)} %  ${(v / 1e6).toFixed(1).padStart(7)} s  ${k}`)
      .join('\n');
  process.stdout.write(`busy CPU in all profiles: ${(total / 1e6).toFixed(1)} s\nby component:\n${show(byComponent, top)}\nby function:\n${show(byFunction, top)}\n`);
}

void main();
