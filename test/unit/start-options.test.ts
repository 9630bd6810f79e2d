import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { withOptionsTable } from '../../bin/options-doc.js';
import { DEFAULT_PEER_OPTIONS, validatePeerOptions } from '../../node/config.js';
import { START_OPTIONS, startOptionsFromFlags, startOptionsHelp, startParseOptions } from '../../node/start-options.js';
import { DEFAULT_CLUSTER_SETTINGS } from '../../protocols/cluster-map/commands.js';
import { DEFAULT_MEMBERSHIP_CONFIG } from '../../protocols/membership/config.js';
import { DEFAULT_RAFT_CONFIG } from '../../protocols/raft/config.js';
import { DEFAULT_AUTOSCALER_POLICY } from '../../protocols/scheduler/autoscaler.js';

const README = join(fileURLToPath(new URL('.', import.meta.url)), '..', '..', '..', 'README.md');

function configErrorOf(fn: () => unknown): Error & { field: string } {
  try {
    fn();
  } catch (err) {
    assert.equal((err as Error).name, 'ConfigError', String(err));
    return err as Error & { field: string };
  }
  assert.fail('expected a ConfigError');
}

describe('shoal start options (one table: parser, help, README, validation)', () => {
  it('the README table is the one the table generates (npm run docs:options)', () => {
    const readme = readFileSync(README, 'utf8');
    assert.equal(withOptionsTable(readme), readme, 'README.md is out of date: run npm run docs:options');
  });

  it('every flag is parsed, in the help, and shown with the default the peer really uses', () => {
    const parse = startParseOptions();
    const help = startOptionsHelp();
    const actual: Record<string, unknown> = {
      ...DEFAULT_PEER_OPTIONS,
      membership: DEFAULT_MEMBERSHIP_CONFIG,
      cluster: DEFAULT_CLUSTER_SETTINGS,
      autoscale: { ...DEFAULT_AUTOSCALER_POLICY, ...DEFAULT_PEER_OPTIONS.autoscale },
      stopDrainMs: 300_000,
    };
    const get = (path: string): unknown => path.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown> | undefined)?.[k], actual);
    let checked = 0;
    for (const o of START_OPTIONS) {
      assert.ok(parse[o.flag] !== undefined, `--${o.flag} parsed`);
      assert.ok(help.includes(`--${o.flag}`), `--${o.flag} in --help`);
      if ((o.read.kind === 'integer' || o.read.kind === 'number') && o.field !== undefined && o.convert === undefined && o.field !== 'taskSlots') {
        assert.equal(String(get(o.field)), o.shown, `--${o.flag}: shown default ${o.shown}, field ${o.field} defaults to ${String(get(o.field))}`);
        checked++;
      }
    }
    assert.equal(String(DEFAULT_RAFT_CONFIG.electionTicks * DEFAULT_RAFT_CONFIG.tickIntervalMs), START_OPTIONS.find((o) => o.flag === 'election-timeout-ms')?.shown);
    assert.ok(checked >= 20, `${checked} numeric defaults checked`);
    assert.ok(parse.help?.short === 'h');
  });

  it('reads flags into the fields they set, converting units', () => {
    const out = startOptionsFromFlags({
      'lease-ms': '750',
      'rebalance-rate': '2.5',
      'election-timeout-ms': '1500',
      'phi-threshold': '10.5',
      shards: '128',
      sync: true,
      'read-policy': 'weighted',
      'autoscale-dry-run': true,
      'http-allowed-host': [' Shoal.Example '],
    });
    assert.deepEqual(out, {
      leaseMs: 750,
      rebalanceRate: Math.round(2.5 * 1024 * 1024),
      raft: { electionTicks: 15 },
      membership: { phiThreshold: 10.5 },
      cluster: { shardCount: 128 },
      sync: true,
      readPolicy: 'weighted',
      autoscale: { mode: 'dry-run' },
      httpAllowedHosts: ['shoal.example'],
    });
    assert.deepEqual(startOptionsFromFlags({ 'rebalance-rate': 'unlimited' }), {});
  });

  it('refuses a bad value of any numeric or choice flag with an error naming the flag', () => {
    for (const o of START_OPTIONS) {
      const r = o.read;
      const bad: string[] = [];
      if (r.kind === 'integer') bad.push(String(r.min - 1), String(r.max + 1), '1.5', 'abc', '');
      else if (r.kind === 'number') bad.push(String(r.min - 1), 'abc', '', 'Infinity');
      else if (r.kind === 'choice') bad.push('bogus');
      else continue;
      for (const v of bad) {
        if (r.kind === 'integer' && v === '1.5' && r.min > 1) continue;
        const err = configErrorOf(() => startOptionsFromFlags({ [o.flag]: v }));
        assert.equal(err.field, `--${o.flag}`, `--${o.flag} ${JSON.stringify(v)}: ${err.message}`);
      }
    }
    assert.equal(configErrorOf(() => startOptionsFromFlags({ shards: '96' })).field, '--shards');
    assert.equal(configErrorOf(() => startOptionsFromFlags({ 'election-timeout-ms': '1050' })).field, '--election-timeout-ms');
    assert.equal(configErrorOf(() => startOptionsFromFlags({ 'min-in-sync': '4' })).field, '--min-in-sync');
    assert.equal(configErrorOf(() => startOptionsFromFlags({ 'autoscale-min': '5', 'autoscale-max': '3' })).field, '--autoscale-max');
    assert.equal(configErrorOf(() => startOptionsFromFlags({ autoscale: 'exec' })).field, '--autoscale');
  });

  it('validatePeerOptions checks the same bounds on the fields, naming the field', () => {
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ leaseMs: 99 }, 'leaseMs'],
      [{ leaseMs: 60_001 }, 'leaseMs'],
      [{ voters: 10 }, 'voters'],
      [{ capacity: 0 }, 'capacity'],
      [{ maxValueBytes: 1024 * 1024 + 1 }, 'maxValueBytes'],
      [{ taskSlots: 0 }, 'taskSlots'],
      [{ logRetainGroups: -1 }, 'logRetainGroups'],
      [{ requestTimeoutMs: Number.NaN }, 'requestTimeoutMs'],
    ];
    for (const [partial, field] of cases) assert.equal(configErrorOf(() => validatePeerOptions(partial)).field, field, JSON.stringify(partial));
    assert.equal(validatePeerOptions({ taskSlots: null, leaseMs: 100, capacity: 0.5 }).leaseMs, 100);
  });
});
