import { describe, expect, it } from "vitest";
import {
  agoText, batchSummary, defaultTitle, duration, eligibleDevices, expectedPhones, filterJobs, formFieldOf, groupFieldErrors,
  intervalText, isHttpUrl, parseList, jobSummary, percentText, presetPlan, relativeTime, requeueText, scheduleRule,
  secondsText, summarize, targetText, throttle, waitingText, windowText,
} from "./logic";
import { Store } from "./store";
import type { Device, Job, JobStatusUpdate } from "./types";

function device(id: number, over: Partial<Device> = {}): Device {
  return {
    id, serial: `s${id}`, agent_id: 1, agent_name: "pc", model: "Pixel 7", android_version: "14", tags: ["lab"],
    battery: 90, state: "idle", paused_by: null, last_seen_at: null, ...over,
  };
}

function job(id: number, over: Partial<Job> = {}): Job {
  return {
    id, title: `job ${id}`, plan: [{ type: "screenshot" }], target_type: "all_devices", target_value: null,
    target_count: 2, filters: {}, priority: 0, status: "active", timeout_sec: 60, max_retries: 0, run_at: null,
    depends_on: [], team_id: 1, assigned_count: 2, completed_count: 0, failed_count: 0, running_count: 2, paused_count: 0,
    created_at: "2024-01-01T00:00:00Z", updated_at: "2024-01-01T00:00:00Z", finished_at: null, ...over,
  };
}

describe("expected phone count", () => {
  it("rounds a percentage up, at least one", () => {
    expect(expectedPhones("percentage", 50, 4)).toBe(2);
    expect(expectedPhones("percentage", 30, 4)).toBe(2);
    expect(expectedPhones("percentage", 1, 3)).toBe(1);
    expect(expectedPhones("percentage", 100, 7)).toBe(7);
    expect(expectedPhones("percentage", 50, 0)).toBe(0);
  });
  it("takes all and counts as they are", () => {
    expect(expectedPhones("all_devices", null, 9)).toBe(9);
    expect(expectedPhones("device_count", 12, 3)).toBe(12);
    expect(expectedPhones("device_count", Number.NaN, 3)).toBe(0);
  });
  it("counts only idle or busy phones that match the filters", () => {
    const fleet = [device(1), device(2, { state: "busy", model: "SM-A" }), device(3, { state: "paused" }),
      device(4, { state: "offline" }), device(5, { android_version: "13", tags: [] })];
    expect(eligibleDevices(fleet, {})).toBe(3);
    expect(eligibleDevices(fleet, { models: ["Pixel 7"] })).toBe(2);
    expect(eligibleDevices(fleet, { android_versions: ["13"] })).toBe(1);
    expect(eligibleDevices(fleet, { tags: ["lab"] })).toBe(2);
  });
});

describe("plans and titles", () => {
  const values = { url: " https://example.com/a ", duration_sec: "60", package: "com.x.y", apk_url: "https://h/app.apk" };
  it("makes preset plans", () => {
    expect(presetPlan("open_url", values)).toEqual([{ type: "open_url", url: "https://example.com/a", duration_sec: 60 }]);
    expect(presetPlan("launch_app", values)).toEqual([{ type: "launch_app", package: "com.x.y" }]);
    expect(presetPlan("install_apk", values)).toEqual([{ type: "install_apk", url: "https://h/app.apk" }]);
    expect(presetPlan("screenshot", values)).toEqual([{ type: "screenshot" }]);
  });
  it("titles a job from its plan", () => {
    expect(defaultTitle(presetPlan("open_url", values))).toBe("Open example.com for 60 s");
    expect(defaultTitle(presetPlan("install_apk", values))).toBe("Install app.apk");
    expect(defaultTitle([{ type: "launch_app", package: "a.b" }, { type: "wait", duration_sec: 1 },
      { type: "screenshot" }])).toBe("Launch a.b + 2 more steps");
    expect(defaultTitle([])).toBe("");
  });
  it("never turns an invalid URL into a title (as tests/test_titles.py)", () => {
    for (const url of ["example.com", "not a url", "ftp://example.com/a.apk", "http:example.com", "https://", "",
      "https://exa mple.com", "javascript:alert(1)"]) {
      expect(defaultTitle([{ type: "open_url", url, duration_sec: 5 }])).toBe("Open a web page for 5 s");
      expect(defaultTitle([{ type: "install_apk", url }])).toBe("Install an APK");
      expect(isHttpUrl(url)).toBe(false);
    }
    expect(defaultTitle([{ type: "open_url", url: " HTTPS://Example.com:443/x " }])).toBe("Open example.com");
    expect(defaultTitle([{ type: "open_url", url: "https://example.com:8443/x" }])).toBe("Open example.com:8443");
    expect(defaultTitle([{ type: "install_apk", url: "https://h/" }])).toBe("Install https://h/");
    expect(isHttpUrl("http://localhost:8080/a?b#c")).toBe(true);
  });
  it("parses comma lists", () => {
    expect(parseList(" a, b ,, c ")).toEqual(["a", "b", "c"]);
    expect(parseList("  ")).toBeNull();
  });
});

