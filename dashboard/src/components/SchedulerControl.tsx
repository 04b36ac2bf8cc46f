import { useState } from "preact/hooks";
import type { Api, ApiError } from "../api";
import { relativeTime } from "../logic";
import type { Store } from "../store";

/**
 * The cluster-wide distribution switch, in the top bar: Running or Stopped, the next schedule due, and
 * Stop (asked twice: it halts new work on every phone) or Start. Hidden on a server without the switch.
 */
export function SchedulerControl({ api, store }: { api: Api; store: Store }) {
  const [confirming, setConfirming] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const s = store.scheduler;
  if (!store.schedulerAvailable || !s) return null;

  async function set(running: boolean) {
    setBusy(true);
    setError(null);
    try {
      store.setScheduler(await api.setSchedulerRunning(running));
      setConfirming(false);
    } catch (e) {
      setError((e as ApiError).message);
    } finally {
      setBusy(false);
    }
  }

  const open = Object.values(s.assignments).reduce((a, b) => a + b, 0);
  const detail = `${s.connected_agents} ${s.connected_agents === 1 ? "agent" : "agents"} connected · ` +
    `${s.idle_devices} idle ${s.idle_devices === 1 ? "phone" : "phones"} · ${open} open assignments`;
  const next = s.next_schedule;
  return (
    <div class="scheduler" role="group" aria-label="Scheduler" data-testid="scheduler" data-running={String(s.running)}>
      <span class="sched-label">Scheduler</span>
      <span class={`sched-state sched-${s.running ? "running" : "stopped"}`} data-testid="scheduler-state"
        title={detail}>{s.running ? "Running" : "Stopped"}</span>
      {next && (
        <a class="sched-next" href="#/schedules" data-testid="scheduler-next"
          title={new Date(next.next_run_at).toLocaleString()}>
          next: {next.name} {relativeTime(next.next_run_at)}
        </a>
      )}
      {s.running && !confirming && api.can("admin") && (
        <button type="button" class="small ghost" disabled={busy} onClick={() => setConfirming(true)}
          data-testid="scheduler-stop" title="Stop handing out new work to every phone">Stop</button>
      )}
      {s.running && confirming && (
        <>
          <button type="button" class="small stop" disabled={busy} onClick={() => set(false)}
            data-testid="scheduler-confirm-stop">{busy ? "Stopping…" : "Stop all new work"}</button>
          <button type="button" class="small ghost" disabled={busy} onClick={() => setConfirming(false)}
            data-testid="scheduler-keep">Keep running</button>
        </>
      )}
      {!s.running && api.can("admin") && (
        <button type="button" class="small" disabled={busy} onClick={() => set(true)}
          data-testid="scheduler-start">{busy ? "Starting…" : "Start"}</button>
      )}
      {error && <span class="sched-error" role="alert">{error}</span>}
    </div>
  );
}

/** Under the top bar while distribution is stopped: nothing new reaches a phone until someone starts it. */
export function SchedulerBanner({ store }: { store: Store }) {
  const s = store.scheduler;
  if (!s || s.running) return null;
  return (
    <div class="banner" role="status" data-testid="scheduler-banner">
      Scheduler stopped{s.changed_by ? ` by ${s.changed_by}` : ""} at {new Date(s.changed_at).toLocaleString()}: no new
      work goes to phones; work already running finishes. Start it again from the top bar.
    </div>
  );
}
