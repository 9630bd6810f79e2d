/**
 * The cluster map state machine. `apply` is deterministic and total: it either applies a command
 * and bumps `version`, or rejects it with a reason and changes nothing. `snapshot` encodes the
 * whole state canonically (sorted members, fixed field order), so two peers that applied the
 * same commands produce byte-equal snapshots; `restore` validates a snapshot completely.
 */
import { InvalidMessageError } from '../errors.js';
import {
  CLUSTER_MAP_LIMITS,
  DEFAULT_CLUSTER_SETTINGS,
  checkClusterSettings,
  decodeClusterCommand,
  encodeClusterCommand,
  MEMBER_STATUSES,
} from './commands.js';
import type {
  ApplyResult,
  ClusterCommand,
  ClusterMapView,
  ClusterSettings,
  MemberInfo,
  MemberStatus,
  RejectReason,
  SetShardAssignmentCommand,
  ShardAssignment,
} from './types.js';

const SNAPSHOT_FORMAT = 1;
const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder('utf-8', { fatal: true });

function reject(reason: RejectReason, detail: string): ApplyResult {
  return { ok: false, reason, detail };
}

const OK: ApplyResult = Object.freeze({ ok: true });

function copyMember(m: MemberInfo): MemberInfo {
  return { addrs: [...m.addrs], capacity: m.capacity, status: m.status };
}

function copyAssignment(a: ShardAssignment): ShardAssignment {
  return { replicas: [...a.replicas], primary: a.primary, inSync: [...a.inSync], epoch: a.epoch };
}

/**
 * Why assignment `a` breaks a rule of the cluster map, or null. Up to replicationFactor + 1
 * replicas (one move in flight), distinct members; inSync ⊆ replicas; the primary, if any, in
 * sync. `statusRules` (no replica that left, no dead primary) apply to new assignments only: a
 * member may die or leave after it was assigned, and a snapshot must still restore. Exported so
 * that a planner (the shard controller) can check a change exactly as the map will.
 */
export function checkShardAssignment(
  a: ShardAssignment,
  settings: ClusterSettings,
  memberOf: (peerId: string) => MemberInfo | undefined,
  statusRules = true,
): string | null {
  if (a.replicas.length === 0 || a.replicas.length > settings.replicationFactor + 1) {
    return `1..${settings.replicationFactor + 1} replicas required`;
  }
  if (new Set(a.replicas).size !== a.replicas.length) return 'replicas not distinct';
  for (const id of a.replicas) {
    const m = memberOf(id);
    if (m === undefined) return `replica ${id} is not a member`;
    if (statusRules && m.status === 'left') return `replica ${id} has left`;
  }
  if (new Set(a.inSync).size !== a.inSync.length) return 'inSync not distinct';
  for (const id of a.inSync) if (!a.replicas.includes(id)) return `inSync ${id} is not a replica`;
  if (a.primary !== null) {
    if (!a.inSync.includes(a.primary)) return `primary ${a.primary} is not in sync`;
    if (statusRules && memberOf(a.primary)!.status === 'dead') return `primary ${a.primary} is dead`;
  }
  return null;
}

export class ClusterMap {
  private versionValue = 0;
  private settingsValue: ClusterSettings | null = null;
  private members = new Map<string, MemberInfo>();
  private shardsValue: ShardAssignment[] = [];

  /** Number of commands applied (rejected ones do not count). */
  get version(): number {
    return this.versionValue;
  }

  /** Null until the bootstrap command is applied. */
  get settings(): ClusterSettings | null {
    return this.settingsValue === null ? null : { ...this.settingsValue };
  }

  member(peerId: string): MemberInfo | undefined {
    const m = this.members.get(peerId);
    return m === undefined ? undefined : copyMember(m);
  }

  memberIds(): string[] {
    return [...this.members.keys()].sort();
  }

  /** Empty until the first full assignment. */
  get shards(): ShardAssignment[] {
    return this.shardsValue.map(copyAssignment);
  }

  view(): ClusterMapView {
    const members: Record<string, MemberInfo> = {};
    for (const id of this.memberIds()) members[id] = copyMember(this.members.get(id)!);
    return { version: this.versionValue, settings: this.settings, members, shards: this.shards };
  }

  /**
   * Apply the data of a committed normal Raft entry (skip empty entries: they are leader no-ops).
   * A malformed command is rejected like any other.
   */
  applyEntryData(data: Uint8Array): ApplyResult {
    let cmd: ClusterCommand;
    try {
      cmd = decodeClusterCommand(data);
    } catch (err) {
      return reject('malformed', (err as Error).message);
    }
    return this.applyValidated(cmd);
  }

  /** Apply a command; it is validated exactly as if it had arrived encoded in an entry. */
  apply(cmd: ClusterCommand): ApplyResult {
    return this.applyEntryData(encodeClusterCommand(cmd));
  }

