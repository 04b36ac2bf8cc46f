import { memo } from "preact/compat";
import { useCallback, useEffect, useMemo, useRef, useState } from "preact/hooks";
import { type Api, ApiError } from "../api";
import {
  batchSummary, filterJobs, JOB_ACTIONS, jobSummary, percentText, requeueText,
  secondsText, type StatusFilter, waitingText, windowText,
} from "../logic";
import { outcomeOf, pauseText, segmentsOf, segmentsText, segmentWidths, statusLabel } from "../jobProgress";
import type { Store } from "../store";
import type { Assignment, BatchAction, DurationStats, Job, JobBatchResult, JobPatch, RequeueScope, Stats } from "../types";
import { AssignmentTable } from "./AssignmentTable";
import { AttentionPanel } from "./AttentionPanel";
import { Confirm } from "./Confirm";
import { cancelJobsText, cancelJobText, deleteJobText } from "../confirm";
import { NewJobDialog } from "./NewJobDialog";
import {
  ageText, cancelledText, createdText, durationText, etaText, JOB_SORTS, type JobSort, loadSort, saveSort, SORT_LABELS,
  sortJobs,
} from "../jobList";
import { useTicker } from "../hooks";
import { teamName } from "../teams";

const STATUSES: StatusFilter[] = ["all", "scheduled", "blocked", "active", "paused", "completed", "cancelled"];
const PAGE = 100;
/** The most ids one POST /api/jobs/batch takes. */
const BATCH_MAX = 1000;

