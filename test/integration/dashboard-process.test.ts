/**
 * The web dashboard (issue 13) in a real headless browser: Debian's Chromium driven by
 * playwright-core, started by the test itself. Without a browser (no /usr/bin/chromium and no
 * SHOAL_CHROMIUM) the suite is skipped with a message saying how to get one; `.ci/run` installs it.
 *
 * 1. A peer with --http-token-file: the page loads without the token, asks for it, refuses a
 *    wrong one, and shows the peer once given the right one (also through `#token=`).
 * 2. Three `shoal` processes: the page shows every member alive; a 4th peer joins a cluster
 *    holding data (moves throttled to 1 MB/s per sender) and the page shows its moves in
 *    progress; a peer frozen with SIGSTOP turns `dead` on the page. Screenshots are written to
 *    test-artifacts/ (SHOAL_TEST_ARTIFACTS to change it).
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Browser, Page } from 'playwright-core';
import { loadLargeValues } from './bulk-load.js';
import { ProcessPeer, makeTempDir, removeDir, waitFor } from './harness.js';
import { Cluster } from './process-cluster.js';

const here = fileURLToPath(new URL('.', import.meta.url));
const ARTIFACTS = resolve(process.env.SHOAL_TEST_ARTIFACTS ?? join(here, '..', '..', '..', 'test-artifacts'));
const CHROMIUM = process.env.SHOAL_CHROMIUM ?? '/usr/bin/chromium';

/** Flags for Chromium on a machine with no network beyond 127.0.0.1 (no background fetches). */
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** The page's member rows: peer id → state shown. */
async function shownStates(page: Page): Promise<Map<string, string>> {
  const rows = await page.$$eval('#members tbody tr', (trs) => trs.map((tr) => [tr.getAttribute('data-peer') ?? '', tr.getAttribute('data-state') ?? '']));
  return new Map(rows as Array<[string, string]>);
}

/** Poll the page (it redraws every second) until `check` holds; bounded. */
async function waitOnPage<T>(what: string, page: Page, check: () => Promise<T>, timeoutMs: number): Promise<NonNullable<T>> {
  return waitFor(what, check, { timeoutMs, intervalMs: 250 }).catch(async (err: Error) => {
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-failure.png'), fullPage: true }).catch(() => undefined);
    throw err;
  });
}

