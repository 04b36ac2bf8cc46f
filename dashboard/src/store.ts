// The dashboard's state: jobs, phones and agents by id, kept current by socket events (or REST while the
// socket is down). Changes are batched: subscribers hear at most one notification per `intervalMs`, so
// a burst of events for 1,000 phones costs one render, not a thousand.
import { healthChanged, sortAttention } from "./fleetHealth";
import { isConnected, throttle } from "./logic";
import type {
  Agent, AgentUpdate, AttentionItem, Device, DeviceEvent, FleetStats, Job, JobStatusUpdate, SchedulerStatus,
  SchedulerSwitch, Stats, Team,
} from "./types";
import { sortTeams } from "./teams";

export type LinkState = "connecting" | "live" | "offline";

export class Store {
  jobs = new Map<number, Job>();
  jobsTotal = 0;
  devices = new Map<number, Device>();
  agents = new Map<number, Agent>();
  fleet: FleetStats | null = null;
  /** Jobs by status from GET /api/stats: right even when more jobs exist than the page loaded. */
  jobCounts: Record<string, number> | null = null;
  /** The last GET /api/stats: counts, and success rate and times where the server gives them. */
  stats: Stats | null = null;
  /** The last GET /api/scheduler, kept current by scheduler:update; null until known. */
  scheduler: SchedulerStatus | null = null;
  /** false once GET /api/scheduler answered 404 (a server without the switch): nothing to show. */
  schedulerAvailable = true;
  link: LinkState = "connecting";
  /** While offline: the last moment the live link gave a sign of life (ms since the epoch). */
  offlineSince: number | null = null;
  lastSync: number | null = null;
  version = 0;
  /** Bumped by every job:progress for a job (its counts may not change while its runs move): pages refetch runs. */
  jobPulse = new Map<number, number>();
  /** Bumped by schedule:changed (and a reconnect): the Schedules page re-reads the list then. */
  schedulesVersion = 0;
  /** Jobs the socket named before REST told us about them; the live layer fetches these. */
  missingJobs = new Set<number>();
  /** The fleet's battery temperature limit (GET /api/fleet/policy): above it a phone is marked hot. */
  maxTempC: number | null = null;
  /** GET /api/fleet/health's phones needing attention, worst first; null until known (or on a server without it). */
  attention: AttentionItem[] | null = null;
  /** GET /api/teams: the signed-in person's teams (an admin's: all), oldest first; null until known (or on a
   * server without teams). */
  teams: Team[] | null = null;
  private listeners = new Set<() => void>();
  private eventListeners = new Set<(e: DeviceEvent) => void>();
  readonly changed: () => void;

  constructor(intervalMs = 150, schedule?: (cb: () => void, ms: number) => unknown) {
    this.changed = throttle(() => {
      this.version += 1;
      this.listeners.forEach((fn) => fn());
    }, intervalMs, schedule);
  }