export function JobsPage({ api, store }: { api: Api; store: Store }) {
  const [status, setStatus] = useState<StatusFilter>("all");
  const [search, setSearch] = useState("");
  const [creating, setCreating] = useState(false);
  const [shown, setShown] = useState(PAGE);
  const [expanded, setExpanded] = useState<Set<number>>(new Set());
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [selected, setSelected] = useState<Set<number>>(new Set());
  const [sort, setSort] = useState<JobSort>(() => loadSort());
  const jobs = store.jobs;
  const summary = useMemo(() => jobSummary(jobs.values(), jobs.size, store.jobsTotal, store.jobCounts),
    [store.version]);
  const visible = useMemo(() => sortJobs(filterJobs(jobs.values(), status, search), sort),
    [store.version, status, search, sort]);
  // ages, durations and ETAs move each second (clock.ts stops them while the page is offline)
  const tick = useTicker(visible.length > 0);

  // stable callbacks, so a row re-renders only when its own job (or its open/selected state) changes
  const toggle = useCallback((id: number) => setExpanded((prev) => {
    const next = new Set(prev);
    if (next.has(id)) next.delete(id);
    else next.add(id);
    return next;
  }), []);
  const select = useCallback((id: number, on: boolean) => setSelected((prev) => {
    const next = new Set(prev);
    if (on) next.add(id);
    else next.delete(id);
    return next;
  }), []);
  const page = visible.slice(0, shown);

  return (
    <section aria-labelledby="jobs-title">
      <div class="page-head">
        <h1 id="jobs-title">Jobs</h1>
        {api.can("operator") &&
          <button type="button" onClick={() => setCreating(true)} data-testid="new-job">New job</button>}
      </div>
      <dl class="summary" data-testid="summary">
        <div><dt>Total</dt><dd data-testid="sum-total">{summary.total}</dd></div>
        <div><dt>Running</dt><dd data-testid="sum-running">{summary.running}</dd></div>
        <div><dt>Paused</dt><dd data-testid="sum-paused">{summary.paused}</dd></div>
        <div><dt>Completed</dt><dd data-testid="sum-completed">{summary.completed}</dd></div>
        <div><dt>Connected phones</dt><dd data-testid="connected-count">{store.connectedPhones}</dd></div>
      </dl>
      <AttentionPanel store={store} />
      {store.stats && <Performance stats={store.stats} />}
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
        <label>
          Sort{" "}
          <select value={sort} data-testid="job-sort" onChange={(e) => {
            const by = (e.target as HTMLSelectElement).value as JobSort;
            setSort(by);
            saveSort(by);
          }}>
            {JOB_SORTS.map((s) => <option value={s} key={s}>{SORT_LABELS[s]}</option>)}
          </select>
        </label>
        <span class="muted" data-testid="jobs-shown">
          {visible.length > shown ? `${shown} of ${visible.length} shown` : `${visible.length} shown`}
        </span>
      </div>
      {error && <p class="field-error" role="alert">{error}</p>}
      {notice && <p class="notice" role="status" data-testid="notice">{notice}</p>}
      <BatchBar api={api} store={store} page={page} selected={selected} onSelect={setSelected} />
      {visible.length === 0 ? (
        <p class="empty">{jobs.size ? "No job matches." : "No jobs yet: create one with New job."}</p>
      ) : (
        <ul class="jobs" data-testid="jobs">
          {page.map((job) => (
            <JobRow key={job.id} job={job} team={store.teams ? teamName(store.teams, job.team_id) : ""} api={api} store={store}
              open={expanded.has(job.id)}
              selected={selected.has(job.id)} onSelect={select} onToggle={toggle} onError={setError}
              onNotice={setNotice} tick={job.status === "active" ? tick : Math.floor(tick / 15)} />
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

export function JobActions({ api, store, job, onError, onNotice }: {
  api: Api; store: Store; job: Job; onError: (e: string | null) => void; onNotice: (n: string | null) => void;
}) {
  const [busy, setBusy] = useState<string | null>(null);
  const [asking, setAsking] = useState<"cancelled" | "delete" | null>(null);
  const menu = useRef<HTMLDetailsElement>(null);
  const [menuOpen, setMenuOpen] = useState(false);
  const open = JOB_ACTIONS.cancel.has(job.status);
  // the open Requeue menu closes on a press or focus anywhere else
  useEffect(() => {
    if (!menuOpen) return;
    const away = (e: Event) => {
      if (menu.current && !menu.current.contains(e.target as Node)) menu.current.open = false;
    };
    document.addEventListener("pointerdown", away);
    document.addEventListener("focusin", away);
    return () => {
      document.removeEventListener("pointerdown", away);
      document.removeEventListener("focusin", away);
    };
  }, [menuOpen]);
  async function requeue(scope: RequeueScope) {
    if (menu.current) menu.current.open = false;
    setBusy("requeue");
    onError(null);
    onNotice(null);
    try {
      const r = await api.requeueJob(job.id, scope);
      store.putJob(r.job);
      onNotice(requeueText(job.id, scope, r.requeued));
    } catch (e) {
      onError(`Job ${job.id}: ${(e as ApiError).message}`);
    } finally {
      setBusy(null);
    }
  }
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
  if (!api.can("operator")) return null; // a viewer sees the job, not buttons the server would refuse
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
      {JOB_ACTIONS.requeue.has(job.status) && (
        <details class="menu" ref={menu} data-testid="requeue-menu"
          onToggle={(e) => setMenuOpen((e.currentTarget as HTMLDetailsElement).open)}
          onKeyDown={(e) => {
            if (e.key === "Escape" && menu.current?.open) {
              e.stopPropagation();
              menu.current.open = false;
              menu.current.querySelector("summary")?.focus();
            }
          }}>
          <summary class={`button ghost${busy ? " disabled" : ""}`} aria-label={`Requeue ${job.title}`}
            data-testid="requeue">{busy === "requeue" ? "Requeuing…" : "Requeue"}</summary>
          <div class="menu-items" role="group" aria-label={`Requeue ${job.title}`}>
            <button type="button" class="ghost small" disabled={!!busy} onClick={() => requeue("failed")}
              data-testid="requeue-failed" title="Run the slots that finally failed or timed out again">
              Failed slots</button>
            <button type="button" class="ghost small" disabled={!!busy} onClick={() => requeue("all")}
              data-testid="requeue-all" title="Run every ended slot again: the job starts over">All slots</button>
          </div>
        </details>
      )}
      {open && (
        <button type="button" class="ghost" disabled={!!busy} onClick={() => setAsking("cancelled")}
          aria-label={`Cancel ${job.title}`} data-testid="cancel">{busy === "cancelled" ? "Cancelling…" : "Cancel"}</button>
      )}
      <button type="button" class="danger" disabled={!!busy} onClick={() => setAsking("delete")}
        aria-label={`Delete ${job.title}`} data-testid="delete">{busy === "delete" ? "Deleting…" : "Delete"}</button>
      {asking && (
        <Confirm title={`${asking === "delete" ? "Delete" : "Cancel"} job ${job.id} “${job.title}”?`}
          message={asking === "delete" ? deleteJobText(job) : cancelJobText(job)}
          action={asking === "delete" ? "Delete job" : "Cancel job"}
          onConfirm={() => void run(asking)} onClose={() => setAsking(null)} />
      )}
    </div>
  );
}

/** A job's bar in four segments (completed green, failed red, running blue, waiting grey) and its counts. */
export function ProgressBar({ job }: { job: Job }) {
  const seg = segmentsOf(job);
  const w = segmentWidths(seg);
  const outcome = outcomeOf(job.status, job);
  return (
    <div class={`progress${outcome === "completed with failures" ? " with-failures" : ""}`}>
      <div class="bar segmented" role="progressbar" aria-valuemin={0} aria-valuemax={seg.total}
        aria-valuenow={seg.done} aria-valuetext={segmentsText(job)} aria-label={`Progress of ${job.title}`}>
        {(["done", "failed", "running", "waiting"] as const).map((k) => w[k] > 0 && (
          <span key={k} class={`seg seg-${k}`} data-testid={`seg-${k}`} style={{ width: `${w[k]}%` }}
            title={`${seg[k]} ${k}`} />
        ))}
      </div>
      <span class="progress-text" data-testid="progress">{segmentsText(job)}</span>
    </div>
  );
}

/** The status badge: "completed with failures" (amber) when any run failed; a paused job says what still runs. */
export function JobStatusBadge({ job }: { job: Job }) {
  const failures = outcomeOf(job.status, job) === "completed with failures";
  return (
    <>
      <span class={`badge badge-${failures ? "with-failures" : job.status}`} data-testid="job-status">
        {job.status === "paused" ? job.status : statusLabel(job.status, job)}</span>
      {job.status === "paused" && (
        <span class="pause-state muted" role="status" data-testid="pause-state">{pauseText(job)}</span>
      )}
    </>
  );
}

interface RowProps {
  job: Job;
  /** The job's team's name ("" on a server without teams). */
  team: string;
  api: Api;
  store: Store;
  open: boolean;
  selected: boolean;
  onSelect: (id: number, on: boolean) => void;
  onToggle: (id: number) => void;
  onError: (e: string | null) => void;
  onNotice: (n: string | null) => void;
  /** Changes each second for a running job (every 15 s for others' ages), so the memoised row's times move. */
  tick: number;
}

const JobRow = memo(function JobRow({ job, team, api, store, open, selected, onSelect, onToggle, onError, onNotice }:
  RowProps) {
  const waiting = waitingText(job);
  return (
    <li class={`job status-${job.status}`} data-testid="job" data-job-id={job.id} data-status={job.status}>
      <div class="job-main">
        <div class="row-pick">
          <input type="checkbox" checked={selected} aria-label={`Select ${job.title}`} data-testid="select-job"
            onChange={(e) => onSelect(job.id, (e.target as HTMLInputElement).checked)} />
          <button type="button" class="ghost expander" aria-expanded={open} aria-controls={`job-${job.id}-phones`}
            onClick={() => onToggle(job.id)} title="Per-phone status">
            {open ? "▾" : "▸"}<span class="sr-only">Phones of {job.title}</span>
          </button>
        </div>
        <span class="job-id muted" data-testid="job-id">#{job.id}</span>
        <div class="job-title" title={job.title}>
          <a href={`#/jobs/${job.id}`} data-testid="job-title" title={job.title}>{job.title}</a>
          <span class="job-sub muted">priority {job.priority}
            {team && <> · <span data-testid="job-team" title="The team whose phones run it">team {team}</span></>}
          </span>
        </div>
        <JobTimes job={job} />
        <span class="job-state">
          <JobStatusBadge job={job} />
          {job.status === "cancelled" && (
            <span class="cancelled-runs muted" data-testid="cancelled-runs">{cancelledText(job)}</span>
          )}
        </span>
        <div class="job-progress">
        <ProgressBar job={job} />
        {waiting ? (
          <span class={`counts ${job.status === "blocked" ? "blocked-reason" : "muted"}`} data-testid="waiting">
            {waiting}
          </span>
        ) : (
          <span class="counts muted">
            {job.completed_count} completed · {job.running_count ?? 0} running · {job.failed_count} failed
            {(job.paused_count ?? 0) > 0 && ` · ${job.paused_count} paused`}
          </span>
        )}
        </div>
        <JobActions api={api} store={store} job={job} onError={onError} onNotice={onNotice} />
      </div>
      {open && <JobPhones api={api} store={store} job={job} />}
    </li>
  );
});

/** Created time and age, duration (started to ended, or so far) and, while it runs, the ETA. */
function JobTimes({ job }: { job: Job }) {
  const eta = etaText(job);
  return (
    <div class="job-times">
      <span data-testid="job-created" title={`created ${new Date(job.created_at).toLocaleString()}`}>
        {createdText(job.created_at)} · <span data-testid="job-age">{ageText(job)}</span></span>
      <span class="muted">
        <span data-testid="job-duration" title="started to ended, or so far">took {durationText(job)}</span>
        {eta && <> · <span data-testid="job-eta" title="from the runs ended so far">{eta}</span></>}
      </span>
    </div>
  );
}

/** Per-phone status of one job, refetched (at most every second) as the job's counts or its runs' progress change. */
function JobPhones({ api, store, job }: { api: Api; store: Store; job: Job }) {
  const [items, setItems] = useState<Assignment[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const last = useRef(0);
  const key = `${job.status}:${job.assigned_count}:${job.completed_count}:${job.failed_count}:${job.running_count}:` +
    `${job.paused_count}:${store.jobPulse.get(job.id) ?? 0}`;
  useEffect(() => {
    let cancelled = false;
    // throttled, not debounced: steady progress messages must not keep pushing the refetch away
    const wait = items === null ? 0 : Math.max(0, last.current + 1000 - Date.now());
    const t = setTimeout(async () => {
      last.current = Date.now();
      try {
        const list = await api.assignments(job.id);
        if (!cancelled) setItems(list.items);
      } catch (e) {
        if (!cancelled) setError((e as ApiError).message);
      }
    }, wait);
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

/** Success rate, run time and queue wait over the server's window, where the server gives them. */
function Performance({ stats }: { stats: Stats }) {
  const times = (d: DurationStats | null) => (d && d.count ? `${secondsText(d.avg_sec)} / ${secondsText(d.p95_sec)}` : "–");
  const cells: preact.ComponentChildren[] = [];
  if (stats.success_rate !== undefined) {
    cells.push(<div key="rate"><dt>Success rate</dt><dd data-testid="success-rate">{percentText(stats.success_rate)}</dd></div>);
  }
  if (stats.run_time !== undefined) {
    cells.push(<div key="run"><dt>Run time <span class="sr-only">average / 95th percentile</span>
      <span aria-hidden="true">avg / p95</span></dt><dd data-testid="run-time">{times(stats.run_time)}</dd></div>);
  }
  if (stats.queue_wait !== undefined) {
    cells.push(<div key="wait"><dt>Queue wait <span class="sr-only">average / 95th percentile</span>
      <span aria-hidden="true">avg / p95</span></dt><dd data-testid="queue-wait">{times(stats.queue_wait)}</dd></div>);
  }
  if (!cells.length) return null;
  return (
    <dl class="summary perf" data-testid="perf" aria-label="Performance">
      {cells}
      <div class="perf-window"><dt>Window</dt><dd>last {windowText(stats.window_sec ?? 86_400)}</dd></div>
    </dl>
  );
}

/** Pause, resume or cancel the selected jobs in one request each way; says what changed and what did not. */
function BatchBar({ api, store, page, selected, onSelect }: {
  api: Api; store: Store; page: Job[]; selected: Set<number>; onSelect: (s: Set<number>) => void;
}) {
  const [busy, setBusy] = useState<BatchAction | null>(null);
  const [asking, setAsking] = useState(false);
  const [result, setResult] = useState<JobBatchResult | null>(null);
  const [error, setError] = useState<string | null>(null);
  const ids = [...selected].filter((id) => store.jobs.has(id)); // deleted meanwhile: no longer selected
  const allShown = page.length > 0 && page.every((j) => selected.has(j.id));

  async function run(action: BatchAction) {
    setBusy(action);
    setError(null);
    setResult(null);
    const total: JobBatchResult = { action, changed: [], failed: [] };
    try {
      for (let i = 0; i < ids.length; i += BATCH_MAX) {
        const r = await api.batchJobs(action, ids.slice(i, i + BATCH_MAX));
        total.changed.push(...r.changed);
        total.failed.push(...r.failed);
      }
      setResult(total);
      // the socket brings the new statuses too; fetch the changed ones so the rows are right at once
      await Promise.all(total.changed.slice(0, 100).map((id) => api.job(id).then((j) => store.putJob(j), () => {})));
    } catch (e) {
      if (total.changed.length || total.failed.length) setResult(total);
      setError((e as ApiError).message);
    } finally {
      setBusy(null);
    }
  }

  if (!api.can("operator")) return null;
  return (
    <div class="batch" role="group" aria-label="Selected jobs" data-testid="batch-bar">
      <label class="select-all">
        <input type="checkbox" checked={allShown} disabled={!page.length} data-testid="select-all"
          onChange={(e) => {
            const next = new Set(selected);
            for (const j of page) {
              if ((e.target as HTMLInputElement).checked) next.add(j.id);
              else next.delete(j.id);
            }
            onSelect(next);
          }} />
        All shown
      </label>
      <span class="muted" data-testid="selected-count">{ids.length} selected</span>
      {(["pause", "resume", "cancel"] as const).map((action) => (
        <button key={action} type="button" class={action === "pause" ? "small" : "small ghost"}
          disabled={!ids.length || !!busy} onClick={() => (action === "cancel" ? setAsking(true) : run(action))}
          data-testid={`batch-${action}`}>
          {busy === action ? "Working…" : { pause: "Pause", resume: "Resume", cancel: "Cancel" }[action]}
        </button>
      ))}
      {ids.length > 0 && (
        <button type="button" class="small ghost" onClick={() => { onSelect(new Set()); setResult(null); }}
          data-testid="batch-clear">Clear</button>
      )}
      {asking && (
        <Confirm title={`Cancel ${ids.length} selected ${ids.length === 1 ? "job" : "jobs"}?`}
          message={cancelJobsText(ids.map((id) => store.jobs.get(id)!).filter((j) => JOB_ACTIONS.cancel.has(j.status)))}
          action="Cancel jobs" onConfirm={() => void run("cancel")} onClose={() => setAsking(false)} />
      )}
      {error && <p class="field-error" role="alert">{error}</p>}
      {result && (
        <div class="batch-result" role="status" data-testid="batch-result">
          <span data-testid="batch-summary">{batchSummary(result)}</span>
          {result.failed.length > 0 && (
            <ul class="batch-failed" data-testid="batch-failed">
              {result.failed.map((f) => (
                <li key={f.id}><a href={`#/jobs/${f.id}`}>#{f.id}</a>: {f.message} <span class="muted">({f.code})</span></li>
              ))}
            </ul>
          )}
        </div>
      )}
    </div>
  );
}
