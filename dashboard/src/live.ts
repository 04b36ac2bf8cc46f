// Live link: the /dashboard socket feeds the store; while it is down the page says so and refreshes
// over REST every few seconds, and socket.io keeps trying to reconnect (it recovers by itself).
import { io, type Socket } from "socket.io-client";
import type { Api } from "./api";
import { freezeClock } from "./clock";
import { throttle } from "./logic";
import type { Store } from "./store";
import type { ApiError } from "./api";
import {
  EVENTS, type AgentUpdate, type DeviceEvent, type DeviceUpdateBroadcast, type FleetStats, type JobDeleted,
  type JobStatusUpdate, type PauseChanged, type ScheduleChanged, type SchedulerSwitch,
} from "./types";

export const POLL_MS = 3000;
/** Job counts (GET /api/stats) are refetched at most this often while job statuses change. */
export const STATS_MS = 1000;
/** The scheduler panel's counts and next schedule due are refetched at most this often while jobs change. */
export const SCHEDULER_MS = 5000;
/** The "needs attention" list (GET /api/fleet/health) is refetched at most this often while phones' health changes. */
export const ATTENTION_MS = 1000;
/** The page's own heartbeat: a dashboard:ping this often while the socket is up ... */
export const PING_MS = 1000;
/** ... and the link counts as lost when nothing (an ack or any event) came back for this long. */
export const DEAD_MS = 2000;

export class Live {
  socket: Socket | null = null;
  private poller: ReturnType<typeof setInterval> | null = null;
  private retry: ReturnType<typeof setTimeout> | null = null;
  private fetching = false;
  private stopped = false;
  private heartbeat: ReturnType<typeof setInterval> | null = null;
  /** When the server last gave a sign of life on the socket (an ack or any event). */
  private aliveAt = 0;
  onPause: ((p: PauseChanged) => void) | null = null;
  private readonly statsSoon = throttle(() => void this.refreshStats(), STATS_MS);
  private readonly schedulerSoon = throttle(() => void this.refreshScheduler(), SCHEDULER_MS);
  private readonly attentionSoon = throttle(() => void this.refreshAttention(), ATTENTION_MS);
  /** false once GET /api/fleet/health answered 404 (a server without fleet health): no panel. */
  private healthAvailable = true;

  constructor(private api: Api, private store: Store, private url = "") {}

  start(): void {
    this.stopped = false;
    void this.refresh();
    const socket = io(`${this.url}${EVENTS.DASHBOARD_NAMESPACE}`, {
      transports: ["websocket", "polling"],
      reconnectionDelay: 1000,
      reconnectionDelayMax: 3000,
      timeout: 5000, // a server that accepts but never answers the handshake is tried again soon
    });
    this.socket = socket;
    socket.onAny(() => this.alive());
    socket.on("connect", () => {
      this.alive();
      this.startHeartbeat();
      freezeClock(null);
      this.store.setLink("live");
      this.stopPolling();
      this.store.scheduleChanged();
      void this.refresh(); // catch up on whatever changed while we were away
    });
    socket.on("disconnect", (reason) => {
      this.lost();
      if (reason === "io server disconnect") this.reconnectLater(); // the server closed it: no auto-retry
    });
    socket.on("connect_error", () => {
      this.lost();
      if (!socket.active) this.reconnectLater(); // refused by the namespace: socket.io will not retry
    });
    socket.on(EVENTS.JOB_STATUS_UPDATE, (u: JobStatusUpdate) => {
      this.jobUpdate(u);
      this.statsSoon();
      this.schedulerSoon();
    });
    socket.on(EVENTS.JOB_PROGRESS, (u: JobStatusUpdate) => this.jobUpdate(u));
    socket.on(EVENTS.JOB_DELETED, (d: JobDeleted) => {
      this.store.jobDeleted(d.job_id);
      this.statsSoon();
      this.schedulerSoon();
    });
    socket.on(EVENTS.SCHEDULE_CHANGED, (_c: ScheduleChanged) => {
      this.store.scheduleChanged();
      this.schedulerSoon(); // the top bar's "next schedule due"
    });
    socket.on(EVENTS.SCHEDULER_UPDATE, (s: SchedulerSwitch) => {
      this.store.schedulerSwitch(s);
      void this.refreshScheduler();
    });
    socket.on(EVENTS.DASHBOARD_DEVICE_UPDATE, (d: DeviceUpdateBroadcast) => {
      if (this.store.devicesUpdate(d.devices)) this.attentionSoon();
    });
    socket.on(EVENTS.DEVICE_EVENT, (e: DeviceEvent) => {
      this.store.deviceEvent(e);
      this.attentionSoon();
    });
    socket.on(EVENTS.FLEET_STATS, (s: FleetStats) => this.store.fleetStats(s));
    socket.on(EVENTS.AGENT_UPDATE, (a: AgentUpdate) => {
      if (!this.store.agents.has(a.agent_id)) void this.refreshAgents();
      if (this.store.agentUpdate(a)) {
        // moved: both teams' agent counts changed, and its phones (and their runs) join or leave this view
        void this.refreshTeams();
        void this.refresh();
      }
    });
    socket.on(EVENTS.PAUSE_CHANGED, (p: PauseChanged) => {
      this.onPause?.(p);
      if (p.scope === "agent") void this.refreshAgents();
    });
  }

  stop(): void {
    this.stopped = true;
    this.stopPolling();
    this.stopHeartbeat();
    freezeClock(null);
    if (this.retry) clearTimeout(this.retry);
    this.socket?.removeAllListeners();
    this.socket?.disconnect();
    this.socket = null;
  }

