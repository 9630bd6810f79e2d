// npm test: the whole suite in two mocha processes side by side, to fit its time budget on two
// cores. Group "process" holds the tests that start separate shoal processes (they mostly wait
// on timers and sockets); group "local" the unit tests, the simulations and the tests whose peers
// run inside the test process. Options come from .mocharc.json (one source); each group's output
// is printed whole when it ends (the process group's as it goes), then one closing line
// "N passed, N failed" for both. Exit code: non-zero when either group fails.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const rc = JSON.parse(readFileSync(join(root, '.mocharc.json'), 'utf8'));
const list = (dir) =>
  readdirSync(join(root, dir))
    .filter((f) => f.endsWith('.test.js'))
    .sort()
    .map((f) => join(dir, f));
const integration = list('dist/test/integration');
const isProcess = (f) => /-process\.test\.js$/.test(f);
// The browser test runs last in its group: on a fresh CI machine Chromium is still being
// installed while the others run (.ci/run; the test waits for the install, bounded).
const needsBrowser = (f) => /dashboard-process\.test\.js$/.test(f);
const groups = [
  { name: 'process', files: [...integration.filter((f) => isProcess(f) && !needsBrowser(f)), ...integration.filter(needsBrowser)], live: true },
  { name: 'local', files: [...list('dist/test/unit'), ...list('dist/test/sim'), ...integration.filter((f) => !isProcess(f))], live: false },
];
const covered = new Set(groups.flatMap((g) => g.files));
if (covered.size === 0) {
  process.stderr.write('no test files under dist/test: run npm run build first\n');
  process.exit(2);
}

const statsDir = mkdtempSync(join(tmpdir(), 'shoal-suite-'));
const args = (files) => [
  'node_modules/mocha/bin/mocha.js',
  '--no-config',
  ...rc.require.flatMap((r) => ['--require', r]),
  '--timeout',
  String(rc.timeout),
  ...(rc.exit ? ['--exit'] : []),
  '--reporter',
  rc.reporter,
  ...files,
];
const started = Date.now();
const results = await Promise.all(
  groups.map(
    (g) =>
      new Promise((resolve) => {
        const statsFile = join(statsDir, `${g.name}.json`);
        const child = spawn(process.execPath, args(g.files), { cwd: root, env: { ...process.env, SHOAL_STATS_FILE: statsFile }, stdio: ['ignore', 'pipe', 'pipe'] });
        const chunks = [];
        const out = (c) => (g.live ? process.stdout.write(c) : chunks.push(c));
        child.stdout.on('data', out);
        child.stderr.on('data', (c) => (g.live ? process.stderr.write(c) : chunks.push(c)));
        child.on('close', (code, signal) => {
          if (!g.live) process.stdout.write(`\n===== group "${g.name}" (${g.files.length} files) =====\n${Buffer.concat(chunks).toString()}`);
          let stats = null;
          try {
            stats = JSON.parse(readFileSync(statsFile, 'utf8'));
          } catch {
            // the group died before its end
          }
          const secs = ((Date.now() - started) / 1000).toFixed(0);
          process.stdout.write(`===== group "${g.name}" ended after ${secs} s: exit ${code ?? signal}${stats ? `, ${stats.passes} passed, ${stats.failures} failed` : ', no result'} =====\n`);
          resolve({ code, stats });
        });
      }),
  ),
);
rmSync(statsDir, { recursive: true, force: true });
const sum = (k) => results.reduce((a, r) => a + (r.stats?.[k] ?? 0), 0);
const pending = sum('pending');
const failed = sum('failures') + results.filter((r) => r.stats === null).length;
process.stdout.write(`${sum('passes')} passed, ${failed} failed${pending > 0 ? `, ${pending} skipped` : ''}\n`);
process.exit(results.every((r) => r.code === 0 && r.stats !== null) ? 0 : 1);
