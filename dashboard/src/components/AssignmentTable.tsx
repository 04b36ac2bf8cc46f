import { useTicker } from "../hooks";
import { duration } from "../logic";
import type { Assignment } from "../types";

export function AssignmentTable({ items, compact, extra }:
  { items: Assignment[]; compact?: boolean; extra?: (a: Assignment) => preact.ComponentChildren }) {
  useTicker(items.some((a) => a.status === "running")); // "took" moves each second while a run runs
  if (!items.length) return <p class="muted">No phone has taken this job yet.</p>;
  return (
    <div class="table-wrap">
      <table class="assignments" data-testid="assignments">
        <thead>
          <tr>
            <th scope="col">Phone</th>
            <th scope="col">Status</th>
            <th scope="col">Progress</th>
            {!compact && <th scope="col">Started</th>}
            <th scope="col">Took</th>
            {!compact && <th scope="col">Attempt</th>}
            <th scope="col">Error</th>
            {extra && <th scope="col">Artifacts</th>}
          </tr>
        </thead>
        <tbody>
          {items.map((a) => (
            <tr key={a.id} data-testid="assignment" data-status={a.status}
              class={a.superseded || a.retried ? "replaced" : undefined}>
              <td>{a.serial ?? `device ${a.device_id}`}</td>
              <td>
                <span class={`badge badge-${a.status}`}>{a.status}</span>
                {a.superseded && <span class="muted" title="Ended, then requeued: a newer run replaces it"> requeued</span>}
                {a.retried && !a.superseded && (
                  <span class="muted" title="Failed, and another phone took over its slot"> retried</span>
                )}
              </td>
              <td>
                <span class="run-progress" data-testid="run-progress" data-progress={a.progress}>
                  <span class="bar" role="progressbar" aria-valuemin={0} aria-valuemax={100}
                    aria-valuenow={Math.round(a.progress * 100)}><span style={{ width: `${a.progress * 100}%` }} /></span>
                  {Math.round(a.progress * 100)}%
                </span>
                {a.status === "running" && a.progress_message && (
                  <small class="run-step muted" data-testid="run-step" title={a.progress_message}>
                    {a.progress_message}
                  </small>
                )}
              </td>
              {!compact && <td>{a.started_at ? new Date(a.started_at).toLocaleTimeString() : "–"}</td>}
              <td data-testid="took">{duration(a.started_at, a.finished_at) ?? "–"}</td>
              {!compact && <td>{a.attempt}</td>}
              <td class="error-cell">{a.error ? `${a.error_code ? `[${a.error_code}] ` : ""}${a.error}` : ""}</td>
              {extra && <td>{extra(a)}</td>}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
