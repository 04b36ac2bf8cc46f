// Names over the generated contract types (src/generated/protocol.ts is generated, never edited).
import type { JobCreate } from "./generated/protocol";

export type {
  Agent,
  AgentUpdate,
  Assignment,
  AssignmentList,
  AssignmentStatus,
  Device,
  DevicePatch,
  DeviceUpdateBroadcast,
  DeviceState,
  ErrorBody,
  ErrorDetail,
  FleetStats,
  Job,
  JobCreate,
  JobDeleted,
  JobFilters,
  JobList,
  JobPatch,
  JobStatus,
  JobStatusUpdate,
  PauseChanged,
  Stats,
  TargetType,
} from "./generated/protocol";
export { EVENTS, STEP_TYPES } from "./generated/protocol";

export type Step = JobCreate["plan"][number];
export type StepType = NonNullable<Step["type"]>;
