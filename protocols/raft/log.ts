/**
 * The in-memory view of one peer's Raft log: the latest snapshot, then the entries after it.
 *
 * Index bookkeeping, with s = snapshot.index:
 *
 *     s < applied ≤ applying ≤ committed ≤ lastIndex        (applied/applying may equal s)
 *     entries[k].index === s + 1 + k
 *     unstableFrom: first index not yet handed to the shell for persisting
 *
 * The whole tail after the snapshot stays in memory (the cluster map's log is small and the
 * application compacts it regularly); the shell's disk copy mirrors it through `Ready`.
 */
import { cloneConfState } from './conf-change.js';
import type { ConfState, Entry, Snapshot } from './types.js';

/** A broken Raft invariant: the core is wrong or its input was corrupted. Crashes on purpose. */
export class RaftInvariantError extends Error {
  override readonly name = 'RaftInvariantError';
}

export function assertRaft(condition: boolean, message: string): asserts condition {
  if (!condition) throw new RaftInvariantError(message);
}

export class RaftLog {
  private snapshotValue: Snapshot;
  private entries: Entry[];
  /** Highest index known committed. */
  committed: number;
  /** Highest index the shell reported applied (through `advance`). */
  applied: number;
  /** Highest index handed out in `Ready.committed` (applied or about to be). */
  applying: number;
  /** First index not yet handed out in `Ready.entries`. */
  unstableFrom: number;
  /** A snapshot received from the leader, not yet handed out in `Ready.snapshot`. */
  pendingSnapshot: Snapshot | null = null;
  /** Set at recovery when the stored commit index was beyond the last stored entry. */
  lostTail: { committed: number; lastIndex: number } | null = null;

  constructor(snapshot: Snapshot, entries: Entry[], committed: number, applied: number) {
    this.snapshotValue = snapshot;
    const kept = entries.filter((e) => e.index > snapshot.index);
    kept.forEach((e, k) => assertRaft(e.index === snapshot.index + 1 + k, `recovered entries not contiguous at ${e.index}`));
    this.entries = kept;
    // A log that lost its tail (a torn write that was never fsynced) holds less than the commit
    // index it recorded: commit only what is here; the leader sends the rest again. Refusing to
    // start instead left the peer crash-looping (issue 9, attack 8). `lostTail` tells the shell.
    const wanted = Math.max(committed, snapshot.index);
    this.committed = Math.min(wanted, this.lastIndex());
    if (wanted > this.committed) this.lostTail = { committed: wanted, lastIndex: this.lastIndex() };
    const start = Math.min(Math.max(applied, snapshot.index), this.committed);
    assertRaft(applied >= snapshot.index, `recovered applied ${applied} below the snapshot ${snapshot.index}`);
    this.applied = start;
    this.applying = start;
    this.unstableFrom = this.lastIndex() + 1;
  }

  get snapshot(): Snapshot {
    return this.snapshotValue;
  }

  firstIndex(): number {
    return this.snapshotValue.index + 1;
  }

  lastIndex(): number {
    return this.snapshotValue.index + this.entries.length;
  }

  lastTerm(): number {
    const n = this.entries.length;
    return n === 0 ? this.snapshotValue.term : this.entries[n - 1]!.term;
  }

  /** Term of the entry at `index`; undefined when compacted away or beyond the log. */
  term(index: number): number | undefined {
    const s = this.snapshotValue.index;
    if (index === s) return this.snapshotValue.term;
    if (index < s || index > this.lastIndex()) return undefined;
    return this.entries[index - s - 1]!.term;
  }

  entry(index: number): Entry | undefined {
    const s = this.snapshotValue.index;
    if (index <= s || index > this.lastIndex()) return undefined;
    return this.entries[index - s - 1];
  }

  matchTerm(index: number, term: number): boolean {
    return this.term(index) === term;
  }

  /** Raft §5.4.1: is a candidate with this last entry at least as up to date as we are? */
  isUpToDate(lastIndex: number, lastTerm: number): boolean {
    const ourTerm = this.lastTerm();
    return lastTerm > ourTerm || (lastTerm === ourTerm && lastIndex >= this.lastIndex());
  }

  /** Entries in [lo, hi), at most `maxCount`. Every index must be available (lo > snapshot index). */
  slice(lo: number, hi: number, maxCount: number): Entry[] {
    const s = this.snapshotValue.index;
    assertRaft(lo > s && hi <= this.lastIndex() + 1 && lo <= hi, `slice [${lo}, ${hi}) outside (${s}, ${this.lastIndex()}]`);
    const end = Math.min(hi, lo + maxCount);
    return this.entries.slice(lo - s - 1, end - s - 1);
  }

