import { useEffect, useRef, useState } from "preact/hooks";
import { type Api, ApiError } from "../api";
import { describeStep, duration, relativeTime, targetText } from "../logic";
import { useTicker } from "../hooks";
import { teamName } from "../teams";
import type { Store } from "../store";
import type { Assignment } from "../types";
import { AssignmentTable } from "./AssignmentTable";
import { RunArtifacts } from "./Gallery";
import { JobActions, JobStatusBadge, ProgressBar } from "./JobsPage";
import { RunEvidence } from "./RunEvidence";

export function JobDetail({ api, store, jobId }: { api: Api; store: Store; jobId: number }) {
  const job = store.jobs.get(jobId);
  const [items, setItems] = useState<Assignment[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [missing, setMissing] = useState(false);
  const key = job ? `${job.status}:${job.assigned_count}:${job.completed_count}:${job.failed_count}:` +
    `${job.running_count}:${job.paused_count}:${store.jobPulse.get(jobId) ?? 0}` : "none";
  const last = useRef(0);
  useTicker(job?.status === "active" && (job.running_count ?? 0) > 0); // "Ran for" moves while runs run

  useEffect(() => {
    if (job) return;
    api.job(jobId).then((j) => store.putJob(j)).catch((e: ApiError) => e.status === 404 && setMissing(true));
  }, [jobId]);

  useEffect(() => {
    let cancelled = false;
    // throttled, not debounced: steady progress messages must not keep pushing the refetch away
    const wait = items === null ? 0 : Math.max(0, last.current + 800 - Date.now());
    const t = setTimeout(async () => {
      last.current = Date.now();
      try {
        const list = await api.assignments(jobId);
        if (!cancelled) setItems(list.items);
      } catch (e) {
        if (!cancelled) {
          if ((e as ApiError).status === 404) setMissing(true);
          else setError((e as ApiError).message);
        }
      }
    }, wait);
    return () => {
      cancelled = true;
      clearTimeout(t);
    };
  }, [jobId, key]);

  if (missing) return <p class="empty">Job {jobId} does not exist (it may have been deleted). <a href="#/jobs">All jobs</a></p>;
  if (!job) return <p class="muted">Loading job {jobId}…</p>;
  return (
    <section aria-labelledby="detail-title" data-testid="job-detail" class={`status-${job.status}`}>
      <p><a href="#/jobs">← All jobs</a></p>
      <div class="page-head">
        <h1 id="detail-title">{job.title}</h1>
        <JobStatusBadge job={job} />
      </div>
      {job.status === "blocked" && (
        <p class="blocked-reason" role="status" data-testid="blocked-reason">
          Blocked: {job.blocked_reason ?? "a job it depends on failed or was cancelled"}
        </p>
      )}
      <ProgressBar job={job} />
      <JobActions api={api} store={store} job={job} onError={setError} onNotice={setNotice} />
      {error && <p class="field-error" role="alert">{error}</p>}
      {notice && <p class="notice" role="status" data-testid="notice">{notice}</p>}
      <dl class="facts">
        <div><dt>Target</dt><dd>{targetText(job.target_type, job.target_value)} → {job.target_count ?? "?"}</dd></div>
        {store.teams && <div><dt>Team</dt><dd data-testid="fact-team">{teamName(store.teams, job.team_id)}</dd></div>}
        <div><dt>Priority</dt><dd>{job.priority}</dd></div>
        <div><dt>Max parallel</dt><dd data-testid="fact-max-parallel">{job.max_parallel ?? "no limit"}</dd></div>
        <div><dt>Max retries</dt><dd data-testid="fact-max-retries">{job.max_retries}</dd></div>
        {job.run_at && (
          <div><dt>Run at</dt><dd data-testid="fact-run-at">{new Date(job.run_at).toLocaleString()}
            {" "}<span class="muted">({relativeTime(job.run_at)})</span></dd></div>
        )}
        {job.depends_on.length > 0 && (
          <div><dt>Depends on</dt><dd data-testid="fact-depends-on">
            {job.depends_on.map((id, i) => <span key={id}>{i > 0 && ", "}<a href={`#/jobs/${id}`}>#{id}</a></span>)}
          </dd></div>
        )}
        {job.schedule_id != null && (
          <div><dt>Schedule</dt><dd><a href="#/schedules">schedule #{job.schedule_id}</a>
            {job.scheduled_for && <span class="muted"> · for {new Date(job.scheduled_for).toLocaleString()}</span>}
          </dd></div>
        )}
        <div><dt>Created</dt><dd>{new Date(job.created_at).toLocaleString()}</dd></div>
        {job.activated_at && <div><dt>Started</dt><dd>{new Date(job.activated_at).toLocaleString()}</dd></div>}
        <div><dt>Ran for</dt><dd>{(job.activated_at === undefined ? duration(job.created_at, job.finished_at)
          : duration(job.activated_at, job.finished_at)) ?? "–"}</dd></div>
        <div><dt>Plan</dt><dd><ol class="plan">{job.plan.map((s, i) => <li key={i}>{describeStep(s)}</li>)}</ol></dd></div>
      </dl>
      <h2>Phones</h2>
      {items === null ? <p class="muted">Loading…</p> :
        <AssignmentTable items={items} extra={(a) => <><RunArtifacts api={api} assignment={a} /> <RunEvidence api={api} assignment={a} /></>} />}
    </section>
  );
}
