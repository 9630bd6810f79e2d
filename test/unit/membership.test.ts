import assert from 'node:assert/strict';
import { describe, it } from 'mocha';
import { decodeMembershipMessage, encodeMembershipMessage, MAX_DIGEST_MEMBERS, MAX_MESSAGE_BYTES } from '../../protocols/membership/codec.js';
import { DEFAULT_MEMBERSHIP_CONFIG, validateMembershipConfig, type MembershipConfig } from '../../protocols/membership/config.js';
import { Membership, outranks } from '../../protocols/membership/membership.js';
import type {
  DigestMessage,
  HeartbeatMessage,
  LoadSample,
  MemberRecord,
  MemberState,
  MembershipEvent,
  MembershipMessage,
  MembershipOutput,
} from '../../protocols/membership/types.js';

const SELF = 'peer-self';
const B = 'peer-b';
const C = 'peer-c';
const D = 'peer-d';
const LOAD: LoadSample = { eventLoopDelayMs: 1.5, rssBytes: 50_000_000, cpuPercent: 12 };

function heartbeat(peerId: string, incarnation = 0, addrs = [`/ip4/10.0.0.2/tcp/4001/p2p/${peerId}`]): HeartbeatMessage {
  return { kind: 'heartbeat', peerId, incarnation, addrs, load: LOAD };
}

function record(peerId: string, state: MemberState, incarnation: number, addrs: string[] = []): MemberRecord {
  return { peerId, state, incarnation, addrs };
}

function digest(from: string, members: MemberRecord[]): DigestMessage {
  return { kind: 'digest', from, members };
}

function stateChanges(out: MembershipOutput): string[] {
  return out.events.flatMap((e) => (e.type === 'member-state' ? [`${e.peerId}:${e.from}->${e.to}@${e.incarnation}`] : []));
}

function kinds(out: MembershipOutput): string[] {
  return out.broadcast.map((m) => m.kind);
}

/**
 * One core on a fake clock: ticks every `tickIntervalMs` (at multiples of it),
 * optional peers heartbeating every 500 ms, and every output kept.
 */
class Harness {
  readonly core: Membership;
  readonly outputs: { atMs: number; out: MembershipOutput }[] = [];
  nowMs = 0;

  constructor(config: Partial<MembershipConfig> = {}, incarnation = 0) {
    this.core = new Membership({ selfId: SELF, addrs: ['/ip4/10.0.0.1/tcp/4001'], incarnation, nowMs: 0, config, load: LOAD });
  }

  receive(from: string, msg: MembershipMessage): MembershipOutput {
    return this.keep(this.core.receive(this.nowMs, from, msg));
  }

  tick(): MembershipOutput {
    return this.keep(this.core.tick(this.nowMs));
  }

  /** Tick every 100 ms up to `untilMs`; `beating` peers heartbeat at every multiple of 500 ms first. */
  runUntil(untilMs: number, beating: string[] = []): void {
    const tickMs = this.core.config.tickIntervalMs;
    for (let t = this.nowMs + tickMs; t <= untilMs; t += tickMs) {
      this.nowMs = t;
      if (t % 500 === 0) for (const peer of beating) this.receive(peer, heartbeat(peer));
      this.tick();
    }
  }

  /** The first time a state-change event matching `change` was emitted. */
  firstTime(change: string): number | undefined {
    return this.outputs.find(({ out }) => stateChanges(out).includes(change))?.atMs;
  }

  events(): MembershipEvent[] {
    return this.outputs.flatMap(({ out }) => out.events);
  }

  state(peerId: string): MemberState | undefined {
    return this.core.member(peerId, this.nowMs)?.state;
  }

  private keep(out: MembershipOutput): MembershipOutput {
    this.outputs.push({ atMs: this.nowMs, out });
    return out;
  }
}

