import { memo } from "preact/compat";
import { useEffect, useMemo, useState } from "preact/hooks";
import { type Api, ApiError } from "../api";
import { filterJobs, jobsByNewest, progressOf, progressText, type StatusFilter, jobSummary } from "../logic";
import type { Store } from "../store";
import type { Assignment, Job, JobPatch } from "../types";
import { AssignmentTable } from "./AssignmentTable";
import { NewJobDialog } from "./NewJobDialog";

const STATUSES: StatusFilter[] = ["all", "scheduled", "active", "paused", "completed", "cancelled"];
const PAGE = 100;

export function JobsPage({ api, store }: { api: Api; store: Store }) {
  const [status, setStatus] = useState<StatusFilter>("all");
  const [search, setSearch] = useState("");
  const [creating, setCreating] = useState(false);
  const [shown, setShown] = useState(PAGE);
  const [expanded, setExpanded] = useState<Set<number>>(new Set());
  const [error, setError] = useState<string | null>(null);
  const jobs = store.jobs;
  const summary = useMemo(() => jobSummary(jobs.values(), jobs.size, store.jobsTotal, store.jobCounts),
    [store.version]);
  const visible = useMemo(() => jobsByNewest(filterJobs(jobs.values(), status, search)), [store.version, status, search]);

  const toggle = (id: number) => setExpanded((prev) => {
    const next = new Set(prev);
    if (next.has(id)) next.delete(id);
    else next.add(id);
    return next;
  });

  return (
    <section aria-labelledby="jobs-title">
      <div class="page-head">
        <h1 id="jobs-title">Jobs</h1>
        <button type="button" onClick={() => setCreating(true)} data-testid="new-job">New job</button>
      </div>
      <dl class="summary" data-testid="summary">
        <div><dt>Total</dt><dd data-testid="sum-total">{summary.total}</dd></div>
        <div><dt>Running</dt><dd data-testid="sum-running">{summary.running}</dd></div>
        <div><dt>Paused</dt><dd data-testid="sum-paused">{summary.paused}</dd></div>
        <div><dt>Completed</dt><dd data-testid="sum-completed">{summary.completed}</dd></div>
        <div><dt>Connected phones</dt><dd data-testid="connected-count">{store.connectedPhones}</dd></div>
      </dl>
      <div class="toolbar" role="search">
        <label>
          Status{" "}
          <select value={status} onChange={(e) => setStatus((e.target as HTMLSelectElement).value as StatusFilter)}
            data-testid="status-filter">
            {STATUSES.map((s) => <option value={s} key={s}>{s === "all" ? "All" : s}</option>)}
          </select>
        </label>
        <label>
          Search{" "}
          <input type="search" placeholder="Title" value={search} data-testid="search"
            onInput={(e) => setSearch((e.target as HTMLInputElement).value)} />
        </label>
        <span class="muted" data-testid="jobs-shown">
          {visible.length > shown ? `${shown} of ${visible.length} shown` : `${visible.length} shown`}
        </span>
      </div>
      {error && <p class="field-error" role="alert">{error}</p>}
      {visible.length === 0 ? (
        <p class="empty">{jobs.size ? "No job matches." : "No jobs yet: create one with New job."}</p>
      ) : (
        <ul class="jobs" data-testid="jobs">
          {visible.slice(0, shown).map((job) => (
            <JobRow key={job.id} job={job} api={api} store={store} open={expanded.has(job.id)}
              onToggle={toggle} onError={setError} />
          ))}
        </ul>
      )}
      {visible.length > shown && (
        <button type="button" class="ghost" onClick={() => setShown(shown + PAGE)}>
          Show more ({visible.length - shown} more)
        </button>
      )}
      {creating && <NewJobDialog api={api} store={store} onClose={() => setCreating(false)} />}
    </section>
  );
}

export async function jobAction(api: Api, store: Store, job: Job, action: JobPatch["status"] | "delete"): Promise<void> {
  if (action === "delete") {
    await api.deleteJob(job.id);
    store.jobDeleted(job.id);
  } else {
    store.putJob(await api.patchJob(job.id, { status: action }));
  }
}

