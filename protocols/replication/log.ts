/**
 * The in-memory window of one replica's op log: the groups after `trimSeq`, contiguous. It mirrors
 * the shell's on-disk op log through `Ready` (appends, truncations, trims), bounded by the trim
 * rule in replica.ts (committed, applied groups beyond `logRetainGroups`/`logRetainBytes` go).
 *
 *     trimSeq ≤ appliedSeq ≤ commitSeq ≤ lastSeq        (at a backup commitSeq may lag)
 *     groups[k].seq === trimSeq + 1 + k
 *     group epochs never decrease along the log
 */
import { OP_OVERHEAD_BYTES } from './config.js';
import { assertReplication } from './errors.js';
import type { LogGroup, LoggedOp } from './types.js';

export function opBytes(op: LoggedOp): number {
  return Buffer.byteLength(op.key, 'utf8') + (op.kind === 'put' ? op.value.byteLength : 0) + OP_OVERHEAD_BYTES;
}

export function groupBytes(group: LogGroup): number {
  let n = OP_OVERHEAD_BYTES;
  for (const op of group.ops) n += opBytes(op);
  return n;
}

export class ReplicaLog {
  /** Groups at or below this are not held (trimmed, or covered by a snapshot). */
  private trimSeqValue: number;
  /** Epoch of the group at `trimSeq` (0 when trimSeq is 0). */
  private trimEpochValue: number;
  private groups: LogGroup[] = [];
  private sizes: number[] = [];
  private bytesValue = 0;

  constructor(trimSeq: number, trimEpoch: number, groups: readonly LogGroup[] = []) {
    this.trimSeqValue = trimSeq;
    this.trimEpochValue = trimEpoch;
    for (const g of groups) this.append(g);
  }

  get trimSeq(): number {
    return this.trimSeqValue;
  }

  get lastSeq(): number {
    return this.trimSeqValue + this.groups.length;
  }

  get lastEpoch(): number {
    return this.groups.length === 0 ? this.trimEpochValue : this.groups[this.groups.length - 1]!.epoch;
  }

  get length(): number {
    return this.groups.length;
  }

  get bytes(): number {
    return this.bytesValue;
  }

  /** Epoch of the group at `seq`, or undefined when it is not held (trimmed below, or beyond the end). */
  epochAt(seq: number): number | undefined {
    if (seq === this.trimSeqValue) return this.trimEpochValue;
    const g = this.get(seq);
    return g === undefined ? undefined : g.epoch;
  }

  get(seq: number): LogGroup | undefined {
    if (seq <= this.trimSeqValue || seq > this.lastSeq) return undefined;
    return this.groups[seq - this.trimSeqValue - 1];
  }

  /** The last sequence number whose group has an epoch below `epoch` (or `trimSeq` if none is held). */
  lastSeqBeforeEpoch(epoch: number): number {
    for (let k = this.groups.length - 1; k >= 0; k--) {
      if (this.groups[k]!.epoch < epoch) return this.trimSeqValue + k + 1;
    }
    return this.trimSeqValue;
  }

  append(group: LogGroup): void {
    assertReplication(group.seq === this.lastSeq + 1, `log: append ${group.seq} after ${this.lastSeq}`);
    assertReplication(group.epoch >= this.lastEpoch, `log: group ${group.seq} epoch ${group.epoch} below ${this.lastEpoch}`);
    const size = groupBytes(group);
    this.groups.push(group);
    this.sizes.push(size);
    this.bytesValue += size;
  }

  /** Groups from `fromSeq` on, at most `maxGroups` and about `maxBytes` (at least one group). */
  slice(fromSeq: number, maxGroups: number, maxBytes: number): LogGroup[] {
    assertReplication(fromSeq > this.trimSeqValue, `log: slice from ${fromSeq} at or below trim ${this.trimSeqValue}`);
    const out: LogGroup[] = [];
    let bytes = 0;
    for (let seq = fromSeq; seq <= this.lastSeq && out.length < maxGroups; seq++) {
      const k = seq - this.trimSeqValue - 1;
      const size = this.sizes[k]!;
      if (out.length > 0 && bytes + size > maxBytes) break;
      out.push(this.groups[k]!);
      bytes += size;
    }
    return out;
  }

  /** Drops the groups after `seq` (seq ≥ trimSeq). */
  truncateAfter(seq: number): void {
    assertReplication(seq >= this.trimSeqValue, `log: truncate after ${seq} below trim ${this.trimSeqValue}`);
    const keep = seq - this.trimSeqValue;
    if (keep >= this.groups.length) return;
    for (let k = keep; k < this.groups.length; k++) this.bytesValue -= this.sizes[k]!;
    this.groups.length = keep;
    this.sizes.length = keep;
  }

  /** Forgets the groups up to and including `seq` (seq ≤ lastSeq). */
  trimThrough(seq: number): void {
    if (seq <= this.trimSeqValue) return;
    assertReplication(seq <= this.lastSeq, `log: trim through ${seq} beyond last ${this.lastSeq}`);
    const n = seq - this.trimSeqValue;
    this.trimEpochValue = this.groups[n - 1]!.epoch;
    for (let k = 0; k < n; k++) this.bytesValue -= this.sizes[k]!;
    this.groups.splice(0, n);
    this.sizes.splice(0, n);
    this.trimSeqValue = seq;
  }

  /** Empties the log: the data now holds every group through `seq` (of epoch `epoch`). */
  reset(seq: number, epoch: number): void {
    this.groups = [];
    this.sizes = [];
    this.bytesValue = 0;
    this.trimSeqValue = seq;
    this.trimEpochValue = epoch;
  }

  /** Bytes held by the groups after `seq`. */
  bytesAfter(seq: number): number {
    let n = 0;
    for (let k = Math.max(0, seq - this.trimSeqValue); k < this.sizes.length; k++) n += this.sizes[k]!;
    return n;
  }

  /** The lowest seq ≥ fromSeq (and ≤ limitSeq) after which the log holds at most maxBytes. */
  keepAtMostBytes(fromSeq: number, maxBytes: number, limitSeq: number): number {
    let seq = Math.max(fromSeq, this.trimSeqValue);
    let kept = this.bytesAfter(seq);
    while (kept > maxBytes && seq < limitSeq) {
      seq++;
      kept -= this.sizes[seq - this.trimSeqValue - 1]!;
    }
    return seq;
  }

  /**
   * Where to trim: keep the last `keepGroups` groups up to `limitSeq` (committed and applied) for
   * lagging replicas, fewer if they hold more than `maxBytes`; never past `limitSeq`.
   */
  trimPointFor(limitSeq: number, keepGroups: number, maxBytes: number): number {
    let target = limitSeq - keepGroups;
    // Bytes bound: trim further (but never past limitSeq) while the kept window is too large.
    const seq = this.keepAtMostBytes(target, maxBytes, limitSeq);
    target = Math.max(target, seq);
    return Math.min(target, limitSeq);
  }
}
