// Pure UI logic (no DOM, no network): unit-tested in logic.test.ts.
import type { Device, ErrorDetail, Job, JobFilters, JobStatus, Step, StepType, TargetType } from "./types";

/** Counts a progress line needs; both a Job and a JobStatusUpdate have them. */
export interface Progress {
  target_count: number | null;
  assigned_count: number;
  completed_count: number;
  failed_count: number;
  running_count?: number;
  paused_count?: number;
}

export function progressOf(p: Progress): { done: number; total: number; percent: number } {
  const done = p.completed_count + p.failed_count;
  const total = p.target_count ?? p.assigned_count;
  const percent = total > 0 ? Math.min(100, Math.floor((done * 100) / total)) : 0;
  return { done, total, percent };
}

/** "15/20 phones (75%)". */
export function progressText(p: Progress): string {
  const { done, total, percent } = progressOf(p);
  return `${done}/${total} ${total === 1 ? "phone" : "phones"} (${percent}%)`;
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

function host(url: string): string {
  try {
    return new URL(url).host || url;
  } catch {
    return url;
  }
}

function lastPart(path: string): string {
  try {
    const p = new URL(path).pathname;
    return p.split("/").filter(Boolean).pop() ?? path;
  } catch {
    return path;
  }
}

/** One step in words: "Open example.com for 60 s". */
export function describeStep(step: Step | Record<string, unknown>): string {
  const s = step as Record<string, unknown>;
  switch (s.type) {
    case "open_url": {
      const d = Number(s.duration_sec ?? 0);
      return `Open ${host(String(s.url ?? ""))}${d > 0 ? ` for ${d} s` : ""}`;
    }
    case "launch_app":
      return `Launch ${String(s.package ?? "")}`;
    case "stop_app":
      return `Stop ${String(s.package ?? "")}`;
    case "install_apk":
      return `Install ${lastPart(String(s.url ?? ""))}`;
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
export function duration(startIso: string | null | undefined, endIso: string | null | undefined, now = Date.now()):
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

export function jobsByNewest<T extends { id: number }>(jobs: Iterable<T>): T[] {
  return [...jobs].sort((a, b) => b.id - a.id);
}
