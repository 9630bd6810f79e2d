/**
 * Which Raft messages a peer acts on (issue 9): a pure rule over the sender's identity (the
 * Noise-authenticated peer id, never a field the sender chose), the receiver's configuration
 * and what it knows of its peers. The node calls it before `RaftNode.step`; the simulation calls
 * it on every delivery, with strangers forging every kind of message (Byzantine mode).
 *
 * - A sender in the receiver's configuration (voter or learner) is heard.
 * - The receiver's configuration may lag: a voter added while it was down, or before it got any
 *   log (a new voter must still vote, or a cluster that lost its leader right after adding it
 *   cannot elect another). So a sender outside it is heard too when the receiver knows it:
 *   - a member of its committed cluster map is heard on anything;
 *   - a peer alive in its membership (by its own signed heartbeat) is heard on a leader's
 *     messages (append, heartbeat, snapshot), and on anything while the receiver is not in its
 *     own configuration (a new or removed peer has nothing to judge by).
 * - Everything else is refused, in particular any message from a sender nobody admitted.
 * - Terms more than MAX_TERM_AHEAD beyond the receiver's are refused: with pre-vote no member's
 *   term runs ahead, and one forged term near 2^53 would otherwise end every election for good.
 */
import type { ConfState, RaftMessage } from './types.js';

export const MAX_TERM_AHEAD = 1_000_000;

export interface AdmissionContext {
  /** The receiver's current term. */
  term: number;
  /** The receiver's configuration. */
  conf: ConfState;
  /** The receiver's own id. */
  self: string;
  /** True when `id` is a member of the receiver's committed cluster map. */
  isMapMember(id: string): boolean;
  /** True when `id` is alive in the receiver's membership (its own signed heartbeats). */
  isAlive(id: string): boolean;
}

/** Why `m` is refused, or null when the receiver may step it. `m.from` must be the authenticated sender. */
export function admitRaftMessage(m: RaftMessage, ctx: AdmissionContext): string | null {
  if (m.term > ctx.term + MAX_TERM_AHEAD) return `term ${m.term} is more than ${MAX_TERM_AHEAD} ahead of ${ctx.term}`;
  const inConf = (id: string): boolean => ctx.conf.voters.includes(id) || ctx.conf.learners.includes(id);
  if (inConf(m.from)) return null;
  if (ctx.isMapMember(m.from)) return null;
  if (ctx.isAlive(m.from)) {
    const fromLeader = m.type === 'append' || m.type === 'heartbeat' || m.type === 'snapshot';
    if (fromLeader || !inConf(ctx.self)) return null;
    return 'the sender is not in the Raft configuration nor the cluster map';
  }
  return 'the sender is not in the Raft configuration, the cluster map or the membership';
}
