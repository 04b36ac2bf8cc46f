import { useEffect, useRef, useState } from "preact/hooks";
import type { Api, ApiError } from "../api";
import {
  batteryReading, isHot, lastSeenText, liveDetail, otherBroken, rungLabel, temperatureReading, thresholdChecks,
  whyText,
} from "../fleetHealth";
import { agoText, duration, percentText, secondsText } from "../logic";
import type { Store } from "../store";
import type { Assignment, Device, DeviceDetail, DeviceHealth, Reliability } from "../types";
import { PhoneGallery } from "./Gallery";
import { PhoneActions } from "./PhoneActions";
import { PhoneTimeline } from "./PhoneTimeline";
import { RunEvidence } from "./RunEvidence";
import { ScreenPanel } from "./ScreenPanel";

/** The detail and the runs are refetched at most this often while the phone's row or timeline changes. */
const REFRESH_MS = 1000;
const RUNS = 20;

/**
 * One phone: why it is in its state, its health facts against the thresholds, its reliability record, its last
 * runs and its timeline, with the operator's actions. The row in the store (device:update) is the live state;
 * the detail is refetched when it or the timeline changes.
 */
export function PhoneDetail({ api, store, deviceId }: { api: Api; store: Store; deviceId: number }) {
  const row = store.devices.get(deviceId);
  const [detail, setDetail] = useState<DeviceDetail | null>(null);
  const [runs, setRuns] = useState<{ items: Assignment[]; total: number } | null>(null);
  const [missing, setMissing] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [eventsSeen, setEventsSeen] = useState(0);
  const last = useRef(0);

  useEffect(() => store.onDeviceEvent((e) => {
    if (e.device_id === deviceId) setEventsSeen((n) => n + 1);
  }), [deviceId]);

  useEffect(() => {
    let cancelled = false;
    const t = setTimeout(async () => {
      last.current = Date.now();
      const [d, r] = await Promise.allSettled([api.device(deviceId), api.deviceRuns(deviceId, RUNS)]);
      if (cancelled) return;
      if (d.status === "fulfilled") {
        setDetail(d.value);
        setError(null);
        store.setMaxTempC(d.value.thresholds.max_battery_temp_c ?? null);
      } else if ((d.reason as ApiError).status === 404) {
        setMissing(true);
      } else {
        setError(`Cannot load phone ${deviceId}: ${(d.reason as ApiError).message}`);
      }
      if (r.status === "fulfilled") {
        const mine = r.value.items.filter((a) => a.device_id === deviceId); // a server without ?device_id= lists all
        setRuns({ items: mine, total: mine.length < r.value.items.length ? mine.length : r.value.total });
      }
    }, Math.max(0, last.current + REFRESH_MS - Date.now()));
    return () => {
      cancelled = true;
      clearTimeout(t);
    };
  }, [deviceId, row, eventsSeen]);

  if (missing) {
    return <p class="empty">Phone {deviceId} does not exist (it may have been removed). <a href="#/phones">All phones</a></p>;
  }
  if (!detail) {
    return (
      <section>
        <p><a href="#/phones">← All phones</a></p>
        {error ? <p class="field-error" role="alert">{error}</p> : <p class="muted">Loading phone {deviceId}…</p>}
      </section>
    );
  }
  // the row is the live state (device:update); the detail adds health facts and the record
  const d = liveDetail(detail, row);
  const hot = isHot(d, d.thresholds.max_battery_temp_c ?? null);
  return (
    <section aria-labelledby="phone-title" data-testid="phone-detail" data-state={d.state}>
      <p><a href="#/phones">← All phones</a></p>
      <div class="title-line">
        <h1 id="phone-title"><span class="mono">{d.serial}</span></h1>
        <span class={`badge badge-${d.state}`} data-testid="phone-state">{d.state}</span>
        {hot && <span class="badge badge-hot" data-testid="phone-hot">hot</span>}
      </div>
      <p class="muted">
        {d.model ?? "unknown model"} · Android {d.android_version ?? "?"} · on <strong>{d.agent_name ?? `agent ${d.agent_id}`}</strong>
        {d.tags.length > 0 && ` · tags ${d.tags.join(", ")}`}
        <span data-testid="phone-last-seen">{` · last seen ${lastSeenText(d)}`}</span>
      </p>
      <Why device={d} />
      {error && <p class="field-error" role="alert">{error}</p>}
      <PhoneActions api={api} store={store} device={d} onChanged={(next) => next && setDetail(next)} />
      <ScreenPanel api={api} deviceId={deviceId} />

      <div class="two-cols">
        <div>
          <h2>Health</h2>
          <HealthFacts health={d.health ?? null} device={d} />
          <h3>Thresholds</h3>
          <Thresholds detail={d} />
        </div>
        <div>
          <h2>Reliability</h2>
          <ReliabilityFacts r={d.reliability} />
        </div>
      </div>

      <h2>Last runs</h2>
      <Runs api={api} runs={runs} store={store} />
      <h2>Screenshots</h2>
      <PhoneGallery api={api} deviceId={deviceId} />
      <h2>Timeline</h2>
      <PhoneTimeline api={api} store={store} deviceId={deviceId} row={row} />
    </section>
  );
}

