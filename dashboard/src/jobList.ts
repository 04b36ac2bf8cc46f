// What the job list's columns say and how it sorts (pure: unit-tested in jobList.test.ts).
// Times are taken from clock.ts's now(), which stops while the page is offline, so nothing stale reads as live.
import { clockNow } from "./clock";
import { agoText, duration, secondsText } from "./logic";
import type { Job } from "./types";

type Timed = Pick<Job, "status" | "created_at" | "activated_at" | "finished_at" | "target_count" |
  "assigned_count" | "completed_count" | "failed_count">;

export type JobSort = "created" | "priority" | "status";
export const JOB_SORTS: JobSort[] = ["created", "priority", "status"];
export const SORT_LABELS: Record<JobSort, string> = {
  created: "Newest first", priority: "Priority (highest first)", status: "Status",
};

/** Created time, short: "14:03:07" today, "Nov 29 14:03" earlier. */
export function createdText(iso: string, now = clockNow()): string {
  const d = new Date(iso);
  if (!Number.isFinite(d.getTime())) return "–";
  const pad = (n: number) => String(n).padStart(2, "0");
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  if (new Date(now).toDateString() === d.toDateString()) return `${time}:${pad(d.getSeconds())}`;
  return `${d.toLocaleString("en", { month: "short" })} ${d.getDate()} ${time}`;
}

/** How long ago the job was created: "just now", "3 min ago". */
export function ageText(job: Pick<Job, "created_at">, now = clockNow()): string {
  return agoText(job.created_at, now) || "–";
}

/** Started (activated) to ended, or so far while it runs; "–" before it started. */
export function durationText(job: Timed, now = clockNow()): string {
  return duration(job.activated_at, job.finished_at, now) ?? "–";
}

/** Seconds left for an active job, from the runs ended so far per second since it started; null when unknown. */
export function etaSec(job: Timed, now = clockNow()): number | null {
  if (job.status !== "active" || !job.activated_at) return null;
  const total = job.target_count ?? 0;
  const ended = job.completed_count + job.failed_count;
  const elapsed = (now - Date.parse(job.activated_at)) / 1000;
  if (!total || ended <= 0 || !(elapsed > 0)) return null;
  const left = Math.max(0, total - ended);
  return left / (ended / elapsed);
}

/** "ETA 2 min 5 s" for an active job, "ETA –" when it cannot be estimated yet; "" for any other status. */
export function etaText(job: Timed, now = clockNow()): string {
  if (job.status !== "active") return "";
  const eta = etaSec(job, now);
  return `ETA ${eta === null ? "–" : secondsText(eta)}`;
}

/** Runs a cancelled job's cancel ended (assigned but not ended), and the slots that never started. */
export function cancelledRuns(job: Timed): { cancelled: number; neverStarted: number } {
  const cancelled = Math.max(0, job.assigned_count - job.completed_count - job.failed_count);
  const neverStarted = Math.max(0, (job.target_count ?? job.assigned_count) - job.assigned_count);
  return { cancelled, neverStarted };
}

/** "3 runs cancelled · 7 never started" for a cancelled job; "" otherwise. */
export function cancelledText(job: Timed): string {
  if (job.status !== "cancelled") return "";
  const { cancelled, neverStarted } = cancelledRuns(job);
  const runs = `${cancelled} ${cancelled === 1 ? "run" : "runs"} cancelled`;
  return neverStarted ? `${runs} · ${neverStarted} never started` : runs;
}

/** Live work first, then waiting, then ended. */
const STATUS_ORDER: Record<string, number> = {
  active: 0, paused: 1, scheduled: 2, blocked: 3, completed: 4, cancelled: 5,
};

/** The jobs in the chosen order; ties go newest first. */
export function sortJobs<T extends Pick<Job, "id" | "priority" | "status">>(jobs: Iterable<T>, by: JobSort): T[] {
  const newest = (a: T, b: T) => b.id - a.id;
  const list = [...jobs];
  if (by === "priority") return list.sort((a, b) => b.priority - a.priority || newest(a, b));
  if (by === "status") {
    return list.sort((a, b) => (STATUS_ORDER[a.status] ?? 9) - (STATUS_ORDER[b.status] ?? 9) || newest(a, b));
  }
  return list.sort(newest);
}

const SORT_KEY = "phonefleet.jobSort";

export function parseSort(v: string | null | undefined): JobSort {
  return JOB_SORTS.includes(v as JobSort) ? (v as JobSort) : "created";
}

/** The sort remembered in localStorage (any failure: the default). */
export function loadSort(storage: Pick<Storage, "getItem"> | undefined = globalThis.localStorage): JobSort {
  try {
    return parseSort(storage?.getItem(SORT_KEY));
  } catch {
    return "created";
  }
}

export function saveSort(by: JobSort, storage: Pick<Storage, "setItem"> | undefined = globalThis.localStorage): void {
  try {
    storage?.setItem(SORT_KEY, by);
  } catch {
    // private mode or full: the sort just is not remembered
  }
}