  subscribe(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** device:event entries as they arrive (a phone's page adds them to its timeline). */
  onDeviceEvent(fn: (e: DeviceEvent) => void): () => void {
    this.eventListeners.add(fn);
    return () => this.eventListeners.delete(fn);
  }

  /** Phones connected now: the server's count when it has sent one, else counted from the list. */
  get connectedPhones(): number {
    if (this.fleet) return this.fleet.connected_devices;
    let n = 0;
    for (const d of this.devices.values()) if (isConnected(d)) n += 1;
    return n;
  }

  setJobCounts(counts: Record<string, number>): void {
    this.jobCounts = counts;
    this.changed();
  }

  setStats(stats: Stats): void {
    this.stats = stats;
    this.jobCounts = stats.jobs;
    this.changed();
  }

  setScheduler(status: SchedulerStatus | null, available = true): void {
    this.scheduler = status;
    this.schedulerAvailable = available;
    this.changed();
  }

  /** schedule:changed: created, edited, deleted or fired somewhere (another dashboard, the CLI, a firing). */
  scheduleChanged(): void {
    this.schedulesVersion += 1;
    this.changed();
  }

  /** scheduler:update: stopped or started somewhere (another dashboard, the CLI); counts wait for REST. */
  schedulerSwitch(s: SchedulerSwitch): void {
    if (!this.scheduler) return;
    this.scheduler = { ...this.scheduler, running: s.running, changed_at: s.changed_at, changed_by: s.changed_by };
    this.changed();
  }

  setAttention(items: AttentionItem[] | null): void {
    this.attention = items === null ? null : sortAttention(items);
    this.changed();
  }

  setMaxTempC(limit: number | null): void {
    if (this.maxTempC !== limit) {
      this.maxTempC = limit;
      this.changed();
    }
  }

  setLink(state: LinkState): void {
    if (this.link !== state) {
      this.link = state;
      this.changed();
    }
  }

  // ---------------------------------------------------------------- whole snapshots (REST)

  replaceJobs(jobs: Job[], total: number): void {
    this.jobs = new Map(jobs.map((j) => [j.id, j]));
    this.jobsTotal = total;
    this.changed();
  }

  replaceDevices(devices: Device[]): void {
    this.devices = new Map(devices.map((d) => [d.id, d]));
    this.fleet = null; // recount from the fresh list until the server sends fleet:stats
    this.changed();
  }

  setTeams(teams: Team[] | null): void {
    this.teams = teams === null ? null : sortTeams(teams);
    this.changed();
  }

  /** One team as the server answered a change to it. */
  putTeam(team: Team): void {
    this.setTeams([...(this.teams ?? []).filter((t) => t.id !== team.id), team]);
  }

  teamDeleted(id: number): void {
    this.setTeams((this.teams ?? []).filter((t) => t.id !== id));
  }

  replaceAgents(agents: Agent[]): void {
    this.agents = new Map(agents.map((a) => [a.id, a]));
    this.changed();
  }

  putJob(job: Job): void {
    if (!this.jobs.has(job.id)) this.jobsTotal += 1;
    this.jobs.set(job.id, job);
    this.missingJobs.delete(job.id);
    this.changed();
  }

  putDevice(device: Device): void {
    this.devices.set(device.id, device);
    this.changed();
  }

  // ---------------------------------------------------------------- socket events

  jobUpdate(u: JobStatusUpdate): void {
    const job = this.jobs.get(u.job_id);
    if (!job) {
      this.missingJobs.add(u.job_id);
      this.changed();
      return;
    }
    this.jobs.set(u.job_id, {
      ...job,
      blocked_reason: u.blocked_reason ?? null,
      max_parallel: u.max_parallel ?? null,
      title: u.title,
      status: u.status,
      priority: u.priority,
      target_count: u.target_count,
      assigned_count: u.assigned_count,
      completed_count: u.completed_count,
      failed_count: u.failed_count,
      running_count: u.running_count,
      paused_count: u.paused_count,
      updated_at: u.updated_at,
    });
    this.jobPulse.set(u.job_id, (this.jobPulse.get(u.job_id) ?? 0) + 1);
    this.changed();
  }

  jobDeleted(id: number): void {
    if (this.jobs.delete(id)) this.jobsTotal = Math.max(0, this.jobsTotal - 1);
    this.missingJobs.delete(id);
    this.changed();
  }

  /** device:update: changed rows. True when the "needs attention" list may have changed with them. */
  devicesUpdate(devices: Device[]): boolean {
    let health = false;
    for (const d of devices) {
      health ||= healthChanged(this.devices.get(d.id), d, this.maxTempC);
      this.devices.set(d.id, d);
    }
    this.changed();
    return health;
  }

  /** device:event: an entry of a phone's timeline. */
  deviceEvent(e: DeviceEvent): void {
    this.eventListeners.forEach((fn) => fn(e));
  }

  fleetStats(stats: FleetStats): void {
    this.fleet = stats;
    this.changed();
  }

  /** agent:update; true when the agent moved to another team (the teams' agent counts changed with it). */
  agentUpdate(u: AgentUpdate): boolean {
    const agent = this.agents.get(u.agent_id);
    if (!agent) return false; // a new agent: the next refresh lists it
    this.agents.set(u.agent_id, {
      ...agent, name: u.name, status: u.status as Agent["status"], paused: u.paused, connected: u.connected,
      team_id: u.team_id,
    });
    this.changed();
    return u.team_id !== agent.team_id;
  }
}