/** "(since 10:40:28, 5 min ago)". */
function Since({ at }: { at: string | null | undefined }) {
  return at ? <span class="muted"> (since {new Date(at).toLocaleTimeString()}, {agoText(at)})</span> : null;
}

/** The reason it takes no work, as a callout (text, not only colour). */
function Why({ device: d }: { device: DeviceDetail }) {
  const why = whyText(d);
  if (d.state === "quarantined") {
    return (
      <p class="callout callout-bad" role="status" data-testid="phone-why">
        <strong>Quarantined</strong>{d.quarantined_by && ` by ${d.quarantined_by}`}: {why}
        <Since at={d.quarantined_at} />
      </p>
    );
  }
  if (d.state === "recovering") {
    return (
      <p class="callout callout-info" role="status" data-testid="phone-why">
        <strong>Recovering</strong>: the {rungLabel(d.recovering ?? null)} rung is running; its end shows in the timeline.
      </p>
    );
  }
  if (!why) return null;
  return (
    <p class="callout callout-bad" role="status" data-testid="phone-why">
      <strong>{d.state === "unhealthy" ? "Unhealthy" : "Note"}</strong>: {why}
      {d.state === "unhealthy" && <Since at={d.unhealthy_since} />}
    </p>
  );
}

function yesNo(v: boolean | null | undefined): string {
  return v === null || v === undefined ? "?" : v ? "yes" : "no";
}

function HealthFacts({ health: h, device: d }: { health: DeviceHealth | null; device: Device }) {
  if (!h || Object.values(h).every((v) => v === null || v === undefined)) {
    return <p class="muted" data-testid="health-facts">No health probe has reported on this phone yet.</p>;
  }
  return (
    <>
      {d.state === "offline" && <p class="muted">Offline: these are its last facts.</p>}
      <dl class="facts compact" data-testid="health-facts">
        <div><dt>adb state</dt><dd>{h.adb_state ?? "?"}</dd></div>
        <div><dt>Booted</dt><dd>{yesNo(h.boot_completed)}</dd></div>
        <div><dt>Battery</dt><dd title={batteryReading(d, h.battery).title} data-testid="health-battery">
          {batteryReading(d, h.battery).text}{h.charging && d.state !== "offline" ? " (charging)" : ""}</dd></div>
        <div><dt>Temperature</dt><dd title={temperatureReading(d, h.battery_temp_c).title} data-testid="health-temp">
          {temperatureReading(d, h.battery_temp_c).text}</dd></div>
        <div><dt>Screen</dt><dd>{h.screen_on == null ? "?" : h.screen_on ? "on" : "off"}
          {h.screen_locked ? ", locked" : h.screen_locked === false ? ", unlocked" : ""}</dd></div>
        <div><dt>/data free</dt><dd>{h.data_free_mb == null ? "?" : `${h.data_free_mb} MB`}</dd></div>
        <div><dt>Probe took</dt><dd>{h.probe_ms == null ? "?" : `${Math.round(h.probe_ms)} ms`}</dd></div>
      </dl>
    </>
  );
}