export function JobActions({ api, store, job, onError }:
  { api: Api; store: Store; job: Job; onError: (e: string | null) => void }) {
  const [busy, setBusy] = useState<string | null>(null);
  const open = job.status === "active" || job.status === "paused" || job.status === "scheduled";
  async function run(action: JobPatch["status"] | "delete") {
    setBusy(action ?? null);
    onError(null);
    try {
      await jobAction(api, store, job, action);
    } catch (e) {
      onError(`Job ${job.id}: ${(e as ApiError).message}`);
    } finally {
      setBusy(null);
    }
  }
  return (
    <div class="actions">
      {job.status === "active" && (
        <button type="button" disabled={!!busy} onClick={() => run("paused")} aria-label={`Pause ${job.title}`}
          data-testid="pause">{busy === "paused" ? "Pausing…" : "Pause"}</button>
      )}
      {job.status === "paused" && (
        <button type="button" disabled={!!busy} onClick={() => run("active")} aria-label={`Resume ${job.title}`}
          data-testid="resume">{busy === "active" ? "Resuming…" : "Resume"}</button>
      )}
      {open && (
        <button type="button" class="ghost" disabled={!!busy} onClick={() => run("cancelled")}
          aria-label={`Cancel ${job.title}`} data-testid="cancel">{busy === "cancelled" ? "Cancelling…" : "Cancel"}</button>
      )}
      <button type="button" class="danger" disabled={!!busy} onClick={() => run("delete")}
        aria-label={`Delete ${job.title}`} data-testid="delete">{busy === "delete" ? "Deleting…" : "Delete"}</button>
    </div>
  );
}

export function ProgressBar({ job }: { job: Job }) {
  const { percent } = progressOf(job);
  return (
    <div class="progress">
      <div class="bar" role="progressbar" aria-valuemin={0} aria-valuemax={100} aria-valuenow={percent}
        aria-label={`Progress of ${job.title}`}>
        <span style={{ width: `${percent}%` }} />
      </div>
      <span class="progress-text" data-testid="progress">{progressText(job)}</span>
    </div>
  );
}

interface RowProps {
  job: Job;
  api: Api;
  store: Store;
  open: boolean;
  onToggle: (id: number) => void;
  onError: (e: string | null) => void;
}

const JobRow = memo(function JobRow({ job, api, store, open, onToggle, onError }: RowProps) {
  return (
    <li class={`job status-${job.status}`} data-testid="job" data-job-id={job.id} data-status={job.status}>
      <div class="job-main">
        <button type="button" class="ghost expander" aria-expanded={open} aria-controls={`job-${job.id}-phones`}
          onClick={() => onToggle(job.id)} title="Per-phone status">
          {open ? "▾" : "▸"}<span class="sr-only">Phones of {job.title}</span>
        </button>
        <div class="job-title">
          <a href={`#/jobs/${job.id}`} data-testid="job-title">{job.title}</a>
          <span class="muted"> #{job.id} · priority {job.priority}</span>
        </div>
        <span class={`badge badge-${job.status}`} data-testid="job-status">{job.status}</span>
        <ProgressBar job={job} />
        <span class="counts muted">
          {job.running_count ?? 0} running · {job.paused_count ?? 0} paused · {job.failed_count} failed
        </span>
        <JobActions api={api} store={store} job={job} onError={onError} />
      </div>
      {open && <JobPhones api={api} job={job} />}
    </li>
  );
});

/** Per-phone status of one job, refetched (at most every second) as the job's counts change. */
function JobPhones({ api, job }: { api: Api; job: Job }) {
  const [items, setItems] = useState<Assignment[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const key = `${job.status}:${job.assigned_count}:${job.completed_count}:${job.failed_count}:${job.running_count}:` +
    `${job.paused_count}`;
  useEffect(() => {
    let cancelled = false;
    const t = setTimeout(async () => {
      try {
        const list = await api.assignments(job.id);
        if (!cancelled) setItems(list.items);
      } catch (e) {
        if (!cancelled) setError((e as ApiError).message);
      }
    }, items === null ? 0 : 1000);
    return () => {
      cancelled = true;
      clearTimeout(t);
    };
  }, [key]);
  return (
    <div id={`job-${job.id}-phones`} class="job-phones" data-testid="job-phones">
      {error && <p class="field-error">{error}</p>}
      {items === null ? <p class="muted">Loading…</p> : <AssignmentTable items={items} compact />}
    </div>
  );
}
