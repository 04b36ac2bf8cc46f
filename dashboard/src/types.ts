// Names over the generated contract types (src/generated/protocol.ts is generated, never edited).
import type { JobCreate } from "./generated/protocol";

export type {
  Agent,
  AuditActor,
  AuditEvent,
  AuditPage,
  Artifact,
  ArtifactKind,
  ArtifactPage,
  AgentUpdate,
  Assignment,
  AttentionItem,
  AssignmentList,
  AssignmentStatus,
  BatchAction,
  BatchFailure,
  Device,
  DeviceDetail,
  DeviceEvent,
  DeviceEventKind,
  DeviceEventList,
  DeviceHealth,
  DevicePatch,
  DeviceUpdateBroadcast,
  DeviceState,
  FrameMeta,
  KeyeventInput,
  RotateInput,
  ScreenSession,
  SwipeInput,
  TapInput,
  TextInput,
  DurationStats,
  ErrorBody,
  ErrorDetail,
  FleetHealthReport,
  FleetPolicy,
  FleetStats,
  HealthThresholds,
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
  RecoverAccepted,
  RecoveryRung,
  Reliability,
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

// The teams contract (CONTEXT15: protocol/teams.py), until the generated types carry it.
export interface Team {
  id: number;
  name: string;
  /** Person names. */
  members: string[];
  /** How many agents (and so their phones) the team holds. */
  agents: number;
  created_at?: string | null;
}
export interface TeamCreate {
  name: string;
}
export interface TeamPatch {
  name: string;
}