describe("server field errors", () => {
  it("map to the form's fields", () => {
    expect(formFieldOf("plan.0.open_url.url", "open_url")).toBe("url");
    expect(formFieldOf("plan.0.install_apk.url", "install_apk")).toBe("apk_url");
    expect(formFieldOf("plan.2.wait.duration_sec", "custom")).toBe("plan.2");
    expect(formFieldOf("plan", "open_url")).toBe("plan");
    expect(formFieldOf("filters.models.0", "open_url")).toBe("filters.models");
    expect(formFieldOf("target_value", "open_url")).toBe("target_value");
    expect(groupFieldErrors([{ field: "priority", message: "too big" }, { field: "priority", message: "second" },
      { field: null, message: "general" }], "open_url")).toEqual({ priority: "too big", "": "general" });
  });
});

describe("job list", () => {
  const jobs = [job(1, { title: "Open Site" }), job(2, { status: "paused" }), job(3, { status: "completed" })];
  it("filters by status and title", () => {
    expect(filterJobs(jobs, "all", "").map((j) => j.id)).toEqual([1, 2, 3]);
    expect(filterJobs(jobs, "paused", "").map((j) => j.id)).toEqual([2]);
    expect(filterJobs(jobs, "all", "site").map((j) => j.id)).toEqual([1]);
  });
  it("summarizes", () => {
    expect(summarize(jobs)).toEqual({ total: 3, running: 1, paused: 1, completed: 1 });
  });

  it("takes the server's job counts once more jobs exist than were loaded", () => {
    const counts = { scheduled: 1, active: 400, paused: 7, completed: 900, cancelled: 2 };
    expect(jobSummary(jobs, 3, 3, counts)).toEqual({ total: 3, running: 1, paused: 1, completed: 1 });
    expect(jobSummary(jobs, 3, 1310, null)).toEqual({ total: 3, running: 1, paused: 1, completed: 1 });
    expect(jobSummary(jobs, 3, 1310, counts)).toEqual({ total: 1310, running: 400, paused: 7, completed: 900 });
  });
  it("formats durations", () => {
    expect(duration(null, null)).toBeNull();
    expect(duration("2024-01-01T00:00:00Z", "2024-01-01T00:02:05Z")).toBe("2 min 5 s");
    expect(duration("2024-01-01T00:00:00Z", "2024-01-01T01:02:00Z")).toBe("1 h 2 min");
  });
});

describe("scheduling", () => {
  const now = Date.parse("2024-06-01T12:00:00Z");
  it("words a schedule's rule", () => {
    expect(scheduleRule({ cron: "0 9 * * 1-5", timezone: "Europe/Berlin", interval_sec: null }))
      .toBe("0 9 * * 1-5 (Europe/Berlin)");
    expect(scheduleRule({ cron: null, timezone: "UTC", interval_sec: 45 })).toBe("every 45 s");
    expect(scheduleRule({ cron: null, timezone: "UTC", interval_sec: 300 })).toBe("every 5 min");
    expect(scheduleRule({ cron: null, timezone: "UTC", interval_sec: 7200 })).toBe("every 2 h");
    expect(scheduleRule({ cron: null, timezone: "UTC", interval_sec: 86_400 })).toBe("every 1 d");
    expect(intervalText(90)).toBe("90 s");
  });
  it("says how far a time is", () => {
    expect(relativeTime("2024-06-01T12:05:00Z", now)).toBe("in 5 min");
    expect(relativeTime("2024-06-01T09:00:00Z", now)).toBe("3 h ago");
    expect(relativeTime("2024-06-01T12:00:02Z", now)).toBe("now");
    expect(relativeTime("2024-06-05T12:00:00Z", now)).toBe("in 4 d");
    expect(relativeTime("garbage", now)).toBe("");
    expect(agoText("2024-06-01T11:59:59Z", now)).toBe("just now");
    expect(agoText("2024-06-01T11:55:00Z", now)).toBe("5 min ago");
  });
  it("says why a job waits", () => {
    const base = { run_at: null, depends_on: [] as number[], blocked_reason: null };
    expect(waitingText({ ...base, status: "blocked", blocked_reason: "job 3 failed" }, now)).toBe("blocked: job 3 failed");
    expect(waitingText({ ...base, status: "blocked" }, now)).toBe("blocked");
    expect(waitingText({ ...base, status: "scheduled", run_at: "2024-06-01T13:00:00Z", depends_on: [3, 4] }, now))
      .toBe("starts in 1 h · after #3, #4");
    expect(waitingText({ ...base, status: "scheduled" }, now)).toBeNull();
    expect(waitingText({ ...base, status: "active", depends_on: [3] }, now)).toBeNull();
  });
  it("sums up a batch and a requeue", () => {
    expect(batchSummary({ action: "pause", changed: [1, 2], failed: [] })).toBe("Paused 2 jobs.");
    expect(batchSummary({ action: "cancel", changed: [1], failed: [{}] })).toBe("Cancelled 1 job; 1 failed.");
    expect(batchSummary({ action: "resume", changed: [], failed: [{}, {}] })).toBe("No job resumed; 2 failed.");
    expect(requeueText(4, "failed", 3)).toBe("Job #4: 3 slots requeued.");
    expect(requeueText(4, "all", 1)).toBe("Job #4: 1 slot requeued.");
    expect(requeueText(4, "failed", 0)).toBe("Job #4: nothing to requeue (no failed slots).");
  });
  it("formats the performance figures", () => {
    expect(percentText(0.97514)).toBe("97.5%");
    expect(percentText(null)).toBe("–");
    expect(secondsText(0.42)).toBe("0.4 s");
    expect(secondsText(12.4)).toBe("12 s");
    expect(secondsText(125)).toBe("2 min 5 s");
    expect(secondsText(null)).toBe("–");
    expect(windowText(86_400)).toBe("24 h");
    expect(windowText(7 * 86_400)).toBe("7 d");
    expect(targetText("percentage", 50)).toBe("50% of phones");
    expect(targetText("device_count", 1)).toBe("1 phone");
    expect(targetText("all_devices", null)).toBe("all phones");
  });
});

