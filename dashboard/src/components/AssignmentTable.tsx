import { duration } from "../logic";
import type { Assignment } from "../types";

export function AssignmentTable({ items, compact, extra }:
  { items: Assignment[]; compact?: boolean; extra?: (a: Assignment) => preact.ComponentChildren }) {
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
              <td>{Math.round(a.progress * 100)}%</td>
              {!compact && <td>{a.started_at ? new Date(a.started_at).toLocaleTimeString() : "–"}</td>}
              <td>{duration(a.started_at, a.finished_at) ?? "–"}</td>
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