describe('dashboard: a real browser shows the cluster', function () {
  this.timeout(240_000);
  let browser: Browser | null = null;
  const consoleErrors: string[] = [];

  before(async function () {
    // .ci/run installs Chromium in the background while the suite runs and names the file it
    // touches when done: wait for it (bounded) before looking for the browser.
    const installDone = process.env.SHOAL_CHROMIUM_INSTALL_DONE;
    if (installDone !== undefined && installDone !== '' && !existsSync(installDone)) {
      this.timeout(420_000);
      console.log(`      waiting for the Chromium install to finish (${installDone})`);
      await waitFor('the Chromium install to finish', () => existsSync(installDone), { timeoutMs: 400_000, intervalMs: 1000 }).catch(() => undefined);
    }
    if (!existsSync(CHROMIUM)) {
      console.log(`      skipped: no Chromium at ${CHROMIUM} (apt-get install chromium, or set SHOAL_CHROMIUM to a Chromium binary)`);
      this.skip();
    }
    await mkdir(ARTIFACTS, { recursive: true });
    const { chromium } = await import('playwright-core');
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 60_000 });
  });
  after(async () => {
    await browser?.close();
  });

  async function open(url: string): Promise<Page> {
    const page = await (browser as Browser).newPage({ viewport: { width: 1400, height: 900 } });
    page.on('console', (m) => {
      if (m.type() === 'error') consoleErrors.push(m.text());
    });
    page.on('pageerror', (e) => consoleErrors.push(e.message));
    await page.goto(url, { waitUntil: 'load', timeout: 30_000 });
    return page;
  }

  it('with --http-token-file: the page loads without the token, asks for it, and shows the peer once given', async () => {
    const dir = await makeTempDir('shoal-dash-token-');
    let peer: ProcessPeer | null = null;
    try {
      const tokenFile = join(dir, 'http.token');
      const token = 'dashboard-token-0123456789';
      await writeFile(tokenFile, token + '\n', { mode: 0o600 });
      peer = await ProcessPeer.start(join(dir, 'p'), { extraArgs: ['--http-token-file', tokenFile, '--replication-factor', '1', '--min-in-sync', '1', '--shards', '8'] });
      const base = `http://${peer.httpAddress}`;
      assert.equal((await fetch(`${base}/`)).status, 200, 'the page itself needs no token');
      assert.equal((await fetch(`${base}/v1/dashboard`)).status, 401, 'its data does');
      const page = await open(`${base}/`);
      await page.waitForSelector('#login:not([hidden])', { timeout: 15_000 });
      await page.fill('#token', 'a-wrong-token-0123456789');
      await page.click('#login button');
      await waitOnPage('the page to say the wrong token was refused', page, async () => ((await page.textContent('#login-error')) ?? '').includes('refused'), 15_000);
      await page.fill('#token', token);
      await page.click('#login button');
      const me = peer.peerId;
      await waitOnPage('the page to show the peer after the token', page, async () => (await shownStates(page)).get(me) === 'alive', 20_000);
      assert.equal(await page.isHidden('#login'), true);
      // The token in the fragment (never sent to the server) works too, and leaves the address bar.
      const again = await open(`${base}/#token=${encodeURIComponent(token)}`);
      await waitOnPage('the page opened with #token= to show the peer', again, async () => (await shownStates(again)).get(me) === 'alive', 20_000);
      assert.equal(new URL(again.url()).hash, '', 'the token is taken out of the address bar');
      await page.close();
      await again.close();
    } finally {
      if (peer !== null) {
        peer.signal('SIGKILL');
        await peer.waitExit().catch(() => undefined);
      }
      await removeDir(dir);
    }
  });

  it('shows every member of 3 peers, a move in progress after a join, and a peer turning dead after SIGSTOP', async () => {
    const c = await Cluster.create(['--shards', '8', '--log-retain-groups', '2', '--rebalance-rate', '1']);
    let frozen: ProcessPeer | null = null;
    consoleErrors.length = 0; // the token test's 401s are expected there
    try {
      await c.startPeers(3);
      await c.waitSettled('3 peers', 90_000);
      const [p0, p1] = c.peers as [ProcessPeer, ProcessPeer, ProcessPeer];
      const page = await open(`http://${p0.httpAddress}/`);
      await waitOnPage(
        'the page to show all 3 members alive',
        page,
        async () => {
          const s = await shownStates(page);
          return c.peers.every((p) => s.get(p.peerId) === 'alive') && s.size === 3;
        },
        20_000,
      );
      assert.equal(await page.locator('#ring path[data-shard]').count(), 8, 'the ring has one segment per shard');
      // Writable counts move with lease renewals on a loaded machine: the page follows them.
      await waitOnPage('the page to show 8 of 8 shards writable', page, async () => (await page.textContent('#card-writable')) === '8 / 8', 20_000);

      // Data to move: 16 MiB in 256 KiB values, about 2 MiB per shard; a joining peer gets
      // most shards, each sender at 1 MB/s after a 1 MiB burst, so its moves last seconds.
      const load = await loadLargeValues({
        targets: c.peers.map((p) => p.httpAddress),
        totalBytes: 16 * 1024 * 1024,
        valueBytes: 256 * 1024,
        clients: 4,
        keyPrefix: 'dash-',
        requestTimeoutMs: 10_000,
        maxAttemptsPerKey: 5,
        deadlineMs: 60_000,
      });
      assert.deepEqual(load.abandoned, [], 'every value stored');
      const joiner = await ProcessPeer.start(join(c.dir, 'p3'), { join: [p0.joinRef], extraArgs: c.extraArgs });
      c.peers.push(joiner);
      const moving = await waitOnPage(
        'the page to show a move to the joining peer with its progress',
        page,
        async () => {
          const moves = await page.$$eval('#moves [data-move]', (els) => els.map((e) => ({ to: e.getAttribute('data-to'), text: e.textContent ?? '' })));
          const mine = moves.filter((m) => m.to === joiner.peerId);
          return mine.length > 0 && mine.some((m) => /snapshot|catch-up|catching up/.test(m.text)) ? mine : null;
        },
        60_000,
      );
      assert.ok(Number(await page.textContent('#card-moves')) >= 1, 'the moves card counts them');
      await page.screenshot({ path: join(ARTIFACTS, 'dashboard-move.png'), fullPage: true });
      console.log(`      a move on the page: ${moving[0]?.text.replace(/\s+/g, ' ').trim()}`);
      await waitOnPage('the page to show the 4th member', page, async () => (await shownStates(page)).get(joiner.peerId) === 'alive', 30_000);

      // Freeze p1 (not the peer whose page we read): the page shows it dead.
      frozen = p1;
      p1.signal('SIGSTOP');
      await waitOnPage('the page to show the frozen peer dead', page, async () => (await shownStates(page)).get(p1.peerId) === 'dead', 90_000);
      const others = await shownStates(page);
      assert.equal(others.get(p0.peerId), 'alive');
      await page.screenshot({ path: join(ARTIFACTS, 'dashboard-dead.png'), fullPage: true });
      await page.close();
      assert.deepEqual(consoleErrors, [], 'no errors in the page (CSP violations, exceptions)');
    } finally {
      frozen?.signal('SIGCONT');
      await c.destroy();
    }
  });
});
