// Pure UI logic (no DOM, no network): unit-tested in logic.test.ts.
import type { Device, ErrorDetail, Job, JobFilters, JobStatus, Step, StepType, TargetType } from "./types";
import { clockNow } from "./clock";

/** Counts a progress line needs; both a Job and a JobStatusUpdate have them. */
export interface Progress {
  target_count: number | null;
  assigned_count: number;
  completed_count: number;
  failed_count: number;
  running_count?: number;
  paused_count?: number;
}

/** The phone count a target resolves to now (as the server does: percentage = ceil, at least 1). */
export function expectedPhones(type: TargetType, value: number | null, eligible: number): number {
  if (type === "all_devices") return eligible;
  if (value === null || !Number.isFinite(value) || value < 1) return 0;
  if (type === "percentage") {
    if (eligible === 0) return 0;
    return Math.max(1, Math.ceil((Math.min(value, 100) * eligible) / 100));
  }
  return Math.floor(value);
}

export const CONNECTED_STATES: ReadonlySet<string> = new Set(["idle", "busy", "paused", "unhealthy"]);

export function isConnected(d: Device): boolean {
  return CONNECTED_STATES.has(d.state);
}

/** Phones a new job could take now: connected, healthy, not paused, matching the filters. */
export function eligibleDevices(devices: Iterable<Device>, filters: JobFilters): number {
  let n = 0;
  for (const d of devices) {
    if (d.state !== "idle" && d.state !== "busy") continue;
    if (filters.models?.length && !filters.models.includes(d.model ?? "")) continue;
    if (filters.android_versions?.length && !filters.android_versions.includes(d.android_version ?? "")) continue;
    if (filters.tags?.length && !filters.tags.every((t) => d.tags.includes(t))) continue;
    n += 1;
  }
  return n;
}

/** "a, b ,, c" -> ["a", "b", "c"]; empty -> null (no filter). */
export function parseList(text: string): string[] | null {
  const items = text.split(",").map((s) => s.trim()).filter((s) => s.length > 0);
  return items.length ? items : null;
}

export type PresetId = "open_url" | "launch_app" | "install_apk" | "screenshot" | "custom";

export interface PresetValues {
  url: string;
  duration_sec: string;
  package: string;
  apk_url: string;
}

export const PRESETS: { id: PresetId; label: string }[] = [
  { id: "open_url", label: "Open a URL for N seconds" },
  { id: "launch_app", label: "Launch an app" },
  { id: "install_apk", label: "Install an APK" },
  { id: "screenshot", label: "Take a screenshot" },
  { id: "custom", label: "Custom step list" },
];

/** The plan a preset makes; numbers are parsed here, bad ones are left for the server to name. */
export function presetPlan(id: Exclude<PresetId, "custom">, v: PresetValues): Step[] {
  switch (id) {
    case "open_url": {
      const duration = Number(v.duration_sec);
      return [{ type: "open_url", url: v.url.trim(), duration_sec: v.duration_sec.trim() === "" ? 0 : duration }];
    }
    case "launch_app":
      return [{ type: "launch_app", package: v.package.trim() }];
    case "install_apk":
      return [{ type: "install_apk", url: v.apk_url.trim() }];
    case "screenshot":
      return [{ type: "screenshot" }];
  }
}

/**
 * A full web address: "http://" or "https://", a host, and nothing the browser cannot parse. The auto-title
 * and the form's check both use it, so text that is not one never becomes a title.
 */