  private applyValidated(cmd: ClusterCommand): ApplyResult {
    if (cmd.type === 'bootstrap') {
      if (this.settingsValue !== null) return reject('already-bootstrapped', 'settings are fixed at bootstrap');
      const settings: ClusterSettings = { ...DEFAULT_CLUSTER_SETTINGS, ...cmd.settings };
      const problem = checkClusterSettings(settings);
      if (problem !== null) return reject('invalid-settings', problem);
      this.settingsValue = settings;
      return this.bump();
    }
    if (this.settingsValue === null) return reject('not-bootstrapped', `${cmd.type} before bootstrap`);
    switch (cmd.type) {
      case 'add-member': {
        if (this.members.has(cmd.peerId)) return reject('member-exists', cmd.peerId);
        if (this.members.size >= CLUSTER_MAP_LIMITS.maxMembers) return reject('invalid-member', 'too many members');
        this.members.set(cmd.peerId, { addrs: [...cmd.addrs], capacity: cmd.capacity ?? 1, status: 'active' });
        return this.bump();
      }
      case 'update-member': {
        const m = this.members.get(cmd.peerId);
        if (m === undefined) return reject('unknown-member', cmd.peerId);
        if (cmd.addrs !== undefined) m.addrs = [...cmd.addrs];
        if (cmd.capacity !== undefined) m.capacity = cmd.capacity;
        if (cmd.status !== undefined) m.status = cmd.status;
        return this.bump();
      }
      case 'remove-member': {
        if (!this.members.has(cmd.peerId)) return reject('unknown-member', cmd.peerId);
        const shard = this.shardsValue.findIndex((a) => a.replicas.includes(cmd.peerId));
        if (shard >= 0) return reject('member-in-use', `${cmd.peerId} holds a replica of shard ${shard}`);
        this.members.delete(cmd.peerId);
        return this.bump();
      }
      case 'set-shard-assignment':
        return this.applyShardAssignment(cmd);
    }
  }

  private applyShardAssignment(cmd: SetShardAssignmentCommand): ApplyResult {
    const settings = this.settingsValue!;
    const seen = new Set<number>();
    for (const [k, u] of cmd.updates.entries()) {
      if (u.shard >= settings.shardCount) return reject('invalid-assignment', `shard ${u.shard} ≥ shardCount ${settings.shardCount}`);
      if (seen.has(u.shard)) return reject('invalid-assignment', `shard ${u.shard} listed twice`);
      seen.add(u.shard);
      if (cmd.full && u.shard !== k) return reject('invalid-assignment', 'a full assignment lists shards 0..shardCount-1 in order');
    }
    if (cmd.full && cmd.updates.length !== settings.shardCount) {
      return reject('invalid-assignment', `a full assignment has ${settings.shardCount} shards, got ${cmd.updates.length}`);
    }
    if (!cmd.full && this.shardsValue.length === 0) return reject('no-assignment', 'the first assignment must be full');
    // Conditions first: a change planned from a stale view is reported as such, even if it has
    // also become invalid since.
    for (const u of cmd.updates) {
      if (u.expectEpoch === undefined) continue;
      const current = this.shardsValue[u.shard];
      if (current === undefined || current.epoch !== u.expectEpoch) {
        const actual = current === undefined ? 'no assignment' : `epoch ${current.epoch}`;
        return reject('epoch-mismatch', `shard ${u.shard}: expected epoch ${u.expectEpoch}, found ${actual}`);
      }
    }
    for (const u of cmd.updates) {
      const problem = this.checkAssignment(u.assignment, settings);
      if (problem !== null) return reject('invalid-assignment', `shard ${u.shard}: ${problem}`);
      const current = this.shardsValue[u.shard];
      if (current !== undefined && u.assignment.epoch < current.epoch) {
        return reject('epoch-regression', `shard ${u.shard}: epoch ${u.assignment.epoch} < ${current.epoch}`);
      }
    }
    // Valid as a whole: now change.
    if (cmd.full) this.shardsValue = cmd.updates.map((u) => copyAssignment(u.assignment));
    else for (const u of cmd.updates) this.shardsValue[u.shard] = copyAssignment(u.assignment);
    return this.bump();
  }

  /** Why `a` breaks a rule, or null: checkShardAssignment against this map's members. */
  private checkAssignment(a: ShardAssignment, settings: ClusterSettings, statusRules = true): string | null {
    return checkShardAssignment(a, settings, (id) => this.members.get(id), statusRules);
  }

  private bump(): ApplyResult {
    this.versionValue++;
    return OK;
  }

  // -------------------------------------------------------------------------------------------
  // Snapshots

  /** Canonical encoding of the whole state: equal states give equal bytes. */
  snapshot(): Uint8Array {
    const settings = this.settingsValue;
    const canonical = {
      format: SNAPSHOT_FORMAT,
      version: this.versionValue,
      settings: settings === null ? null : { shardCount: settings.shardCount, replicationFactor: settings.replicationFactor, minInSync: settings.minInSync },
      members: this.memberIds().map((id) => {
        const m = this.members.get(id)!;
        return [id, { addrs: m.addrs, capacity: m.capacity, status: m.status }];
      }),
      shards: this.shardsValue.map((a) => ({ replicas: a.replicas, primary: a.primary, inSync: a.inSync, epoch: a.epoch })),
    };
    return textEncoder.encode(JSON.stringify(canonical));
  }

