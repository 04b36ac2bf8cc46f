import type { ComponentChildren } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import type { Api, ApiError } from "../api";
import { relativeTime, scheduleRule, targetText } from "../logic";
import type { Store } from "../store";
import type { Schedule } from "../types";
import { NewScheduleDialog } from "./NewScheduleDialog";

/** Relative times ("in 5 min") are redrawn this often even while nothing else changes. */
const CLOCK_MS = 30_000;

export function SchedulesPage({ api, store, onChanged }: { api: Api; store: Store; onChanged: () => void }) {
  const [items, setItems] = useState<Schedule[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState<ComponentChildren | null>(null);
  const [unavailable, setUnavailable] = useState(false);
  const [creating, setCreating] = useState(false);
  const [, setTick] = useState(0);
  const last = useRef(0);

  async function load(): Promise<void> {
    last.current = Date.now();
    try {
      const list = await api.schedules();
      setItems(list.items);
    } catch (e) {
      if ((e as ApiError).status === 404) setUnavailable(true);
      else setError((e as ApiError).message);
    }
  }

  // schedule:changed (a firing, or an edit anywhere) bumps the store's schedulesVersion: reload then (at
  // most every 2 s) so "last run" and "next run" follow, and redraw the relative times on a slow clock.
  useEffect(() => {
    let cancelled = false;
    const t = setTimeout(() => !cancelled && void load(), Math.max(0, last.current + 2000 - Date.now()));
    return () => {
      cancelled = true;
      clearTimeout(t);
    };
  }, [store.schedulesVersion]);
  useEffect(() => {
    const t = setInterval(() => setTick((n) => n + 1), CLOCK_MS);
    return () => clearInterval(t);
  }, []);

  const replace = (s: Schedule) => setItems((prev) => (prev ?? []).map((x) => (x.id === s.id ? s : x)));
  const remove = (id: number) => setItems((prev) => (prev ?? []).filter((x) => x.id !== id));
  const changed = () => {
    void load();
    onChanged(); // the top bar's "next schedule due"
  };

  return (
    <section aria-labelledby="schedules-title">
      <div class="page-head">
        <h1 id="schedules-title">Schedules</h1>
        <button type="button" onClick={() => setCreating(true)} disabled={unavailable || !api.can("operator")}
          data-testid="new-schedule">
          New schedule</button>
      </div>
      {error && <p class="field-error" role="alert">{error}</p>}
      {notice && <p class="notice" role="status" data-testid="notice">{notice}</p>}
      {unavailable ? (
        <p class="empty">This server has no schedules (GET /api/schedules answered 404).</p>
      ) : items === null ? (
        <p class="muted">Loading…</p>
      ) : items.length === 0 ? (
        <p class="empty">No schedules yet: create one with New schedule.</p>
      ) : (
        <div class="table-wrap">
          <table class="schedules" data-testid="schedules">
            <thead>
              <tr>
                <th scope="col">Name</th><th scope="col">Rule</th><th scope="col">Next run</th>
                <th scope="col">Last run</th><th scope="col">Enabled</th>
                <th scope="col"><span class="sr-only">Actions</span></th>
              </tr>
            </thead>
            <tbody>
              {items.map((s) => (
                <ScheduleRow key={s.id} schedule={s} api={api} store={store} onReplace={replace} onRemove={remove}
                  onChanged={changed}
                  onError={setError} onNotice={setNotice} />
              ))}
            </tbody>
          </table>
        </div>
      )}
      {creating && (
        <NewScheduleDialog api={api} store={store} onClose={() => setCreating(false)} onCreated={(s) => {
          setItems((prev) => [...(prev ?? []), s]);
          setNotice(<>Created schedule “{s.name}”.</>);
          changed();
        }} />
      )}
    </section>
  );
}

interface RowProps {
  schedule: Schedule;
  api: Api;
  store: Store;
  onReplace: (s: Schedule) => void;
  onRemove: (id: number) => void;
  onChanged: () => void;
  onError: (e: string | null) => void;
  onNotice: (n: ComponentChildren | null) => void;
}

function ScheduleRow({ schedule: s, api, store, onReplace, onRemove, onChanged, onError, onNotice }: RowProps) {
  const [busy, setBusy] = useState<"toggle" | "run" | "delete" | null>(null);

  async function act(what: "toggle" | "run" | "delete") {
    setBusy(what);
    onError(null);
    onNotice(null);
    try {
      if (what === "toggle") {
        const next = await api.patchSchedule(s.id, { enabled: !s.enabled });
        if (next) onReplace(next);
      } else if (what === "run") {
        const job = await api.runSchedule(s.id);
        store.putJob(job);
        onNotice(<>“{s.name}” started <a href={`#/jobs/${job.id}`} data-testid="started-job">job #{job.id}</a>.</>);
      } else {
        await api.deleteSchedule(s.id);
        onRemove(s.id);
        onNotice(<>Deleted schedule “{s.name}”.</>);
      }
      onChanged();
    } catch (e) {
      onError(`${s.name}: ${(e as ApiError).message}`);
    } finally {
      setBusy(null);
    }
  }

  const t = s.template;
  return (
    <tr data-testid="schedule" data-schedule-id={s.id} data-enabled={String(s.enabled)}>
      <td>
        <strong data-testid="schedule-name">{s.name}</strong>
        <div class="muted small-text">{t.title} · {targetText(t.target_type, t.target_value)}</div>
      </td>
      <td class="mono" data-testid="schedule-rule">{scheduleRule(s)}</td>
      <td data-testid="schedule-next">
        {s.next_run_at ? (
          <span title={new Date(s.next_run_at).toLocaleString()}>
            {new Date(s.next_run_at).toLocaleString()} <span class="muted">({relativeTime(s.next_run_at)})</span>
          </span>
        ) : <span class="muted">{s.enabled ? "–" : "– (disabled)"}</span>}
      </td>
      <td data-testid="schedule-last">
        {s.last_run_at ? (
          <>
            <span title={new Date(s.last_run_at).toLocaleString()}>{relativeTime(s.last_run_at)}</span>
            {s.last_job_id !== null && <> · <a href={`#/jobs/${s.last_job_id}`}>job #{s.last_job_id}</a></>}
          </>
        ) : <span class="muted">never</span>}
      </td>
      <td>
        <label class="switch">
          <input type="checkbox" role="switch" checked={s.enabled} disabled={busy !== null || !api.can("operator")}
            aria-label={`Enabled: ${s.name}`} data-testid="schedule-enabled" onChange={() => act("toggle")} />
          <span aria-hidden="true">{s.enabled ? "On" : "Off"}</span>
        </label>
      </td>
      <td>
        <div class="actions" hidden={!api.can("operator")}>
          <button type="button" class="small" disabled={busy !== null} onClick={() => act("run")}
            aria-label={`Run ${s.name} now`} data-testid="schedule-run">{busy === "run" ? "Starting…" : "Run now"}</button>
          <button type="button" class="small danger" disabled={busy !== null} onClick={() => act("delete")}
            aria-label={`Delete ${s.name}`} data-testid="schedule-delete">{busy === "delete" ? "Deleting…" : "Delete"}</button>
        </div>
      </td>
    </tr>
  );
}