describe("store", () => {
  function manual(): { run: () => void; schedule: (cb: () => void) => void } {
    let pending: (() => void)[] = [];
    return {
      schedule: (cb) => { pending.push(cb); },
      run: () => { const p = pending; pending = []; p.forEach((cb) => cb()); },
    };
  }

  it("throttles: a burst of events is one notification", () => {
    const clock = manual();
    let calls = 0;
    const fn = throttle(() => { calls += 1; }, 100, clock.schedule);
    for (let i = 0; i < 1000; i++) fn();
    clock.run();
    expect(calls).toBe(1);
  });

  it("merges job updates, notes unknown jobs, and counts connected phones", () => {
    const clock = manual();
    const store = new Store(100, clock.schedule);
    let heard = 0;
    store.subscribe(() => { heard += 1; });
    store.replaceJobs([job(1)], 1);
    const update: JobStatusUpdate = {
      job_id: 1, title: "job 1", status: "completed", priority: 0, target_count: 2, assigned_count: 2,
      completed_count: 2, failed_count: 0, running_count: 0, paused_count: 0, updated_at: "2024-01-01T00:01:00Z",
    };
    store.jobUpdate(update);
    store.jobUpdate({ ...update, job_id: 7 });
    expect(store.jobs.get(1)?.status).toBe("completed");
    expect(store.jobs.get(1)?.plan).toEqual([{ type: "screenshot" }]);
    expect([...store.missingJobs]).toEqual([7]);
    store.replaceDevices([device(1), device(2, { state: "offline" }), device(3, { state: "paused" })]);
    expect(store.connectedPhones).toBe(2);
    store.fleetStats({ agents_online: 1, connected_devices: 5, devices: {} });
    expect(store.connectedPhones).toBe(5);
    store.jobDeleted(1);
    expect(store.jobs.size).toBe(0);
    clock.run();
    expect(heard).toBe(1);
  });

  it("takes a blocked job's reason from the update, and clears it when the job leaves blocked", () => {
    const store = new Store(100, () => {});
    store.replaceJobs([job(1, { status: "scheduled", depends_on: [9] })], 1);
    const update: JobStatusUpdate = {
      job_id: 1, title: "job 1", status: "blocked", priority: 0, target_count: null, assigned_count: 0,
      completed_count: 0, failed_count: 0, running_count: 0, paused_count: 0, updated_at: "2024-01-01T00:01:00Z",
      blocked_reason: "job 9 was cancelled", max_parallel: 3,
    };
    store.jobUpdate(update);
    expect(store.jobs.get(1)?.blocked_reason).toBe("job 9 was cancelled");
    expect(store.jobs.get(1)?.max_parallel).toBe(3);
    expect(store.missingJobs.size).toBe(0);
    store.jobUpdate({ ...update, status: "scheduled", blocked_reason: null });
    expect(store.jobs.get(1)?.blocked_reason).toBeNull();
  });

  it("counts schedule:changed events so the Schedules page knows to re-read", () => {
    const store = new Store(100, () => {});
    expect(store.schedulesVersion).toBe(0);
    store.scheduleChanged();
    store.scheduleChanged();
    expect(store.schedulesVersion).toBe(2);
  });

  it("keeps the scheduler switch current from scheduler:update", () => {
    const store = new Store(100, () => {});
    store.schedulerSwitch({ running: false, changed_at: "2024-01-01T00:00:00Z", changed_by: "admin" });
    expect(store.scheduler).toBeNull(); // nothing known yet: the REST status comes first
    store.setScheduler({ running: true, changed_at: "2024-01-01T00:00:00Z", changed_by: null, jobs: {},
      assignments: {}, connected_agents: 1, idle_devices: 2, next_schedule: null });
    store.schedulerSwitch({ running: false, changed_at: "2024-01-01T00:05:00Z", changed_by: "admin" });
    expect(store.scheduler).toMatchObject({ running: false, changed_by: "admin", idle_devices: 2 });
  });
});