  /** Leader-side append of new entries right after the last one. */
  append(entries: Entry[]): void {
    for (const e of entries) {
      assertRaft(e.index === this.lastIndex() + 1, `append at ${e.index} after last ${this.lastIndex()}`);
      this.entries.push(e);
    }
  }

  /**
   * Follower-side AppendEntries. Returns the index of the last new entry, or null when the log
   * has no entry (prevIndex, prevTerm). Drops a conflicting suffix (never a committed one).
   * Sets `truncatedFrom` when entries were removed so the caller can recompute the configuration.
   */
  maybeAppend(prevIndex: number, prevTerm: number, entries: Entry[]): { lastNewIndex: number; truncatedFrom: number | null } | null {
    if (!this.matchTerm(prevIndex, prevTerm)) return null;
    const lastNewIndex = prevIndex + entries.length;
    let truncatedFrom: number | null = null;
    for (let k = 0; k < entries.length; k++) {
      const e = entries[k]!;
      assertRaft(e.index === prevIndex + 1 + k, `append entries not contiguous at ${e.index}`);
      if (e.index <= this.snapshotValue.index) continue; // already covered by our snapshot
      const ours = this.term(e.index);
      if (ours === e.term) continue;
      if (ours !== undefined) {
        assertRaft(e.index > this.committed, `conflict at committed index ${e.index} (commit ${this.committed})`);
        this.truncateAfter(e.index - 1);
        truncatedFrom = e.index;
      }
      for (let j = k; j < entries.length; j++) this.entries.push(entries[j]!);
      break;
    }
    return { lastNewIndex, truncatedFrom };
  }

  private truncateAfter(index: number): void {
    this.entries.length = index - this.snapshotValue.index;
    if (this.unstableFrom > index + 1) this.unstableFrom = index + 1;
  }

  /**
   * The largest index ≤ `index` whose term is ≤ `term`, with that term: where a follower's log
   * and a leader's may still agree (etcd's findConflictByTerm). Stops at the snapshot.
   */
  findConflictByTerm(index: number, term: number): { index: number; term: number } {
    let i = Math.min(index, this.lastIndex());
    for (; i > this.snapshotValue.index; i--) {
      const t = this.term(i)!;
      if (t <= term) return { index: i, term: t };
    }
    if (i === this.snapshotValue.index && this.snapshotValue.term <= term) return { index: i, term: this.snapshotValue.term };
    return { index: i, term: 0 };
  }

  commitTo(index: number): void {
    if (index <= this.committed) return;
    assertRaft(index <= this.lastIndex(), `commit ${index} beyond last index ${this.lastIndex()}`);
    this.committed = index;
  }

  /** Replace the whole log with a snapshot from the leader. */
  restore(snapshot: Snapshot): void {
    assertRaft(snapshot.index > this.committed, `restore at ${snapshot.index} ≤ commit ${this.committed}`);
    this.snapshotValue = { ...snapshot, config: cloneConfState(snapshot.config) };
    this.entries = [];
    this.committed = snapshot.index;
    this.applying = Math.max(this.applying, snapshot.index);
    this.unstableFrom = snapshot.index + 1;
    this.pendingSnapshot = this.snapshotValue;
  }

  /** Compact up to `index` (≤ applied) into the application's snapshot `data`. */
  compact(index: number, data: Uint8Array, config: ConfState): Snapshot {
    const term = this.term(index);
    assertRaft(term !== undefined && index > this.snapshotValue.index && index <= this.applied, `compact at ${index}`);
    assertRaft(index < this.unstableFrom, `compact at ${index} beyond persisted entries`);
    this.entries = this.entries.slice(index - this.snapshotValue.index);
    this.snapshotValue = { index, term, config: cloneConfState(config), data };
    return this.snapshotValue;
  }

  /** Entries to persist in the next Ready (not yet handed out). */
  unstableEntries(): Entry[] {
    if (this.unstableFrom > this.lastIndex()) return [];
    return this.entries.slice(this.unstableFrom - this.snapshotValue.index - 1);
  }

  /** Committed entries not yet handed out to apply, at most `maxCount`. */
  nextCommitted(maxCount: number): Entry[] {
    const lo = Math.max(this.applying, this.snapshotValue.index) + 1;
    if (lo > this.committed) return [];
    return this.slice(lo, this.committed + 1, maxCount);
  }

  hasNextCommitted(): boolean {
    return this.committed > Math.max(this.applying, this.snapshotValue.index);
  }

  /** All entries after the snapshot (tests and the configuration scan read them). */
  allEntries(): readonly Entry[] {
    return this.entries;
  }
}
