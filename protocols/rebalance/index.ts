export { TokenBucket } from './rate-limit.js';
export { decideResume, TransferTracker, type ResumeDecision, type TransferProgress } from './transfer.js';
