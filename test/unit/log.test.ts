import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createLogger, LOG_LEVELS, type LogLevel } from '../../node/log.js';

/** A logger at `level` whose lines are collected, parsed (JSON.parse throws on a bad line). */
function capture(level: LogLevel, base: Record<string, unknown> = {}) {
  const raw: string[] = [];
  const log = createLogger(level, base, (line) => raw.push(line));
  const records = (): Array<Record<string, unknown>> => raw.map((l) => JSON.parse(l) as Record<string, unknown>);
  return { log, raw, records };
}

class StoreFullError extends Error {
  override readonly name = 'StoreFullError';
}

describe('logger', () => {
  it('writes one JSON object a line with an ISO time, the level label, the base fields, msg and fields', () => {
    const { log, raw, records } = capture('debug', { peer: '12D3KooWpeer' });
    log.debug('d', { n: 1 });
    log.info('i');
    log.warn('w', { shard: 3, addrs: ['/ip4/127.0.0.1/tcp/1'] });
    log.error('e');
    assert.equal(raw.length, 4);
    for (const line of raw) assert.ok(!line.includes('\n'), `one line each: ${line}`);
    const rs = records();
    assert.deepEqual(
      rs.map((r) => r.level),
      ['debug', 'info', 'warn', 'error'],
    );
    for (const r of rs) {
      assert.equal(r.peer, '12D3KooWpeer');
      assert.equal(typeof r.time, 'string');
      assert.equal(new Date(r.time as string).toISOString(), r.time, 'time is ISO 8601');
      assert.ok(!('pid' in r) && !('hostname' in r), 'no pino defaults beyond what we asked for');
    }
    assert.deepEqual(
      rs.map((r) => r.msg),
      ['d', 'i', 'w', 'e'],
    );
    assert.equal(rs[0]?.n, 1);
    assert.equal(rs[2]?.shard, 3);
    assert.deepEqual(rs[2]?.addrs, ['/ip4/127.0.0.1/tcp/1']);
  });

  it('gives a child its component and the parent fields, and a later value for a key replaces the earlier once', () => {
    const { log, raw, records } = capture('info', { peer: 'p1' });
    const store = log.child({ component: 'store' });
    store.info('opened', { shard: 7 });
    store.child({ component: 'rpc', protocol: '/shoal/store/1.0.0' }).warn('reset');
    store.info('from a field', { component: 'other' });
    log.info('no component');
    const [a, b, c, d] = records();
    assert.deepEqual({ peer: a?.peer, component: a?.component, shard: a?.shard }, { peer: 'p1', component: 'store', shard: 7 });
    assert.deepEqual({ peer: b?.peer, component: b?.component, protocol: b?.protocol }, { peer: 'p1', component: 'rpc', protocol: '/shoal/store/1.0.0' });
    assert.equal(c?.component, 'other');
    assert.equal(d?.component, undefined);
    for (const line of raw) assert.equal(line.split('"component"').length - 1 <= 1, true, `a key written twice: ${line}`);
  });

  it('hides lines below the level and writes nothing at silent', () => {
    const info = capture('info');
    info.log.debug('hidden');
    info.log.child({ component: 'x' }).debug('hidden too');
    info.log.info('shown');
    assert.deepEqual(
      info.records().map((r) => r.msg),
      ['shown'],
    );

    const error = capture('error');
    error.log.warn('hidden');
    error.log.error('shown');
    assert.deepEqual(
      error.records().map((r) => r.level),
      ['error'],
    );

    const silent = capture('silent');
    for (const lvl of ['debug', 'info', 'warn', 'error'] as const) {
      silent.log[lvl]('nothing', { lvl });
      silent.log.child({ component: 'c' })[lvl]('nothing');
    }
    assert.equal(silent.raw.length, 0);
    assert.deepEqual(LOG_LEVELS, ['debug', 'info', 'warn', 'error', 'silent']);
  });

  it('writes an Error in the fields with its name and message, wherever it is, never as {}', () => {
    const { log, records } = capture('info');
    const cause = new Error('disk gone');
    log.error('store operation failed', { err: new StoreFullError('no room', { cause }) });
    log.warn('other key', { failure: new TypeError('bad type'), nested: { list: [new RangeError('too far')] } });
    log.child({ component: 'c' }).warn('in a child', { err: new Error('child err') });
    const [a, b, c] = records();
    const err = a?.err as Record<string, unknown>;
    assert.equal(err.name, 'StoreFullError');
    assert.equal(err.message, 'no room');
    assert.match(String(err.stack), /no room/);
    assert.deepEqual({ name: (err.cause as Record<string, unknown>).name, message: (err.cause as Record<string, unknown>).message }, { name: 'Error', message: 'disk gone' });
    assert.equal((b?.failure as Record<string, unknown>).message, 'bad type');
    assert.equal((b?.failure as Record<string, unknown>).name, 'TypeError');
    const inList = ((b?.nested as Record<string, unknown>).list as Array<Record<string, unknown>>)[0];
    assert.equal(inList?.message, 'too far');
    assert.equal((c?.err as Record<string, unknown>).message, 'child err');
  });

  it('by default writes to stderr before process.exit can lose the line', () => {
    const logModule = new URL('../../node/log.js', import.meta.url).href;
    const script = `
      const { createLogger } = await import(${JSON.stringify(logModule)});
      const log = createLogger('info', { peer: 'p' }).child({ component: 'exit-test' });
      for (let i = 0; i < 200; i++) log.info('line', { i, pad: 'x'.repeat(500) });
      log.error('last words', { err: new Error('fatal') });
      process.exit(3);
    `;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 3, r.stderr);
    assert.equal(r.stdout, '', 'nothing on stdout');
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 201);
    const last = JSON.parse(lines[200] ?? '') as Record<string, unknown>;
    assert.deepEqual([last.level, last.msg, last.component, last.peer], ['error', 'last words', 'exit-test', 'p']);
    assert.equal((last.err as Record<string, unknown>).message, 'fatal');
  });
});
