// REST client: calls go with the session cookie (same-origin) and, when they change something, the session's
// CSRF token; errors become ApiError with the contract's details.
import type {
  Agent, Artifact, AuditPage, ArtifactKind, ArtifactPage, AssignmentList, BatchAction, Device, DeviceDetail, DeviceEventList, ErrorBody, ErrorDetail, FleetHealthReport,
  FleetPolicy, Job, JobBatchResult, JobCreate, JobList, JobPatch, RecoverAccepted, RecoveryRung, RequeueResult,
  RequeueScope, Schedule, ScheduleCreate, ScheduleList, SchedulePatch, SchedulerStatus, Stats, Team, TeamCreate,
  TeamPatch,
} from "./types";
import type {
  LogcatAnswer, Person, PersonalToken, PersonalTokenCreated, Role, SessionInfo, StepTimeline,
} from "./generated/protocol";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: ErrorDetail[] = [],
  ) {
    super(message);
  }
}

type Listener = (err: ApiError) => void;

const ROLES: Role[] = ["viewer", "operator", "admin"];

/** Whether ``role`` includes ``needed`` (each role includes the one before: viewer < operator < admin). */
export function roleAtLeast(role: Role, needed: Role): boolean {
  return ROLES.indexOf(role) >= ROLES.indexOf(needed);
}

const SAFE = new Set(["GET", "HEAD", "OPTIONS"]);

export class Api {
  private unauthorized: Listener[] = [];

  constructor(public session: SessionInfo, private base = "") {}

  /** May the signed-in person do what needs ``role``? (The server checks again; this only hides buttons.) */
  can(role: Role): boolean {
    return roleAtLeast(this.session.role, role);
  }