  private jobUpdate(u: JobStatusUpdate): void {
    this.store.jobUpdate(u);
    if (this.store.missingJobs.size) void this.fetchMissing();
  }

  private alive(): void {
    this.aliveAt = Date.now();
  }

  /** Every PING_MS a dashboard:ping (acked at once by the server); once DEAD_MS pass without any answer the
   * page says offline and drops the transport, so socket.io reconnects (a half-open link never says so itself). */
  private startHeartbeat(): void {
    this.stopHeartbeat();
    let last = 0;
    let tick = Date.now();
    this.heartbeat = setInterval(() => {
      const socket = this.socket;
      // a background tab runs timers late: judge the link only when this tick came on time
      const onTime = Date.now() - tick < PING_MS;
      tick = Date.now();
      if (!socket?.connected || this.stopped) return;
      if (!onTime) this.alive(); // a fresh grace: the ping below gets its full deadline
      if (onTime && Date.now() - this.aliveAt > DEAD_MS) {
        this.stopHeartbeat();
        this.lost();
        socket.io.engine?.close(); // as a closed transport: the manager reconnects with its backoff
        return;
      }
      if (Date.now() - last >= PING_MS) {
        last = Date.now();
        socket.timeout(DEAD_MS).emit(EVENTS.DASHBOARD_PING, {}, (err: unknown) => {
          if (!err) this.alive();
        });
      }
    }, 250);
  }

  private stopHeartbeat(): void {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = null;
  }

  private lost(): void {
    if (this.stopped) return;
    this.stopHeartbeat();
    if (this.store.link !== "offline") {
      this.store.offlineSince = this.aliveAt || Date.now();
      freezeClock(this.store.offlineSince); // the times shown stay those of the last live moment
    }
    this.store.setLink("offline");
    if (!this.poller) this.poller = setInterval(() => void this.refresh(), POLL_MS);
  }

  private reconnectLater(): void {
    if (this.retry || this.stopped) return;
    this.retry = setTimeout(() => {
      this.retry = null;
      if (!this.stopped && this.socket && !this.socket.connected) this.socket.connect();
    }, POLL_MS);
  }

  private stopPolling(): void {
    if (this.poller) clearInterval(this.poller);
    this.poller = null;
  }

  private async fetchMissing(): Promise<void> {
    if (this.fetching) return;
    this.fetching = true;
    try {
      while (this.store.missingJobs.size) {
        const [id] = this.store.missingJobs;
        this.store.missingJobs.delete(id);
        try {
          this.store.putJob(await this.api.job(id));
        } catch {
          /* deleted meanwhile, or offline: the next refresh settles it */
        }
      }
    } finally {
      this.fetching = false;
    }
  }

  async refreshStats(): Promise<void> {
    if (this.stopped) return;
    try {
      this.store.setStats(await this.api.stats());
    } catch {
      /* shown by the link state */
    }
  }

  /** GET /api/scheduler; a server that answers 404 has no switch, and the panel is not shown. */
  async refreshScheduler(): Promise<void> {
    if (this.stopped || !this.store.schedulerAvailable) return;
    try {
      this.store.setScheduler(await this.api.scheduler());
    } catch (e) {
      if ((e as ApiError).status === 404) this.store.setScheduler(null, false);
    }
  }

  /** GET /api/fleet/health: the "needs attention" list; a server that answers 404 has none, and no panel shows. */
  async refreshAttention(): Promise<void> {
    if (this.stopped || !this.healthAvailable) return;
    try {
      this.store.setAttention((await this.api.fleetHealth()).attention);
    } catch (e) {
      if ((e as ApiError).status === 404) {
        this.healthAvailable = false;
        this.store.setAttention(null);
      }
    }
  }

  /** The fleet's temperature limit, for marking hot phones (the policy is not pushed: read on each refresh). */
  async refreshPolicy(): Promise<void> {
    if (this.stopped || !this.healthAvailable) return;
    try {
      this.store.setMaxTempC((await this.api.fleetPolicy()).thresholds.max_battery_temp_c ?? null);
    } catch {
      /* an older server, or offline: hot phones are still marked by their agents' reasons */
    }
  }

  /** GET /api/teams; a server without teams (404) leaves the store's null: no team names or pickers show. */
  async refreshTeams(): Promise<void> {
    if (this.stopped) return;
    try {
      this.store.setTeams(await this.api.teams());
    } catch {
      /* a server without teams, or offline: the next refresh tries again */
    }
  }

  async refreshAgents(): Promise<void> {
    try {
      this.store.replaceAgents(await this.api.agents());
    } catch {
      /* shown by the link state */
    }
  }

  /** Everything over REST: at start, on (re)connect, and every few seconds while the socket is down. */
  async refresh(): Promise<void> {
    try {
      const [jobs, devices, agents, stats] = await Promise.all([
        this.api.jobs(), this.api.devices(), this.api.agents(), this.api.stats(),
      ]);
      this.store.setStats(stats);
      this.store.replaceJobs(jobs.items, jobs.total);
      this.store.replaceDevices(devices);
      this.store.replaceAgents(agents);
      this.store.lastSync = Date.now();
      this.store.changed();
    } catch {
      /* the banner already says the link is down; the poller tries again */
    }
    await Promise.all([this.refreshScheduler(), this.refreshPolicy().then(() => this.refreshAttention()),
      this.refreshTeams()]);
  }
}