function Thresholds({ detail }: { detail: DeviceDetail }) {
  const checks = thresholdChecks(detail);
  const others = otherBroken(detail.broken);
  return (
    <>
      <div class="table-wrap">
        <table data-testid="thresholds">
          <thead><tr><th scope="col">Threshold</th><th scope="col">Fleet limit</th><th scope="col">Now</th>
            <th scope="col">Status</th></tr></thead>
          <tbody>
            {checks.map((c) => (
              <tr key={c.key} data-testid="threshold" data-key={c.key} data-broken={String(c.broken)}
                class={c.broken ? "attention" : undefined}>
                <td>{c.label}</td><td>{c.limit}</td><td title={c.title}>{c.value}</td>
                <td>{c.broken === null ? <span class="muted">unknown</span>
                  : c.broken ? <span class="badge badge-unhealthy">broken</span> : <span class="badge badge-idle">ok</span>}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {others.length > 0 && (
        <ul class="broken-list" data-testid="other-broken">
          {others.map((s) => <li key={s}><strong>Broken:</strong> {s}</li>)}
        </ul>
      )}
      <p class="hint">The fleet's limits; an agent may set its own, and what it reports broken counts.</p>
    </>
  );
}

function ReliabilityFacts({ r }: { r: Reliability }) {
  const codes = Object.entries(r.failures_by_code).sort(([a], [b]) => a.localeCompare(b));
  const f = r.last_failure;
  return (
    <>
      <dl class="facts compact" data-testid="reliability">
        <div><dt>Runs</dt><dd>{r.runs} <span class="muted">({r.runs_24h} in 24 h)</span></dd></div>
        <div><dt>Success, last 50 runs</dt><dd>{percentText(r.success_rate_50)}</dd></div>
        <div><dt>Success, 24 h</dt><dd>{percentText(r.success_rate_24h)}</dd></div>
        <div><dt>Phone failures in a row</dt><dd data-testid="failure-streak">{r.failure_streak}</dd></div>
        <div><dt>Disconnects, 24 h</dt><dd>{r.disconnects_24h}</dd></div>
        <div><dt>Run time per phone failure <span class="muted">(7 days)</span></dt><dd>{r.mtbf_sec === null ? "no phone failure"
          : secondsText(r.mtbf_sec)}</dd></div>
        <div><dt>Queue wait, average</dt><dd>{secondsText(r.avg_queue_wait_sec)}</dd></div>
      </dl>
      <h3>Last failure</h3>
      {f ? (
        <p data-testid="last-failure">
          <a href={`#/jobs/${f.job_id}`}>job #{f.job_id}</a>, {agoText(f.finished_at)}:{" "}
          <span class="mono">{f.error_code ?? "no code"}</span>{f.error ? ` ${f.error}` : ""}{" "}
          <span class="muted">(counted against {f.blame === "none" ? "neither phone nor job" : `the ${f.blame}`})</span>
        </p>
      ) : <p class="muted">None.</p>}
      {codes.length > 0 && (
        <div class="table-wrap">
          <table data-testid="failures-by-code">
            <caption class="sr-only">Failures of the last 24 h by error code, and who they count against</caption>
            <thead><tr><th scope="col">Failures, 24 h</th><th scope="col">Phone's</th><th scope="col">Job's</th>
              <th scope="col">Neither</th></tr></thead>
            <tbody>
              {codes.map(([code, c]) => (
                <tr key={code}><td class="mono">{code}</td><td>{c.phone ?? 0}</td><td>{c.job ?? 0}</td>
                  <td>{c.none ?? 0}</td></tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </>
  );
}

function Runs({ api, runs, store }: { api: Api; runs: { items: Assignment[]; total: number } | null; store: Store }) {
  if (runs === null) return <p class="muted">Loading…</p>;
  if (!runs.items.length) return <p class="muted">This phone has run nothing yet.</p>;
  return (
    <>
      <div class="table-wrap">
        <table data-testid="phone-runs">
          <thead>
            <tr><th scope="col">Job</th><th scope="col">Status</th><th scope="col">Started</th><th scope="col">Took</th>
              <th scope="col">Attempt</th><th scope="col">Error</th><th scope="col">Evidence</th></tr>
          </thead>
          <tbody>
            {runs.items.map((a) => (
              <tr key={a.id} data-testid="phone-run" data-status={a.status}>
                <td><a href={`#/jobs/${a.job_id}`}>{store.jobs.get(a.job_id)?.title ?? `job #${a.job_id}`}</a></td>
                <td><span class={`badge badge-${a.status}`}>{a.status}</span></td>
                <td>{a.started_at ? new Date(a.started_at).toLocaleString() : "–"}</td>
                <td>{duration(a.started_at, a.finished_at) ?? "–"}</td>
                <td>{a.attempt}</td>
                <td class="error-cell">{a.error ? `${a.error_code ? `[${a.error_code}] ` : ""}${a.error}` : ""}</td>
                <td><RunEvidence api={api} assignment={a} /></td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {runs.total > runs.items.length && <p class="hint">The last {runs.items.length} of {runs.total} runs.</p>}
    </>
  );
}
