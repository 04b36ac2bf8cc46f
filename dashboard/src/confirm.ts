// What a destructive action will do, said before it is done (the confirmation dialogs of Delete and Cancel).
import type { Job } from "./types";

type Counts = Pick<Job, "id" | "status" | "target_count" | "assigned_count" | "completed_count" | "failed_count" |
  "running_count" | "paused_count">;

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** Runs of a job not ended and not running: waiting for a phone (or for a phone to pick them up). */
function waiting(j: Counts): number {
  const total = j.target_count ?? j.assigned_count;
  return Math.max(0, total - j.completed_count - j.failed_count - (j.running_count ?? 0) - (j.paused_count ?? 0));
}

/** What cancelling these running/paused/waiting runs stops, e.g. "cancels 4 running runs on 4 phones". */
function stops(running: number, paused: number, held: number): string {
  const parts: string[] = [];
  if (running) parts.push(`${plural(running, "running run")} on ${plural(running, "phone")}`);
  if (paused) parts.push(plural(paused, "paused run"));
  if (held) parts.push(plural(held, "waiting run"));
  if (!parts.length) return "cancels no running runs (none is in flight)";
  return `cancels ${parts.length > 1 ? `${parts.slice(0, -1).join(", ")} and ${parts[parts.length - 1]}` : parts[0]}`;
}

/** Cancel one job: "Cancel job 12? This cancels 4 running runs on 4 phones and 6 waiting runs." */
export function cancelJobText(j: Counts): string {
  return `This ${stops(j.running_count ?? 0, j.paused_count ?? 0, waiting(j))}. ` +
    `Runs already finished keep their results.`;
}

/** Delete one job: "deletes job 12 and its 10 runs", and what it cancels first. */
export function deleteJobText(j: Counts): string {
  const runs = j.assigned_count;
  const running = j.running_count ?? 0;
  const first = running ? ` It first ${stops(running, 0, 0)}.` : "";
  return `This deletes job ${j.id} and its ${plural(runs, "run")}, with their results and files.${first} ` +
    `It cannot be undone.`;
}

/** Cancel the selected jobs (those that can be cancelled): "cancels 3 jobs: 4 running runs on 4 phones ...". */
export function cancelJobsText(jobs: Counts[]): string {
  if (!jobs.length) return "None of the selected jobs can be cancelled: they have all ended. Nothing changes.";
  let running = 0;
  let paused = 0;
  let held = 0;
  for (const j of jobs) {
    running += j.running_count ?? 0;
    paused += j.paused_count ?? 0;
    held += waiting(j);
  }
  return `This cancels ${plural(jobs.length, "job")}: it ${stops(running, paused, held)}. ` +
    `Runs already finished keep their results.`;
}