  onUnauthorized(fn: Listener): void {
    this.unauthorized.push(fn);
  }

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.raw(method, path, body);
    if (res.status === 204) return undefined as T;
    return (await res.json()) as T;
  }

  async raw(method: string, path: string, body?: unknown): Promise<Response> {
    let res: Response;
    try {
      res = await fetch(this.base + path, {
        method,
        credentials: "same-origin",
        headers: {
          ...(SAFE.has(method) || !this.session.csrf_token ? {} : { "X-CSRF-Token": this.session.csrf_token }),
          ...(body === undefined ? {} : { "Content-Type": "application/json" }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw new ApiError(0, "network", `cannot reach the server (${(e as Error).message})`);
    }
    if (!res.ok) {
      let err: ApiError;
      try {
        const data = (await res.json()) as ErrorBody;
        err = new ApiError(res.status, data.error.code, data.error.message, data.error.details ?? []);
      } catch {
        err = new ApiError(res.status, "http_error", `${res.status} ${res.statusText}`);
      }
      if (res.status === 401) this.unauthorized.forEach((fn) => fn(err));
      throw err;
    }
    return res;
  }

  stats = () => this.request<Stats>("GET", "/api/stats");
  /** ``query`` as ``audit.auditQuery`` makes it. */
  audit = (query: string) => this.request<AuditPage>("GET", `/api/audit${query}`);
  jobs = () => this.request<JobList>("GET", "/api/jobs?limit=500");
  job = (id: number) => this.request<Job>("GET", `/api/jobs/${id}`);
  createJob = (body: JobCreate) => this.request<Job>("POST", "/api/jobs", body);
  patchJob = (id: number, body: JobPatch) => this.request<Job>("PATCH", `/api/jobs/${id}`, body);
  deleteJob = (id: number) => this.request<void>("DELETE", `/api/jobs/${id}`);
  requeueJob = (id: number, scope: RequeueScope) =>
    this.request<RequeueResult>("POST", `/api/jobs/${id}/requeue`, { scope });
  batchJobs = (action: BatchAction, ids: number[]) =>
    this.request<JobBatchResult>("POST", "/api/jobs/batch", { action, ids });
  assignments = (jobId: number) => this.request<AssignmentList>("GET", `/api/jobs/${jobId}/assignments`);
  runningAssignments = () => this.request<AssignmentList>("GET", "/api/assignments?status=running&limit=1000");
  devices = () => this.request<Device[]>("GET", "/api/devices");
  patchDevice = (id: number, paused: boolean) => this.request<Device>("PATCH", `/api/devices/${id}`, { paused });
  device = (id: number) => this.request<DeviceDetail>("GET", `/api/devices/${id}`);
  deviceEvents = (id: number, before: number | null = null, limit = 25) => this.request<DeviceEventList>(
    "GET", `/api/devices/${id}/events?limit=${limit}${before === null ? "" : `&before=${before}`}`);
  /** A phone's runs, newest first (servers before ?device_id= list everyone's: the caller keeps its own). */
  deviceRuns = (id: number, limit = 20) =>
    this.request<AssignmentList>("GET", `/api/assignments?device_id=${id}&limit=${limit}`);
  quarantineDevice = (id: number, reason: string) =>
    this.request<DeviceDetail>("POST", `/api/devices/${id}/quarantine`, { reason });
  releaseDevice = (id: number) => this.request<DeviceDetail>("POST", `/api/devices/${id}/release`);
  recoverDevice = (id: number, rung: RecoveryRung) =>
    this.request<RecoverAccepted>("POST", `/api/devices/${id}/recover`, { rung });
  fleetHealth = () => this.request<FleetHealthReport>("GET", "/api/fleet/health");
  fleetPolicy = () => this.request<FleetPolicy>("GET", "/api/fleet/policy");
  agents = () => this.request<Agent[]>("GET", "/api/agents");
  /** Moves the agent, and so its phones, to another team (admin). */
  moveAgent = (id: number, team_id: number) => this.request<Agent>("PATCH", `/api/agents/${id}`, { team_id });
  /** The caller's teams (an admin's: all). */
  teams = () => this.request<Team[]>("GET", "/api/teams");
  createTeam = (body: TeamCreate) => this.request<Team>("POST", "/api/teams", body);
  patchTeam = (id: number, body: TeamPatch) => this.request<Team>("PATCH", `/api/teams/${id}`, body);
  deleteTeam = (id: number) => this.request<void>("DELETE", `/api/teams/${id}`);
  addMember = (id: number, person: string) =>
    this.request<Team>("PUT", `/api/teams/${id}/members/${encodeURIComponent(person)}`);
  removeMember = (id: number, person: string) =>
    this.request<Team>("DELETE", `/api/teams/${id}/members/${encodeURIComponent(person)}`);
  /** Everyone's accounts (admin): the names "Add member" offers. */
  people = () => this.request<Person[]>("GET", "/api/users");
  scheduler = () => this.request<SchedulerStatus>("GET", "/api/scheduler");
  setSchedulerRunning = (running: boolean) =>
    this.request<SchedulerStatus>("POST", `/api/scheduler/${running ? "start" : "stop"}`);
  schedules = () => this.request<ScheduleList>("GET", "/api/schedules");
  createSchedule = (body: ScheduleCreate) => this.request<Schedule>("POST", "/api/schedules", body);
  patchSchedule = (id: number, body: SchedulePatch) => this.request<Schedule>("PATCH", `/api/schedules/${id}`, body);
  deleteSchedule = (id: number) => this.request<void>("DELETE", `/api/schedules/${id}`);
  runSchedule = (id: number) => this.request<Job>("POST", `/api/schedules/${id}/run`);
  steps = (assignmentId: number) => this.request<StepTimeline>("GET", `/api/assignments/${assignmentId}/steps`);
  /** ``query`` as ``runEvidence.logcatQuery`` makes it. */
  logcat = (assignmentId: number, query: string) =>
    this.request<LogcatAnswer>("GET", `/api/assignments/${assignmentId}/logcat${query}`);
  artifacts = (assignmentId: number) => this.request<Artifact[]>("GET", `/api/assignments/${assignmentId}/artifacts`);
  /** A phone's artifacts, newest first, a page at a time (``before``: the previous page's next_before). */
  deviceArtifacts = (id: number, { kind, before = null, limit = 24 }:
    { kind?: ArtifactKind; before?: number | null; limit?: number } = {}) =>
    this.request<ArtifactPage>("GET", `/api/devices/${id}/artifacts?limit=${limit}`
      + `${kind ? `&kind=${kind}` : ""}${before === null ? "" : `&before=${before}`}`);

  signOut = () => this.request<void>("DELETE", "/api/session");
  changePassword = (current_password: string, new_password: string) =>
    this.request<void>("POST", "/api/session/password", { current_password, new_password });
  tokens = () => this.request<PersonalToken[]>("GET", "/api/tokens");
  createToken = (name: string) => this.request<PersonalTokenCreated>("POST", "/api/tokens", { name });
  revokeToken = (id: number) => this.request<void>("DELETE", `/api/tokens/${id}`);

  /** A current picture of a phone's screen, at most `maxWidth` pixels wide, as an object URL (revoke it). */
  async screenThumb(deviceId: number, maxWidth: number): Promise<string> {
    const res = await this.raw("GET", `/api/devices/${deviceId}/screen?max_width=${maxWidth}`);
    return URL.createObjectURL(await res.blob());
  }

  /** An artifact's bytes (the route needs the token, so no plain <img src>): show it via an object URL. */
  async artifactUrl(assignmentId: number, name: string): Promise<string> {
    const res = await this.raw("GET", `/api/assignments/${assignmentId}/artifacts/${encodeURIComponent(name)}`);
    return URL.createObjectURL(await res.blob());
  }
}

async function errorOf(res: Response): Promise<ApiError> {
  try {
    const data = (await res.json()) as ErrorBody;
    return new ApiError(res.status, data.error.code, data.error.message, data.error.details ?? []);
  } catch {
    return new ApiError(res.status, "http_error", `${res.status} ${res.statusText}`);
  }
}

/** The session this browser's cookie holds, or null when it holds none (or it ended). */
export async function currentSession(base = ""): Promise<SessionInfo | null> {
  const res = await fetch(base + "/api/session", { credentials: "same-origin" });
  if (res.status === 401) return null;
  if (!res.ok) throw await errorOf(res);
  return (await res.json()) as SessionInfo;
}

/** Sign in with a name and password: the session, or the words to show. */
export async function signIn(name: string, password: string, base = ""): Promise<SessionInfo | string> {
  let res: Response;
  try {
    res = await fetch(base + "/api/session", {
      method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name, password }),
    });
  } catch (e) {
    return `Cannot reach the server (${(e as Error).message})`;
  }
  if (res.ok) return (await res.json()) as SessionInfo;
  const err = await errorOf(res);
  if (res.status === 401) return "Wrong name or password.";
  if (res.status === 429) return "Too many failed sign-ins: wait a while and try again.";
  return err.message;
}
