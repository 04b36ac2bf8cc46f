// What a job's progress bar and its words say (pure: unit-tested in jobProgress.test.ts).
// Failures are never progress toward success: they get their own (red) segment and their own count.
import type { Progress } from "./logic";

export interface Segments {
  done: number;
  failed: number;
  running: number;
  waiting: number;
  total: number;
}

/** The four segments of a job's bar: completed, failed, running, waiting (the rest of the target). */
export function segmentsOf(p: Progress): Segments {
  const done = Math.max(0, p.completed_count);
  const failed = Math.max(0, p.failed_count);
  const running = Math.max(0, p.running_count ?? 0);
  const total = Math.max(p.target_count ?? p.assigned_count, done + failed + running);
  return { done, failed, running, waiting: Math.max(0, total - done - failed - running), total };
}

/** Percent of the bar each segment takes (0 for an empty job), rounded to 0.1. */
export function segmentWidths(s: Segments): { done: number; failed: number; running: number; waiting: number } {
  const pct = (n: number) => (s.total > 0 ? Math.round((n * 1000) / s.total) / 10 : 0);
  return { done: pct(s.done), failed: pct(s.failed), running: pct(s.running), waiting: pct(s.waiting) };
}

/** "9 done · 1 failed · 0 running of 10". */
export function segmentsText(p: Progress): string {
  const s = segmentsOf(p);
  return `${s.done} done · ${s.failed} failed · ${s.running} running of ${s.total}`;
}

export type Outcome = "completed" | "completed with failures" | null;

/** How an ended job ended: a completed job with any failed run is "completed with failures", never plain green. */
export function outcomeOf(status: string, p: Progress): Outcome {
  if (status !== "completed") return null;
  return p.failed_count > 0 ? "completed with failures" : "completed";
}

/** The words on a job's status badge. */
export function statusLabel(status: string, p: Progress): string {
  if (status === "paused") return pauseText(p);
  return outcomeOf(status, p) ?? status;
}

/** "pausing: 10 running will finish, 0 waiting held" while runs are still in flight, then "paused". */
export function pauseText(p: Progress): string {
  const s = segmentsOf(p);
  if (s.running > 0) return `pausing: ${s.running} running will finish, ${s.waiting} waiting held`;
  return "paused";
}

export interface PausedPhone {
  state: string;
  paused_by?: string | null;
  pause_reason?: string | null;
  agent_name?: string | null;
}

/** Why a phone is paused, in the job pause's style: "paused at PC rack-3 by operator". */
export function phonePauseText(d: PausedPhone): string | null {
  if (d.state !== "paused" && !d.paused_by) return null;
  const pc = d.agent_name ? ` at PC ${d.agent_name}` : "";
  switch (d.paused_by) {
    case "agent":
      return `paused${pc} by operator`;
    case "server":
      return `paused${pc} from the dashboard`;
    case "control":
      return `paused${pc}: ${d.pause_reason ?? "under screen control"}`;
    default:
      return d.pause_reason ? `paused${pc}: ${d.pause_reason}` : `paused${pc}`;
  }
}
