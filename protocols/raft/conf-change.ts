/**
 * Single-server membership changes: their encoding inside `conf-change` entries and their effect
 * on a `ConfState`. Applying is total and deterministic (a change that does not fit is a no-op)
 * because every peer applies each appended conf-change entry to its configuration at once, and
 * all peers must agree; validation happens when the leader accepts a proposal.
 */
import { InvalidMessageError } from '../errors.js';
import type { ConfChange, ConfChangeType, ConfState, NodeId } from './types.js';

const CONF_CHANGE_TYPES: readonly ConfChangeType[] = ['add-voter', 'add-learner', 'promote-learner', 'remove-node'];

/** Longest node id accepted anywhere in Raft, bytes (libp2p peer ids are ~52 characters). */
export const MAX_NODE_ID_LENGTH = 128;

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder('utf-8', { fatal: true });

export function isValidNodeId(id: unknown): id is NodeId {
  return typeof id === 'string' && id.length > 0 && id.length <= MAX_NODE_ID_LENGTH;
}

export function encodeConfChange(cc: ConfChange): Uint8Array {
  return textEncoder.encode(JSON.stringify({ type: cc.type, node: cc.node }));
}

/** Decodes a conf-change entry's data; throws InvalidMessageError on anything malformed. */
export function decodeConfChange(data: Uint8Array): ConfChange {
  let value: unknown;
  try {
    value = JSON.parse(textDecoder.decode(data));
  } catch {
    throw new InvalidMessageError('confChange: not JSON');
  }
  if (typeof value !== 'object' || value === null) throw new InvalidMessageError('confChange: not an object');
  const record = value as Record<string, unknown>;
  if (!CONF_CHANGE_TYPES.includes(record.type as ConfChangeType)) throw new InvalidMessageError('confChange.type: unknown');
  if (!isValidNodeId(record.node)) throw new InvalidMessageError('confChange.node: invalid node id');
  return { type: record.type as ConfChangeType, node: record.node };
}

export function cloneConfState(conf: ConfState): ConfState {
  return { voters: [...conf.voters], learners: [...conf.learners] };
}

/** Sorted copies, so that equal configurations compare and encode equally. */
export function normalizeConfState(conf: ConfState): ConfState {
  return { voters: [...new Set(conf.voters)].sort(), learners: [...new Set(conf.learners)].sort() };
}

/** Why `cc` cannot be proposed against `conf`, or null when it can. */
export function checkConfChange(conf: ConfState, cc: ConfChange): string | null {
  const isVoter = conf.voters.includes(cc.node);
  const isLearner = conf.learners.includes(cc.node);
  switch (cc.type) {
    case 'add-voter':
      return isVoter || isLearner ? 'already a member (use promote-learner for a learner)' : null;
    case 'add-learner':
      return isVoter || isLearner ? 'already a member' : null;
    case 'promote-learner':
      return isLearner ? null : 'not a learner';
    case 'remove-node':
      if (!isVoter && !isLearner) return 'not a member';
      if (isVoter && conf.voters.length === 1) return 'cannot remove the last voter';
      return null;
  }
}

/** The configuration after `cc`; a change that does not fit leaves it unchanged. */
export function applyConfChange(conf: ConfState, cc: ConfChange): ConfState {
  if (checkConfChange(conf, cc) !== null) return conf;
  const voters = conf.voters.filter((id) => id !== cc.node);
  const learners = conf.learners.filter((id) => id !== cc.node);
  switch (cc.type) {
    case 'add-voter':
    case 'promote-learner':
      voters.push(cc.node);
      break;
    case 'add-learner':
      learners.push(cc.node);
      break;
    case 'remove-node':
      break;
  }
  return normalizeConfState({ voters, learners });
}