  /** Replace the state by a snapshot; throws InvalidMessageError (state unchanged) on bad input. */
  restore(bytes: Uint8Array): void {
    const restored = ClusterMap.fromSnapshot(bytes);
    this.versionValue = restored.versionValue;
    this.settingsValue = restored.settingsValue;
    this.members = restored.members;
    this.shardsValue = restored.shardsValue;
  }

  static fromSnapshot(bytes: Uint8Array): ClusterMap {
    const fail = (path: string, problem: string): never => {
      throw new InvalidMessageError(`snapshot.${path}: ${problem}`);
    };
    let parsed: unknown;
    try {
      parsed = JSON.parse(textDecoder.decode(bytes));
    } catch {
      return fail('bytes', 'not UTF-8 JSON');
    }
    if (typeof parsed !== 'object' || parsed === null) return fail('root', 'must be an object');
    const o = parsed as Record<string, unknown>;
    if (o.format !== SNAPSHOT_FORMAT) fail('format', 'unsupported');
    const map = new ClusterMap();
    if (typeof o.version !== 'number' || !Number.isSafeInteger(o.version) || o.version < 0) fail('version', 'must be a non-negative integer');
    map.versionValue = o.version as number;
    if (o.settings !== null) {
      const s = o.settings as ClusterSettings;
      if (typeof s !== 'object' || s === null) fail('settings', 'must be an object or null');
      const settings = { shardCount: s.shardCount, replicationFactor: s.replicationFactor, minInSync: s.minInSync };
      const problem = checkClusterSettings(settings);
      if (problem !== null) fail('settings', problem);
      map.settingsValue = settings;
    }
    if (!Array.isArray(o.members) || o.members.length > CLUSTER_MAP_LIMITS.maxMembers) fail('members', 'must be an array');
    for (const [k, row] of (o.members as unknown[]).entries()) {
      if (!Array.isArray(row) || row.length !== 2) fail(`members[${k}]`, 'must be [peerId, member]');
      const [id, info] = row as [unknown, unknown];
      // Re-use the command validation for the member fields.
      let decoded: ClusterCommand;
      try {
        const m = info as Record<string, unknown>;
        decoded = decodeClusterCommand(textEncoder.encode(JSON.stringify({ type: 'update-member', peerId: id, addrs: m?.addrs, capacity: m?.capacity, status: m?.status })));
      } catch (err) {
        return fail(`members[${k}]`, (err as Error).message);
      }
      if (decoded.type !== 'update-member' || decoded.addrs === undefined || decoded.capacity === undefined || decoded.status === undefined) {
        return fail(`members[${k}]`, 'addrs, capacity and status required');
      }
      if (map.members.has(decoded.peerId)) fail(`members[${k}]`, 'duplicate peer id');
      if (!MEMBER_STATUSES.includes(decoded.status as MemberStatus)) fail(`members[${k}].status`, 'invalid');
      map.members.set(decoded.peerId, { addrs: decoded.addrs, capacity: decoded.capacity, status: decoded.status });
    }
    if (!Array.isArray(o.shards)) fail('shards', 'must be an array');
    const shards = o.shards as unknown[];
    if (shards.length > 0) {
      if (map.settingsValue === null || shards.length !== map.settingsValue.shardCount) fail('shards', 'must be empty or have shardCount entries');
      // Re-use the command validation, then the map's own rules.
      let decoded: ClusterCommand;
      try {
        decoded = decodeClusterCommand(textEncoder.encode(JSON.stringify({ type: 'set-shard-assignment', full: true, updates: shards.map((assignment, shard) => ({ shard, assignment })) })));
      } catch (err) {
        return fail('shards', (err as Error).message);
      }
      if (decoded.type !== 'set-shard-assignment') return fail('shards', 'invalid');
      for (const u of decoded.updates) {
        const problem = map.checkAssignment(u.assignment, map.settingsValue!, false);
        if (problem !== null) fail(`shards[${u.shard}]`, problem);
      }
      map.shardsValue = decoded.updates.map((u) => copyAssignment(u.assignment));
    }
    return map;
  }
}

/**
 * The in-sync count writes need in this map: the configured minInSync, but never more than the
 * members that have not left (issue 10, "grow from one"). A cluster of one peer takes writes on
 * its one replica, and a cluster of two on two, until it has as many peers as minInSync; from
 * then on the configured value holds. Dead members still count (they may come back, and
 * a failure must not lower the guarantee); only a graceful leave lowers it.
 */
export function effectiveMinInSync(view: Pick<ClusterMapView, 'settings' | 'members'>): number {
  const configured = view.settings?.minInSync ?? 2;
  const present = Object.values(view.members).filter((m) => m.status !== 'left' && m.status !== 'draining').length;
  return Math.max(1, Math.min(configured, present));
}