describe('Membership', () => {
  describe('start', () => {
    it('holds self alive with phi 0', () => {
      const h = new Harness();
      assert.deepEqual(h.core.members(0), [
        {
          peerId: SELF,
          state: 'alive',
          phi: 0,
          incarnation: 0,
          addrs: ['/ip4/10.0.0.1/tcp/4001'],
          lastHeartbeatAgeMs: 0,
          load: LOAD,
          self: true,
        },
      ]);
      assert.equal(h.core.selfId, SELF);
      assert.equal(h.core.incarnation, 0);
    });

    it('refuses a bad self id, incarnation or config', () => {
      const base = { selfId: SELF, addrs: [], incarnation: 0, nowMs: 0 };
      const names = (fn: () => unknown): string => {
        try {
          fn();
        } catch (err) {
          return `${(err as Error).name}:${(err as { field?: string }).field}`;
        }
        return 'no error';
      };
      assert.equal(names(() => new Membership({ ...base, selfId: '' })), 'ConfigError:selfId');
      assert.equal(names(() => new Membership({ ...base, incarnation: -1 })), 'ConfigError:incarnation');
      assert.equal(names(() => new Membership({ ...base, incarnation: 1.5 })), 'ConfigError:incarnation');
      assert.equal(names(() => new Membership({ ...base, config: { phiThreshold: 0 } })), 'ConfigError:phiThreshold');
    });

    it('heartbeats on the first tick and every heartbeatIntervalMs after; digests every digestIntervalMs', () => {
      const h = new Harness();
      assert.deepEqual(kinds(h.tick()), ['heartbeat']);
      h.runUntil(3000);
      const sent = h.outputs.flatMap(({ atMs, out }) => out.broadcast.map((m) => `${m.kind}@${atMs}`));
      assert.deepEqual(sent, [
        'heartbeat@0',
        'heartbeat@500',
        'heartbeat@1000',
        'digest@1000',
        'heartbeat@1500',
        'heartbeat@2000',
        'digest@2000',
        'heartbeat@2500',
        'heartbeat@3000',
        'digest@3000',
      ]);
      const first = h.outputs[0]?.out.broadcast[0];
      assert.deepEqual(first, { kind: 'heartbeat', peerId: SELF, incarnation: 0, addrs: ['/ip4/10.0.0.1/tcp/4001'], load: LOAD });
    });

    it('carries new addresses and load in the next heartbeat', () => {
      const h = new Harness();
      h.core.setAddrs(['/ip4/10.9.9.9/tcp/1']);
      h.core.setLoad({ eventLoopDelayMs: 9, rssBytes: 9, cpuPercent: 9 });
      const hb = h.tick().broadcast[0] as HeartbeatMessage;
      assert.deepEqual(hb.addrs, ['/ip4/10.9.9.9/tcp/1']);
      assert.deepEqual(hb.load, { eventLoopDelayMs: 9, rssBytes: 9, cpuPercent: 9 });
      assert.deepEqual(h.core.addrsOf(SELF), ['/ip4/10.9.9.9/tcp/1']);
    });
  });

  describe('join, suspicion and death', () => {
    it('adds a peer on its first heartbeat', () => {
      const h = new Harness();
      h.nowMs = 40;
      const out = h.receive(B, heartbeat(B, 3));
      assert.deepEqual(stateChanges(out), [`${B}:null->alive@3`]);
      assert.equal(out.rejected, undefined);
      h.nowMs = 140;
      const view = h.core.member(B, h.nowMs);
      assert.equal(view?.state, 'alive');
      assert.equal(view?.incarnation, 3);
      assert.equal(view?.lastHeartbeatAgeMs, 100);
      assert.deepEqual(view?.load, LOAD);
      assert.deepEqual(h.core.addrsOf(B), [`/ip4/10.0.0.2/tcp/4001/p2p/${B}`]);
      assert.ok((view?.phi ?? 1) < 1e-6);
    });

    it('suspects a silent peer when phi crosses 8 (7100 ms) and declares it dead 1 s later (8100 ms)', () => {
      const h = new Harness();
      h.runUntil(5000, [B]); // B's last heartbeat at 5000; phi reaches 8 at 5000 + 2022.6
      h.runUntil(10_000);
      assert.equal(h.firstTime(`${B}:alive->suspect@0`), 7100);
      assert.equal(h.firstTime(`${B}:suspect->dead@0`), 8100);
      const claims = h.outputs.flatMap(({ atMs, out }) =>
        out.broadcast.filter((m) => m.kind === 'suspect' || m.kind === 'dead').map((m) => ({ atMs, m })),
      );
      assert.deepEqual(claims, [
        { atMs: 7100, m: { kind: 'suspect', from: SELF, peerId: B, incarnation: 0 } },
        { atMs: 8100, m: { kind: 'dead', from: SELF, peerId: B, incarnation: 0 } },
      ]);
      assert.equal(h.core.member(B, h.nowMs)?.phi, 1000); // finite, capped
    });

    it('does not convict its own suspect whose heartbeats resumed, and reminds it that it is suspected', () => {
      const h = new Harness();
      h.runUntil(5000, [B]);
      h.runUntil(7100);
      assert.equal(h.state(B), 'suspect');
      h.nowMs = 7150;
      const out = h.receive(B, heartbeat(B, 0)); // B never heard the suspicion
      assert.deepEqual(out.broadcast, [{ kind: 'suspect', from: SELF, peerId: B, incarnation: 0 }]);
      h.nowMs = 7200;
      assert.deepEqual(h.receive(B, heartbeat(B, 0)).broadcast, [], 'at most one reminder per heartbeat interval');
      h.runUntil(9000, [B]);
      assert.equal(h.state(B), 'suspect');
      assert.equal(h.firstTime(`${B}:suspect->dead@0`), undefined);
    });

    it('convicts a peer suspected by gossip on the timer alone', () => {
      const h = new Harness();
      h.receive(B, heartbeat(B));
      h.receive(C, heartbeat(C));
      h.nowMs = 300;
      const out = h.receive(C, { kind: 'suspect', from: C, peerId: B, incarnation: 0 });
      assert.deepEqual(stateChanges(out), [`${B}:alive->suspect@0`]);
      assert.deepEqual(out.broadcast, [], 'gossip is not echoed');
      h.runUntil(1200, [B, C]);
      assert.equal(h.state(B), 'suspect');
      h.runUntil(1300, [B, C]);
      assert.equal(h.state(B), 'dead');
      assert.equal(h.firstTime(`${B}:suspect->dead@0`), 1300);
    });

    it('accepts a refutation: alive at a higher incarnation beats suspect, with a fresh detector', () => {
      const h = new Harness();
      h.runUntil(5000, [B]);
      h.runUntil(7100);
      assert.equal(h.state(B), 'suspect');
      h.nowMs = 7150;
      const out = h.receive(B, heartbeat(B, 1));
      assert.deepEqual(stateChanges(out), [`${B}:suspect->alive@1`]);
      const view = h.core.member(B, 7150);
      assert.equal(view?.incarnation, 1);
      assert.ok((view?.phi ?? 1) < 1e-6, 'the old silence no longer counts');
    });

    it('takes a left peer out and ignores its later heartbeats at that incarnation', () => {
      const h = new Harness();
      h.receive(B, heartbeat(B, 2));
      h.nowMs = 100;
      assert.deepEqual(stateChanges(h.receive(B, { kind: 'left', peerId: B, incarnation: 2 })), [`${B}:alive->left@2`]);
      h.nowMs = 200;
      h.receive(B, heartbeat(B, 2));
      assert.equal(h.state(B), 'left');
      h.runUntil(10_000);
      assert.equal(h.state(B), 'left', 'left is not suspected or convicted');
      h.receive(B, heartbeat(B, 3));
      assert.equal(h.state(B), 'alive', 'rejoin at a higher incarnation');
    });

    it('leaves: announces left, stops heartbeating, and no longer refutes', () => {
      const h = new Harness();
      h.tick();
      h.nowMs = 100;
      const out = h.core.leave(h.nowMs);
      assert.deepEqual(out.broadcast, [{ kind: 'left', peerId: SELF, incarnation: 0 }]);
      assert.deepEqual(stateChanges(out), [`${SELF}:alive->left@0`]);
      assert.deepEqual(h.core.leave(h.nowMs), { broadcast: [], events: [] }, 'idempotent');
      h.runUntil(3000);
      assert.equal(h.outputs.flatMap(({ out: o }) => o.broadcast).length, 1, 'only the first heartbeat went out');
      h.receive(B, { kind: 'suspect', from: B, peerId: SELF, incarnation: 0 });
      assert.equal(h.core.incarnation, 0);
      assert.equal(h.core.member(SELF, h.nowMs)?.state, 'left');
    });
  });

  describe('refutation of claims about self', () => {
    it('a suspicion at our incarnation raises it by one and heartbeats at once', () => {
      const h = new Harness({}, 4);
      h.tick();
      h.nowMs = 50;
      const out = h.receive(B, { kind: 'suspect', from: B, peerId: SELF, incarnation: 4 });
      assert.equal(h.core.incarnation, 5);
      assert.deepEqual(out.events, [{ type: 'incarnation', incarnation: 5 }]);
      assert.deepEqual(out.broadcast, [
        { kind: 'heartbeat', peerId: SELF, incarnation: 5, addrs: ['/ip4/10.0.0.1/tcp/4001'], load: LOAD },
      ]);
      assert.equal(h.core.member(SELF, 50)?.state, 'alive');
    });

    it('a death verdict at its own incarnation is refuted above it; one above its incarnation is ignored as forged', () => {
      const h = new Harness({}, 1);
      const out = h.receive(B, { kind: 'dead', from: B, peerId: SELF, incarnation: 1 });
      assert.equal(h.core.incarnation, 2);
      assert.deepEqual(kinds(out), ['heartbeat']);
      // Only we raise our incarnation: a claim at 2^53 - 1 is not chased (and others ignore it).
      const forged = h.receive(B, { kind: 'dead', from: B, peerId: SELF, incarnation: Number.MAX_SAFE_INTEGER });
      assert.equal(typeof forged.rejected, 'string');
      assert.deepEqual(kinds(forged), []);
      assert.equal(h.core.incarnation, 2);
    });

    it('ignores claims about an older incarnation, and alive at our own', () => {
      const h = new Harness({}, 3);
      assert.deepEqual(h.receive(B, { kind: 'suspect', from: B, peerId: SELF, incarnation: 2 }), { broadcast: [], events: [] });
      assert.deepEqual(h.receive(B, { kind: 'dead', from: B, peerId: SELF, incarnation: 2 }), { broadcast: [], events: [] });
      assert.deepEqual(h.receive(C, digest(C, [record(SELF, 'alive', 3)])).events, []);
      assert.equal(h.core.incarnation, 3);
    });

    it('refutes a claim about it found in a digest; one above its own incarnation is ignored', () => {
      const h = new Harness({}, 2);
      h.receive(C, digest(C, [record(SELF, 'left', 2)]));
      assert.equal(h.core.incarnation, 3);
      h.receive(C, digest(C, [record(SELF, 'alive', 6)]));
      assert.equal(h.core.incarnation, 3);
    });

    it('ignores its own messages echoed back', () => {
      const h = new Harness();
      const out = h.receive(SELF, { kind: 'left', peerId: SELF, incarnation: 9 });
      assert.deepEqual(out, { broadcast: [], events: [] });
      assert.equal(h.core.member(SELF, 0)?.state, 'alive');
    });
  });

  describe('incarnation ordering', () => {
    it('orders claims by (incarnation, alive < suspect < dead < left)', () => {
      const states: MemberState[] = ['alive', 'suspect', 'dead', 'left'];
      const table: string[] = [];
      for (const claim of states) {
        table.push(states.map((current) => (outranks({ state: claim, incarnation: 1 }, { state: current, incarnation: 1 }) ? 'Y' : '.')).join(''));
      }
      // rows: claim; columns: current (alive suspect dead left), same incarnation
      assert.deepEqual(table, ['....', 'Y...', 'YY..', 'YYY.']);
      for (const claim of states) {
        for (const current of states) {
          assert.equal(outranks({ state: claim, incarnation: 2 }, { state: current, incarnation: 1 }), true);
          assert.equal(outranks({ state: claim, incarnation: 1 }, { state: current, incarnation: 2 }), false);
        }
      }
    });

    it('a stale alive does not beat dead; a rejoin at a higher incarnation does', () => {
      const h = new Harness();
      h.receive(B, heartbeat(B, 2));
      h.runUntil(6000); // B silent: our own detector suspects, then convicts it at incarnation 2
      assert.equal(h.state(B), 'dead');
      assert.deepEqual(h.receive(B, heartbeat(B, 2)).events, [], 'alive at the dead incarnation is not enough');
      assert.equal(h.state(B), 'dead');
      const stale = h.core.member(B, 6000);
      assert.equal(stale?.lastHeartbeatAgeMs, 6000, 'stale heartbeats are not arrivals');
      assert.ok((stale?.phi ?? 0) > 30, 'nor fed to the detector');
      h.nowMs = 6500;
      const out = h.receive(B, heartbeat(B, 3));
      assert.deepEqual(stateChanges(out), [`${B}:dead->alive@3`]);
      assert.ok((h.core.member(B, 6500)?.phi ?? 1) < 1e-6);
    });

    it('another peer cannot raise a member\'s incarnation or convict it: a dead claim is a suspicion at most', () => {
      const h = new Harness();
      h.receive(B, heartbeat(B, 2));
      h.receive(C, heartbeat(C));
      // A verdict at 2^53 - 1 (which B's real heartbeats could never beat) is refused outright.
      const forged = h.receive(C, { kind: 'dead', from: C, peerId: B, incarnation: Number.MAX_SAFE_INTEGER });
      assert.equal(typeof forged.rejected, 'string');
      assert.equal(h.state(B), 'alive');
      assert.equal(h.core.member(B, 0)?.incarnation, 2);
      // At B's own incarnation, `dead` only makes B suspect; B refutes by heartbeating higher.
      assert.deepEqual(stateChanges(h.receive(C, { kind: 'dead', from: C, peerId: B, incarnation: 2 })), [`${B}:alive->suspect@2`]);
      h.nowMs = 300;
      assert.deepEqual(stateChanges(h.receive(B, heartbeat(B, 3))), [`${B}:suspect->alive@3`]);
    });

    it('only the member itself revives a dead row: a third party\'s record at a higher incarnation is ignored', () => {
      const h = new Harness();
      h.receive(B, heartbeat(B));
      h.runUntil(6000, [C]);
      assert.equal(h.state(B), 'dead');
      assert.deepEqual(stateChanges(h.receive(C, digest(C, [record(B, 'suspect', 1)]))), []);
      assert.deepEqual(stateChanges(h.receive(C, digest(C, [record(B, 'alive', 1)]))), []);
      assert.equal(h.state(B), 'dead');
      const out = h.receive(B, heartbeat(B, 1));
      assert.deepEqual(stateChanges(out), [`${B}:dead->alive@1`]);
      assert.ok((h.core.member(B, 6000)?.phi ?? 1) < 1e-6, 'with a fresh detector');
    });

    it('a suspicion at an older incarnation is ignored', () => {
      const h = new Harness();
      h.receive(B, heartbeat(B, 5));
      assert.deepEqual(h.receive(C, { kind: 'suspect', from: C, peerId: B, incarnation: 4 }).events, []);
      assert.equal(h.state(B), 'alive');
    });

    it('ignores claims about peers it does not know', () => {
      const h = new Harness();
      assert.deepEqual(h.receive(C, { kind: 'dead', from: C, peerId: D, incarnation: 0 }), { broadcast: [], events: [] });
      assert.equal(h.core.member(D, 0), undefined);
    });
  });

  describe('forged messages', () => {
    const forgeries: [string, MembershipMessage][] = [
      ['heartbeat for another peer', heartbeat(C)],
      ['left for another peer', { kind: 'left', peerId: C, incarnation: 0 }],
      ['digest from another peer', digest(C, [record(C, 'dead', 0)])],
      ['suspect from another peer', { kind: 'suspect', from: C, peerId: SELF, incarnation: 0 }],
      ['dead from another peer', { kind: 'dead', from: C, peerId: D, incarnation: 0 }],
    ];
    for (const [what, msg] of forgeries) {
      it(`rejects a ${what} and changes nothing`, () => {
        const h = new Harness();
        h.receive(C, heartbeat(C));
        h.receive(D, heartbeat(D));
        const before = h.core.members(0);
        const out = h.receive(B, msg);
        assert.equal(typeof out.rejected, 'string');
        assert.deepEqual(out.broadcast, []);
        assert.deepEqual(out.events, []);
        assert.deepEqual(h.core.members(0), before);
        assert.equal(h.core.incarnation, 0);
      });
    }
  });

  describe('own-pause guard', () => {
    it('a tick 5 s late convicts nobody, and neither does the next normal tick', () => {
      const h = new Harness();
      h.runUntil(5000, [B, C]);
      h.receive(D, heartbeat(D));
      h.receive(C, { kind: 'suspect', from: C, peerId: D, incarnation: 0 }); // D suspect since 5000
      h.nowMs = 10_000; // our event loop stalled; nothing arrived meanwhile
      const late = h.tick();
      assert.deepEqual(late.events, [{ type: 'own-pause', lateByMs: 4900 }]);
      assert.deepEqual(kinds(late), ['heartbeat', 'digest'], 'still heartbeats; no suspect or dead');
      assert.equal(h.state(B), 'alive');
      assert.equal(h.state(D), 'suspect');
      h.nowMs = 10_100;
      const next = h.tick();
      assert.deepEqual(next.events, []);
      assert.deepEqual(kinds(next), []);
      assert.ok((h.core.member(B, 10_100)?.phi ?? 99) < 1e-6, 'detector clocks restarted at the late tick');
      // The suspicion timer restarted too: D is convicted 1 s after the pause, not on it.
      h.runUntil(10_900);
      assert.equal(h.state(D), 'suspect');
      h.runUntil(11_000);
      assert.equal(h.state(D), 'dead');
      // B and C still silent: suspected 2022.6 ms after the restart, as for a real silence.
      h.runUntil(12_500);
      assert.equal(h.firstTime(`${B}:alive->suspect@0`), 12_100);
    });

    it('a tick within the acceptable pause is not a stall', () => {
      const h = new Harness();
      h.tick();
      h.nowMs = 1100; // 100 ms interval + 1000 ms acceptable pause
      assert.deepEqual(h.tick().events, []);
      h.nowMs = 2201;
      assert.deepEqual(h.tick().events, [{ type: 'own-pause', lateByMs: 1001 }]);
    });
  });

  describe('digests', () => {
    it('never adds a peer on hearsay: a digest admits only its sender, whose own record it is', () => {
      const h = new Harness();
      h.receive(C, heartbeat(C));
      h.nowMs = 200;
      const fakes = Array.from({ length: 50 }, (_, k) => record(`peer-fake-${k}`, 'alive', 0));
      const out = h.receive(C, digest(C, [record(C, 'alive', 0), record(B, 'alive', 2, ['/ip4/10.0.0.2/tcp/1']), record(D, 'dead', 1), ...fakes]));
      assert.deepEqual(stateChanges(out), []);
      assert.equal(h.core.member(B, 200), undefined);
      assert.equal(h.core.member(D, 200), undefined);
      assert.equal(h.core.members(200).length, 2, 'self and C only');
      assert.equal(h.core.counters.digestRecordsIgnored, 52);
      // The sender's own record is as good as its heartbeat: E joins by its own digest.
      const e = h.receive('peer-e', digest('peer-e', [record('peer-e', 'alive', 0, ['/ip4/10.0.0.5/tcp/1'])]));
      assert.deepEqual(stateChanges(e), ['peer-e:null->alive@0']);
      assert.equal(h.core.member('peer-e', 200)?.lastHeartbeatAgeMs, null, 'a digest is not a heartbeat');
    });

    it('does not feed detectors from digests', () => {
      const h = new Harness();
      h.receive(B, heartbeat(B));
      h.nowMs = 1500;
      const phiBefore = h.core.member(B, 1500)?.phi;
      h.receive(C, digest(C, [record(B, 'alive', 0)]));
      assert.equal(h.core.member(B, 1500)?.phi, phiBefore);
      assert.equal(h.core.member(B, 1500)?.lastHeartbeatAgeMs, 1500);
    });

    it('merges each record by precedence', () => {
      const h = new Harness();
      h.receive(B, heartbeat(B, 1));
      h.receive(C, heartbeat(C, 1));
      h.receive(D, heartbeat(D, 1));
      const out = h.receive(C, digest(C, [record(B, 'suspect', 1), record(C, 'alive', 1), record(D, 'alive', 0)]));
      assert.deepEqual(stateChanges(out), [`${B}:alive->suspect@1`]);
      // A third party's alive above B's own incarnation is ignored; B's own heartbeat counts.
      h.receive(C, digest(C, [record(B, 'alive', 2), record(D, 'left', 1)]));
      assert.equal(h.state(B), 'suspect');
      h.receive(B, heartbeat(B, 2));
      assert.equal(h.state(B), 'alive');
      assert.equal(h.core.member(B, 0)?.incarnation, 2);
      // Someone else's `left` about D is a suspicion only: D alone says it left.
      assert.equal(h.state(D), 'suspect');
    });

    it('treats a dead record about a live member as a suspicion, so the member has time to refute', () => {
      const h = new Harness();
      h.receive(B, heartbeat(B));
      h.receive(C, heartbeat(C));
      const out = h.receive(C, digest(C, [record(B, 'dead', 0)]));
      assert.deepEqual(stateChanges(out), [`${B}:alive->suspect@0`]);
      h.runUntil(900, [C]);
      h.receive(B, heartbeat(B, 1));
      h.runUntil(3000, [B, C]);
      assert.equal(h.firstTime(`${B}:suspect->dead@0`), undefined);
      assert.equal(h.state(B), 'alive');
    });

    it('sends the whole table, self first, in records that round-trip through the codec', () => {
      const h = new Harness();
      h.receive(B, heartbeat(B, 2));
      h.receive(C, { kind: 'left', peerId: C, incarnation: 0 }); // unknown: ignored
      h.nowMs = 1000;
      const sent = h.tick().broadcast.find((m) => m.kind === 'digest');
      assert.deepEqual(sent, digest(SELF, [record(SELF, 'alive', 0, ['/ip4/10.0.0.1/tcp/4001']), record(B, 'alive', 2, [`/ip4/10.0.0.2/tcp/4001/p2p/${B}`])]));
      assert.deepEqual(decodeMembershipMessage(encodeMembershipMessage(sent as DigestMessage)), sent);
    });
  });

  describe('bounds', () => {
    it('refuses new peers beyond maxMembers, making room by evicting the oldest tombstone', () => {
      const h = new Harness({ maxMembers: 3 });
      h.receive(B, heartbeat(B));
      h.receive(C, heartbeat(C));
      const refused = h.receive(D, heartbeat(D));
      assert.equal(refused.rejected, 'member table full');
      assert.equal(h.core.member(D, 0), undefined);
      assert.equal(h.core.members(0).length, 3);
      h.nowMs = 10;
      h.receive(B, { kind: 'left', peerId: B, incarnation: 0 });
      h.nowMs = 20;
      const admitted = h.receive(D, heartbeat(D));
      assert.equal(admitted.rejected, undefined);
      assert.deepEqual(h.core.members(20).map((m) => m.peerId), [C, D, SELF]);
      const full = h.receive('peer-x', heartbeat('peer-x'));
      assert.equal(full.rejected, 'member table full');
      assert.equal(h.core.members(20).length, 3);
    });

    it('keeps at most maxAddrsPerMember addresses', () => {
      const h = new Harness({ maxAddrsPerMember: 2 });
      h.receive(B, heartbeat(B, 0, ['/a', '/b', '/c']));
      assert.deepEqual(h.core.addrsOf(B), ['/a', '/b']);
      h.core.setAddrs(['/1', '/2', '/3']);
      assert.deepEqual(h.core.addrsOf(SELF), ['/1', '/2']);
    });

    it('forgets dead and left rows after reapAfterMs', () => {
      const h = new Harness({ reapAfterMs: 2000 });
      h.receive(B, heartbeat(B));
      h.receive(C, heartbeat(C));
      h.receive(D, { kind: 'left', peerId: D, incarnation: 0 }); // unknown: nothing to forget
      h.receive(C, { kind: 'left', peerId: C, incarnation: 0 });
      h.runUntil(1900, [B]);
      assert.equal(h.state(C), 'left');
      h.runUntil(2000, [B]);
      assert.equal(h.core.member(C, 2000), undefined);
      assert.equal(h.state(B), 'alive');
    });

    it('splits a big digest into messages within the codec limits', () => {
      const count = 1500;
      const longAddr = `/dns4/${'x'.repeat(200)}.example/tcp/4001`;
      const h = new Harness({ maxMembers: count });
      for (let i = 0; i < count - 1; i++) {
        const peer = `peer-${String(i).padStart(4, '0')}-${'z'.repeat(40)}`;
        h.receive(peer, heartbeat(peer, 0, [longAddr]));
      }
      h.nowMs = 1000;
      const digests = h.tick().broadcast.filter((m): m is DigestMessage => m.kind === 'digest');
      assert.ok(digests.length >= 2);
      assert.equal(digests.reduce((n, d) => n + d.members.length, 0), count);
      for (const d of digests) {
        assert.ok(d.members.length <= MAX_DIGEST_MEMBERS);
        assert.ok(encodeMembershipMessage(d).byteLength <= MAX_MESSAGE_BYTES);
      }
    });
  });

  describe('views', () => {
    it('lists every row sorted by peer id, self included', () => {
      const h = new Harness();
      h.receive(D, heartbeat(D));
      h.receive(B, heartbeat(B));
      h.nowMs = 300;
      const views = h.core.members(300);
      assert.deepEqual(views.map((v) => [v.peerId, v.self, v.lastHeartbeatAgeMs]), [
        [B, false, 300],
        [D, false, 300],
        [SELF, true, 0],
      ]);
      assert.equal(h.core.member('peer-unknown', 300), undefined);
      assert.equal(h.core.addrsOf('peer-unknown'), undefined);
    });

    it('returns copies that do not alias the table', () => {
      const h = new Harness();
      h.receive(B, heartbeat(B));
      h.core.addrsOf(B)?.push('/mutated');
      h.core.member(B, 0)?.addrs.push('/mutated');
      assert.deepEqual(h.core.addrsOf(B), [`/ip4/10.0.0.2/tcp/4001/p2p/${B}`]);
    });
  });
});

