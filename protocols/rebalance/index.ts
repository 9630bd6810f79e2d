export { TokenBucket } from './rate-limit.js';
export { decideResume, TransferTracker, type ResumeDecision, type TransferProgress } from './transfer.js';
export { planMoves, type ChosenMove, type MoveCandidate, type MoveInFlight, type MoveLimits, type MovePlan } from './planner.js';