export function isHttpUrl(text: string): boolean {
  const t = text.trim();
  if (!/^https?:\/\/[^\s/?#]+/i.test(t) || /\s/.test(t)) return false;
  try {
    const u = new URL(t);
    return (u.protocol === "http:" || u.protocol === "https:") && u.hostname !== "";
  } catch {
    return false;
  }
}

/** The host to name in a title, or null when the text is no full web address. */
function host(url: string): string | null {
  return isHttpUrl(url) ? new URL(url.trim()).host : null;
}

/** The file an address names ("app.apk"), the address itself when it names none; null when it is no address. */
function lastPart(url: string): string | null {
  if (!isHttpUrl(url)) return null;
  return new URL(url.trim()).pathname.split("/").filter(Boolean).pop() ?? url.trim();
}

/** One step in words: "Open example.com for 60 s". */
export function describeStep(step: Step | Record<string, unknown>): string {
  const s = step as Record<string, unknown>;
  switch (s.type) {
    case "open_url": {
      const d = Number(s.duration_sec ?? 0);
      return `Open ${host(String(s.url ?? "")) ?? "a web page"}${d > 0 ? ` for ${d} s` : ""}`;
    }
    case "launch_app":
      return `Launch ${String(s.package ?? "")}`;
    case "stop_app":
      return `Stop ${String(s.package ?? "")}`;
    case "install_apk":
      return `Install ${lastPart(String(s.url ?? "")) ?? "an APK"}`;
    case "screenshot":
      return "Take a screenshot";
    case "wait":
      return `Wait ${Number(s.duration_sec ?? 0)} s`;
    default:
      return String(s.type ?? "step");
  }
}

/** A job title made from its plan. */
export function defaultTitle(plan: (Step | Record<string, unknown>)[]): string {
  if (!plan.length) return "";
  const first = describeStep(plan[0]);
  const more = plan.length - 1;
  return (more > 0 ? `${first} + ${more} more ${more === 1 ? "step" : "steps"}` : first).slice(0, 200);
}

/** Fields each step type needs, for the custom step editor (the server validates the rest). */
export const STEP_TEMPLATES: Record<StepType, Record<string, unknown>> = {
  open_url: { url: "https://example.com", duration_sec: 10 },
  wait: { duration_sec: 5 },
  tap: { x: 100, y: 100 },
  swipe: { x1: 100, y1: 800, x2: 100, y2: 200 },
  keyevent: { key: "KEYCODE_HOME" },
  text: { text: "hello" },
  launch_app: { package: "com.android.settings" },
  stop_app: { package: "com.android.settings" },
  install_apk: { url: "https://example.com/app.apk" },
  run_tests: { runner: "com.example.test/androidx.test.runner.AndroidJUnitRunner" },
  screenshot: {},
  shell: { command: "getprop ro.product.model" },
};

/** Server field errors (``error.details[].field``) keyed by field path, first message wins. */
export function fieldErrors(details: ErrorDetail[] | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const d of details ?? []) {
    const key = d.field ?? "";
    if (!(key in out)) out[key] = d.message;
  }
  return out;
}

/**
 * Which form field a server field path belongs to: "plan.0.url" -> "plan.0" for the custom editor,
 * or the preset's own field names; "filters.models" -> "filters.models"; otherwise the top-level name.
 */
export function formFieldOf(path: string, preset: PresetId): string {
  const parts = path.split(".");
  if (parts[0] === "plan") {
    if (preset === "custom") return parts.length > 1 ? `plan.${parts[1]}` : "plan";
    // pydantic's loc for a tagged union: plan.<index>.<step type>.<field>
    const leaf = parts.length >= 4 ? parts[parts.length - 1] : "plan";
    if (preset === "install_apk" && leaf === "url") return "apk_url";
    return leaf;
  }
  if (parts[0] === "filters" && parts.length > 1) return `filters.${parts[1]}`;
  return parts[0];
}

export function groupFieldErrors(details: ErrorDetail[] | undefined, preset: PresetId): Record<string, string> {
  const out: Record<string, string> = {};
  for (const d of details ?? []) {
    const key = d.field ? formFieldOf(d.field, preset) : "";
    if (!(key in out)) out[key] = d.message;
  }
  return out;
}

export type StatusFilter = JobStatus | "all";

export function filterJobs<T extends { title: string; status: JobStatus }>(
  jobs: Iterable<T>, status: StatusFilter, search: string,
): T[] {
  const q = search.trim().toLowerCase();
  const out: T[] = [];
  for (const j of jobs) {
    if (status !== "all" && j.status !== status) continue;
    if (q && !j.title.toLowerCase().includes(q)) continue;
    out.push(j);
  }
  return out;
}

export interface Summary {
  total: number;
  running: number;
  paused: number;
  completed: number;
}

export function summarize(jobs: Iterable<Pick<Job, "status">>): Summary {
  const s: Summary = { total: 0, running: 0, paused: 0, completed: 0 };
  for (const j of jobs) {
    s.total += 1;
    if (j.status === "active") s.running += 1;
    else if (j.status === "paused") s.paused += 1;
    else if (j.status === "completed") s.completed += 1;
  }
  return s;
}

/**
 * The Jobs page's counts. While every job is loaded they are counted here (exact, and as current as the
 * rows); once the server holds more jobs than the page loaded, its counts by status (GET /api/stats) are
 * used, since the loaded page cannot know the rest.
 */
export function jobSummary(loaded: Iterable<Pick<Job, "status">>, loadedCount: number, total: number,
  counts: Record<string, number> | null): Summary {
  if (counts === null || loadedCount >= total) return summarize(loaded);
  let sum = 0;
  for (const n of Object.values(counts)) sum += n;
  return { total: sum, running: counts.active ?? 0, paused: counts.paused ?? 0, completed: counts.completed ?? 0 };
}

/** "3 s", "2 min 5 s", "1 h 2 min"; null when not started. */
export function duration(startIso: string | null | undefined, endIso: string | null | undefined, now = clockNow()):
  string | null {
  if (!startIso) return null;
  const start = Date.parse(startIso);
  const end = endIso ? Date.parse(endIso) : now;
  if (!Number.isFinite(start) || !Number.isFinite(end)) return null;
  let s = Math.max(0, Math.round((end - start) / 1000));
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  if (h) return `${h} h ${m} min`;
  if (m) return `${m} min ${s} s`;
  return `${s} s`;
}

/** Calls ``fn`` at most once per ``ms``, always with the latest state (trailing edge). */
export function throttle(fn: () => void, ms: number, schedule: (cb: () => void, ms: number) => unknown = setTimeout):
  () => void {
  let pending = false;
  return () => {
    if (pending) return;
    pending = true;
    schedule(() => {
      pending = false;
      fn();
    }, ms);
  };
}

// ---------------------------------------------------------------- scheduling and job control

/** Which operator action each job status allows (the server's JOB_ACTIONS, for showing the buttons). */
export const JOB_ACTIONS = {
  pause: new Set<JobStatus>(["scheduled", "active"]),
  resume: new Set<JobStatus>(["paused"]),
  cancel: new Set<JobStatus>(["scheduled", "active", "paused", "blocked"]),
  requeue: new Set<JobStatus>(["active", "paused", "completed"]),
} as const;

/** "all phones", "50% of phones", "3 phones". */
export function targetText(type: TargetType, value: number | null | undefined): string {
  if (type === "all_devices") return "all phones";
  if (type === "percentage") return `${value ?? "?"}% of phones`;
  return `${value ?? "?"} ${value === 1 ? "phone" : "phones"}`;
}

/** 90 -> "90 s", 300 -> "5 min", 7200 -> "2 h", 86400 -> "1 d": the largest unit that divides it. */
export function intervalText(sec: number): string {
  if (sec > 0 && sec % 86_400 === 0) return `${sec / 86_400} d`;
  if (sec > 0 && sec % 3600 === 0) return `${sec / 3600} h`;
  if (sec > 0 && sec % 60 === 0) return `${sec / 60} min`;
  return `${sec} s`;
}

/** A schedule's rule in words: "0 9 * * 1-5 (Europe/Berlin)" or "every 5 min". */
export function scheduleRule(s: { cron: string | null; timezone: string; interval_sec: number | null }): string {
  if (s.cron) return `${s.cron} (${s.timezone})`;
  if (s.interval_sec !== null) return `every ${intervalText(s.interval_sec)}`;
  return "–";
}

/** How far a time is from now, roughly: "in 5 min", "3 h ago", "now". */
export function relativeTime(iso: string, now = clockNow()): string {
  const ms = Date.parse(iso);
  if (!Number.isFinite(ms)) return "";
  const diff = Math.round((ms - now) / 1000);
  const abs = Math.abs(diff);
  if (abs < 5) return "now";
  let text: string;
  if (abs < 60) text = `${abs} s`;
  else if (abs < 3600) text = `${Math.round(abs / 60)} min`;
  else if (abs < 86_400 * 2) text = `${Math.round(abs / 3600)} h`;
  else text = `${Math.round(abs / 86_400)} d`;
  return diff > 0 ? `in ${text}` : `${text} ago`;
}

/** When something past happened, as a phrase: "just now", "5 min ago". */
export function agoText(iso: string, now = clockNow()): string {
  const text = relativeTime(iso, now);
  return text === "now" ? "just now" : text;
}

/** A figure in seconds, for run times: "0.4 s", "12 s", "2 min 5 s", "1 h 2 min"; null -> "–". */
export function secondsText(sec: number | null | undefined): string {
  if (sec === null || sec === undefined || !Number.isFinite(sec)) return "–";
  if (sec < 10) return `${Math.round(sec * 10) / 10} s`;
  return duration("1970-01-01T00:00:00Z", new Date(Math.round(sec) * 1000).toISOString()) ?? "–";
}

/** 0.9751 -> "97.5%"; null -> "–". */
export function percentText(rate: number | null | undefined): string {
  if (rate === null || rate === undefined || !Number.isFinite(rate)) return "–";
  return `${Math.round(rate * 1000) / 10}%`;
}

/** The stats window in words: 86400 -> "24 h". */
export function windowText(sec: number): string {
  if (sec % 86_400 === 0 && sec >= 2 * 86_400) return `${sec / 86_400} d`;
  if (sec % 3600 === 0) return `${sec / 3600} h`;
  return intervalText(sec);
}

const DONE: Record<string, string> = { pause: "Paused", resume: "Resumed", cancel: "Cancelled" };

function jobsWord(n: number): string {
  return `${n} ${n === 1 ? "job" : "jobs"}`;
}

/** The headline of a batch result: "Paused 2 jobs; 1 failed." */
export function batchSummary(r: { action: string; changed: number[]; failed: unknown[] }): string {
  const done = DONE[r.action] ?? r.action;
  const head = r.changed.length ? `${done} ${jobsWord(r.changed.length)}` : `No job ${done.toLowerCase()}`;
  return r.failed.length ? `${head}; ${r.failed.length} failed.` : `${head}.`;
}

/** What a requeue did: "Job #4: 3 slots requeued." */
export function requeueText(jobId: number, scope: "failed" | "all", n: number): string {
  if (n === 0) return `Job #${jobId}: nothing to requeue${scope === "failed" ? " (no failed slots)" : ""}.`;
  return `Job #${jobId}: ${n} ${n === 1 ? "slot" : "slots"} requeued.`;
}

/** Why a waiting job has not started: "blocked: job 3 failed", "starts in 5 min", "after #3, #4". */
export function waitingText(job: Pick<Job, "status" | "blocked_reason" | "run_at" | "depends_on">,
  now = Date.now()): string | null {
  if (job.status === "blocked") return job.blocked_reason ? `blocked: ${job.blocked_reason}` : "blocked";
  if (job.status !== "scheduled") return null;
  const parts: string[] = [];
  if (job.run_at && Date.parse(job.run_at) > now) parts.push(`starts ${relativeTime(job.run_at, now)}`);
  if (job.depends_on.length) parts.push(`after ${job.depends_on.map((id) => `#${id}`).join(", ")}`);
  return parts.length ? parts.join(" · ") : null;
}
