/**
 * The leader's view of one follower (etcd's tracker.Progress), and the bounded window of append
 * messages in flight to it.
 *
 * States:
 * - probe: we do not know where the follower's log matches ours; send one append, then wait
 *   for its answer (or a heartbeat answer) before sending another.
 * - replicate: the follower matches; stream appends optimistically, at most
 *   `maxInflightAppends` unacknowledged.
 * - snapshot: the follower needs entries we compacted; an InstallSnapshot is in flight, nothing
 *   else is sent until it is acknowledged or `snapshotRetryTicks` pass.
 */
export type ProgressState = 'probe' | 'replicate' | 'snapshot';

/** A ring of the last index of each append message in flight. */
export class Inflights {
  private readonly buffer: number[];
  private start = 0;
  private count = 0;

  constructor(readonly capacity: number) {
    this.buffer = new Array<number>(capacity).fill(0);
  }

  get size(): number {
    return this.count;
  }

  full(): boolean {
    return this.count === this.capacity;
  }

  add(lastIndex: number): void {
    if (this.full()) throw new RangeError('inflights full');
    this.buffer[(this.start + this.count) % this.capacity] = lastIndex;
    this.count++;
  }

  /** Forget every message whose last index is ≤ `index` (acknowledged). */
  freeLE(index: number): void {
    while (this.count > 0 && this.buffer[this.start]! <= index) {
      this.start = (this.start + 1) % this.capacity;
      this.count--;
    }
  }

  freeFirstOne(): void {
    if (this.count === 0) return;
    this.start = (this.start + 1) % this.capacity;
    this.count--;
  }

  reset(): void {
    this.start = 0;
    this.count = 0;
  }
}

export class Progress {
  /** Highest index known to be replicated on the follower. */
  match = 0;
  /** Next index to send. */
  next: number;
  state: ProgressState = 'probe';
  /** Probe state: an append was sent and not answered yet. */
  probeSent = false;
  /** Snapshot state: the index of the snapshot in flight. */
  pendingSnapshot = 0;
  /** Snapshot state: ticks since the snapshot was sent. */
  snapshotElapsedTicks = 0;
  /** The leader's tick count when it last heard from the follower (check-quorum). */
  lastActiveTick: number;
  readonly inflights: Inflights;

  constructor(next: number, maxInflight: number, public isLearner: boolean, nowTick: number) {
    this.next = next;
    this.lastActiveTick = nowTick;
    this.inflights = new Inflights(maxInflight);
  }

  becomeProbe(): void {
    // After a snapshot the follower is at least at the snapshot index.
    if (this.state === 'snapshot') {
      this.next = Math.max(this.match + 1, this.pendingSnapshot + 1);
    } else {
      this.next = this.match + 1;
    }
    this.state = 'probe';
    this.probeSent = false;
    this.pendingSnapshot = 0;
    this.inflights.reset();
  }

  becomeReplicate(): void {
    this.state = 'replicate';
    this.next = this.match + 1;
    this.probeSent = false;
    this.pendingSnapshot = 0;
    this.inflights.reset();
  }

  becomeSnapshot(snapshotIndex: number): void {
    this.state = 'snapshot';
    this.pendingSnapshot = snapshotIndex;
    this.snapshotElapsedTicks = 0;
    this.probeSent = false;
    this.inflights.reset();
  }

  /** An accepting answer up to `index`; true when it told us something new. */
  maybeUpdate(index: number): boolean {
    let updated = false;
    if (this.match < index) {
      this.match = index;
      updated = true;
      this.probeSent = false;
    }
    this.next = Math.max(this.next, index + 1);
    return updated;
  }

  /**
   * A rejection of the append at `rejected`; `hintNext` is where the leader guesses the logs
   * agree. False when the rejection is stale (answers an older message).
   */
  maybeDecrTo(rejected: number, hintIndex: number): boolean {
    // The follower no longer holds the entry it acknowledged as `match` (it lost the tail of its
    // log: a torn write that was never fsynced). Believe it and resend from where it matches;
    // the commit index never goes back, so this only costs a resend.
    if (rejected === this.match && hintIndex < this.match) {
      this.match = Math.max(0, hintIndex);
      this.next = this.match + 1;
      this.probeSent = false;
      return true;
    }
    if (this.state === 'replicate') {
      if (rejected <= this.match) return false;
      this.next = this.match + 1;
      return true;
    }
    if (this.next - 1 !== rejected) return false;
    this.next = Math.max(Math.min(rejected, hintIndex + 1), this.match + 1, 1);
    this.probeSent = false;
    return true;
  }

  /** Sending is paused: a probe is outstanding, the window is full, or a snapshot is in flight. */
  isPaused(): boolean {
    switch (this.state) {
      case 'probe':
        return this.probeSent;
      case 'replicate':
        return this.inflights.full();
      case 'snapshot':
        return true;
    }
  }

  /** Book-keeping after sending an append whose last entry is `lastIndex` (count entries). */
  sentEntries(lastIndex: number, count: number): void {
    if (this.state === 'replicate') {
      if (count > 0) {
        this.next = lastIndex + 1;
        this.inflights.add(lastIndex);
      }
    } else if (this.state === 'probe') {
      this.probeSent = true;
    }
  }
}
