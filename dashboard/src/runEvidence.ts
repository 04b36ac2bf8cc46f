// A run's evidence as the dashboard shows it: its step timeline, its crash badge and its logcat viewer.
// Pure functions here (unit-tested); the components live in components/RunEvidence.tsx and LogViewer.tsx.
import type { Crash, LogLevel, StepOutcome, StepRecord, StepTimeline } from "./generated/protocol";

export const LOG_LEVELS: LogLevel[] = ["V", "D", "I", "W", "E", "F"];
export const LEVEL_NAMES: Record<LogLevel, string> = {
  V: "Verbose", D: "Debug", I: "Info", W: "Warning", E: "Error", F: "Fatal",
};

/** The step a run's timeline opens on: the one it failed (or timed out) on; none for a run that did not fail. */
export function openStep(timeline: Pick<StepTimeline, "steps" | "failed_step">): number | null {
  if (timeline.failed_step != null) return timeline.failed_step;
  const bad = timeline.steps.find((s) => s.outcome === "failed" || s.outcome === "timed_out");
  return bad ? bad.step_index : null;
}

export const OUTCOME_TEXT: Record<StepOutcome, string> = {
  completed: "done", failed: "failed", timed_out: "timed out", cancelled: "cancelled", not_run: "not run",
};

/** "tap · poke" or "tap". */
export function stepTitle(step: Pick<StepRecord, "type" | "name">): string {
  return step.name ? `${step.type} · ${step.name}` : step.type;
}

/** How long a step took, "0.42 s", "12 s", "3 min 5 s"; null when it never ran or is unfinished. */
export function stepTook(step: Pick<StepRecord, "started_at" | "finished_at">): string | null {
  if (!step.started_at || !step.finished_at) return null;
  const ms = Date.parse(step.finished_at) - Date.parse(step.started_at);
  if (!Number.isFinite(ms) || ms < 0) return null;
  if (ms < 10_000) return `${(ms / 1000).toFixed(2)} s`;
  const s = Math.round(ms / 1000);
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

/** "exit 0", "exit 127", or null when the step ran no command. */
export function exitText(code: number | null | undefined): string | null {
  return code == null ? null : `exit ${code}`;
}

export function isAnr(crash: Crash): boolean {
  return /\bANR in\b/.test(crash.line);
}

/** The badge: "1 crash", "2 crashes · 1 ANR", "1 ANR"; null when there are none. */
export function crashBadge(crashes: Crash[] | null | undefined): string | null {
  if (!crashes?.length) return null;
  const anrs = crashes.filter(isAnr).length;
  const fatal = crashes.length - anrs;
  const parts = [];
  if (fatal) parts.push(`${fatal} crash${fatal === 1 ? "" : "es"}`);
  if (anrs) parts.push(`${anrs} ANR${anrs === 1 ? "" : "s"}`);
  return parts.join(" · ");
}

/** The badge's tooltip: each process and what it did. */
export function crashTitle(crashes: Crash[]): string {
  return crashes.map((c) => `${c.process}: ${isAnr(c) ? "ANR" : "crashed"}`).join("\n");
}

export interface LogFilter {
  level: LogLevel | "";
  tag: string;
  q: string;
  limit: number;
}

export const DEFAULT_FILTER: LogFilter = { level: "", tag: "", q: "", limit: 1000 };

/** The query string of GET /api/assignments/{id}/logcat for a filter ("" when it filters nothing). */
export function logcatQuery(f: LogFilter): string {
  const params = new URLSearchParams();
  if (f.level) params.set("level", f.level);
  if (f.tag.trim()) params.set("tag", f.tag.trim());
  if (f.q.trim()) params.set("q", f.q.trim());
  if (f.limit !== DEFAULT_FILTER.limit) params.set("limit", String(f.limit));
  const s = params.toString();
  return s ? `?${s}` : "";
}

/** The name a run's logcat is stored under (protocol.timeline.logcat_artifact_name). */
export function logcatArtifact(assignmentId: number): string {
  return `${assignmentId}-logcat.txt.gz`;
}

/** The raw artifact's URL (the download). */
export function artifactPath(assignmentId: number, name: string): string {
  return `/api/assignments/${assignmentId}/artifacts/${encodeURIComponent(name)}`;
}

/** "120 of 4,031 lines" / "all 31 lines" / "no line matches". */
export function matchText(shown: number, matched: number, total: number): string {
  if (!matched) return total ? `no line of ${total.toLocaleString("en")} matches` : "the capture is empty";
  if (shown < matched) return `the first ${shown.toLocaleString("en")} of ${matched.toLocaleString("en")} matching lines`;
  return matched === total ? `all ${total.toLocaleString("en")} lines` :
    `${matched.toLocaleString("en")} of ${total.toLocaleString("en")} lines`;
}

/** Where the search text occurs in a message, for highlighting: [before, match, after] pieces, case-insensitive. */
export function highlight(text: string, q: string): string[] {
  const needle = q.trim().toLowerCase();
  if (!needle) return [text];
  const out: string[] = [];
  const lower = text.toLowerCase();
  let at = 0;
  for (let i = lower.indexOf(needle); i !== -1; i = lower.indexOf(needle, at)) {
    out.push(text.slice(at, i), text.slice(i, i + needle.length));
    at = i + needle.length;
  }
  out.push(text.slice(at));
  return out;
}
