/**
 * The per-key version model (see KeyVersion in types.ts) and the version overlay a replica keeps
 * so its primary can decide cas and assign versions at sequencing time.
 *
 * Design choice: the core does not hold a version for every key (unbounded). The shell reads the
 * key's durable version before calling `write` and says up to which applied group that read is
 * complete (`durableAtSeq`). The overlay remembers, per key, the newest version set by any group
 * after `floorSeq`: every group sequenced but not yet applied, plus the last `versionHistoryGroups`
 * applied ones. A read at `durableAtSeq ≥ floorSeq` is then exact: any later change of the key is
 * in the overlay. A read older than the floor gets StaleVersionError (read again).
 */
import { MAX_KEY_BYTES } from './config.js';
import { assertReplication } from './errors.js';
import type { KeyVersion, LoggedOp } from './types.js';

export const ABSENT: Readonly<KeyVersion> = Object.freeze({ version: 0, present: false });

/** The cas rule: the expected version is the current one, or 0 and the key is absent. */
export function casMatches(expectVersion: number, current: KeyVersion): boolean {
  return expectVersion === current.version || (expectVersion === 0 && !current.present);
}

/** The key's state after `op` (the op's own version). */
export function versionAfter(op: LoggedOp): KeyVersion {
  return { version: op.version, present: op.kind === 'put' };
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** A lone surrogate has no UTF-8 form: stored, such a key would read back as another (U+FFFD). */
export function hasLoneSurrogate(s: string): boolean {
  return LONE_SURROGATE.test(s);
}

/**
 * Why `key` is not a valid client key, or null: a key is 1..maxKeyBytes UTF-8 bytes of
 * well-formed UTF-16. One rule for the API, the HTTP routes and peers' forwarded requests.
 */
export function keyProblem(key: unknown, maxKeyBytes = MAX_KEY_BYTES): string | null {
  if (typeof key !== 'string') return 'the key must be a string';
  if (key.length === 0) return 'the key is empty';
  const bytes = Buffer.byteLength(key, 'utf8');
  if (bytes > maxKeyBytes) return `the key is ${bytes} bytes of UTF-8; the limit is ${maxKeyBytes}`;
  if (hasLoneSurrogate(key)) return 'the key is not well-formed Unicode (lone surrogate)';
  return null;
}

/** UTF-8 length of a key, or -1 when it exceeds MAX_KEY_BYTES. */
export function keyBytes(key: string): number {
  if (key.length > MAX_KEY_BYTES) return -1; // each UTF-16 unit is at least one UTF-8 byte
  const n = Buffer.byteLength(key, 'utf8');
  return n > MAX_KEY_BYTES ? -1 : n;
}

interface OverlayGroup {
  seq: number;
  keys: Array<[string, KeyVersion]>;
}

interface OverlayEntry extends KeyVersion {
  seq: number;
}

export class VersionOverlay {
  /** Groups after the floor, ascending by seq. */
  private groups: OverlayGroup[] = [];
  private latest = new Map<string, OverlayEntry>();
  /** Reads must be complete at least up to here. */
  floorSeq: number;

  constructor(floorSeq: number) {
    this.floorSeq = floorSeq;
  }

  get size(): number {
    return this.latest.size;
  }

  /** Records a group appended to the log (seq must follow the last recorded one). */
  add(seq: number, ops: readonly LoggedOp[]): void {
    const last = this.groups.length > 0 ? this.groups[this.groups.length - 1]!.seq : this.floorSeq;
    assertReplication(seq > last, `overlay: group ${seq} after ${last}`);
    const keys: Array<[string, KeyVersion]> = ops.map((op) => [op.key, versionAfter(op)]);
    this.groups.push({ seq, keys });
    for (const [key, kv] of keys) this.latest.set(key, { ...kv, seq });
  }

  /** The key's current version given a durable read complete up to `durableAtSeq` (≥ floorSeq). */
  lookup(key: string, durable: KeyVersion): KeyVersion {
    const entry = this.latest.get(key);
    return entry === undefined ? durable : { version: entry.version, present: entry.present };
  }

  /** Forgets groups at or below `seq` (they are applied and older than the history). */
  raiseFloor(seq: number): void {
    if (seq <= this.floorSeq) return;
    this.floorSeq = seq;
    let k = 0;
    while (k < this.groups.length && this.groups[k]!.seq <= seq) {
      for (const [key] of this.groups[k]!.keys) {
        const entry = this.latest.get(key);
        if (entry !== undefined && entry.seq <= seq) this.latest.delete(key);
      }
      k++;
    }
    if (k > 0) this.groups.splice(0, k);
  }

  /** Drops groups after `seq` (a truncated log tail, never applied) and restores older versions. */
  truncateAfter(seq: number): void {
    let k = this.groups.length;
    while (k > 0 && this.groups[k - 1]!.seq > seq) k--;
    if (k === this.groups.length) return;
    const removed = this.groups.splice(k);
    const touched = new Set<string>();
    for (const g of removed) for (const [key] of g.keys) touched.add(key);
    for (const key of touched) this.latest.delete(key);
    // Restore the newest remaining version of each touched key.
    for (let j = this.groups.length - 1; j >= 0 && touched.size > 0; j--) {
      const g = this.groups[j]!;
      for (let i = g.keys.length - 1; i >= 0; i--) {
        const [key, kv] = g.keys[i]!;
        if (touched.has(key)) {
          this.latest.set(key, { ...kv, seq: g.seq });
          touched.delete(key);
        }
      }
    }
  }

  /** Forgets everything: the data now holds every group up to `seq` (a snapshot was installed). */
  reset(seq: number): void {
    this.groups = [];
    this.latest.clear();
    this.floorSeq = seq;
  }
}