describe('validateMembershipConfig', () => {
  it('returns the defaults for an empty partial and merges overrides', () => {
    assert.deepEqual(validateMembershipConfig({}), DEFAULT_MEMBERSHIP_CONFIG);
    assert.equal(validateMembershipConfig({ phiThreshold: 10 }).phiThreshold, 10);
    assert.equal(validateMembershipConfig({ phiThreshold: undefined }).phiThreshold, 8);
  });

  it('names the bad field in a ConfigError', () => {
    const bad: [Partial<MembershipConfig> | Record<string, unknown>, string][] = [
      [{ heartbeatIntervalMs: 0 }, 'heartbeatIntervalMs'],
      [{ tickIntervalMs: -1 }, 'tickIntervalMs'],
      [{ phiThreshold: Number.NaN }, 'phiThreshold'],
      [{ minStdDeviationMs: Infinity }, 'minStdDeviationMs'],
      [{ acceptableHeartbeatPauseMs: -5 }, 'acceptableHeartbeatPauseMs'],
      [{ maxSampleSize: 2.5 }, 'maxSampleSize'],
      [{ suspicionTimeoutMs: '1000' }, 'suspicionTimeoutMs'],
      [{ maxMembers: 0 }, 'maxMembers'],
      [{ maxAddrsPerMember: 17 }, 'maxAddrsPerMember'],
      [{ heartbeatIntervalMS: 500 }, 'heartbeatIntervalMS'],
    ];
    for (const [partial, field] of bad) {
      assert.throws(
        () => validateMembershipConfig(partial as Partial<MembershipConfig>),
        (err: Error & { field?: string }) => err.name === 'ConfigError' && err.field === field,
        field,
      );
    }
  });
});
