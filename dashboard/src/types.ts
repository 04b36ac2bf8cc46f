// Names over the generated contract types (src/generated/protocol.ts is generated, never edited).
import type { JobCreate } from "./generated/protocol";

export type {
  Agent,
  AgentUpdate,
  Assignment,
  AssignmentList,
  AssignmentStatus,
  BatchAction,
  BatchFailure,
  Device,
  DevicePatch,
  DeviceUpdateBroadcast,
  DeviceState,
  DurationStats,
  ErrorBody,
  ErrorDetail,
  FleetStats,
  Job,
  JobCreate,
  JobBatch,
  JobBatchResult,
  JobDeleted,
  JobFilters,
  JobList,
  JobPatch,
  JobStatus,
  JobStatusUpdate,
  JobTemplate,
  MisfirePolicy,
  PauseChanged,
  RequeueResult,
  RequeueScope,
  Schedule,
  ScheduleChanged,
  ScheduleCreate,
  ScheduleList,
  SchedulePatch,
  SchedulerStatus,
  SchedulerSwitch,
  Stats,
  TargetType,
} from "./generated/protocol";
export { EVENTS, STEP_TYPES } from "./generated/protocol";

export type Step = JobCreate["plan"][number];
export type StepType = NonNullable<Step["type"]>;
