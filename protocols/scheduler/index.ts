export { DEFAULT_SCHEDULER_CONFIG, isFinishedState, Scheduler, validateSchedulerConfig, type Decision, type SchedulerConfig, type TaskSpec, type TaskState, type TaskStatus, type WorkerInfo } from './scheduler.js';
export { Autoscaler, DEFAULT_AUTOSCALER_POLICY, validateAutoscalerPolicy, type AutoscalerPolicy, type LoadSample, type ScaleDecision } from './autoscaler.js';
export { MAX_PAYLOAD_BYTES, parseTaskSubmission, TASK_DEFAULTS, TaskInputError, type TaskSubmission } from './task-spec.js';
