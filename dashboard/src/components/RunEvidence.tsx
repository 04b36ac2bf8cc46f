import { useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";
import type { Api, ApiError } from "../api";
import type { Assignment, Crash, StepTimeline } from "../generated/protocol";
import { OUTCOME_TEXT, crashBadge, crashTitle, exitText, openStep, stepTitle, stepTook } from "../runEvidence";
import { Dialog } from "./Dialog";
import { LogViewer } from "./LogViewer";

/**
 * A run's evidence in one cell: its crash badge, and buttons that open its step timeline and its logcat.
 * Both are read when opened (a job of a thousand phones fetches nothing until someone looks).
 */
export function RunEvidence({ api, assignment }: { api: Api; assignment: Assignment }) {
  const [shown, setShown] = useState<"steps" | "logcat" | null>(null);
  const ended = assignment.finished_at != null;
  const who = assignment.serial ?? `device ${assignment.device_id}`;
  return (
    <span class="run-evidence" data-testid="run-evidence" data-assignment={assignment.id}>
      <CrashBadge crashes={assignment.crashes ?? []} />
      {ended && (
        <>
          <button type="button" class="small ghost" data-testid="open-steps" onClick={() => setShown("steps")}
            aria-label={`Steps of the run on ${who}`}>Steps</button>
          <button type="button" class="small ghost" data-testid="open-logcat" onClick={() => setShown("logcat")}
            aria-label={`Logcat of the run on ${who}`}>Logcat</button>
        </>
      )}
      {shown === "steps" && (
        <Dialog titleId={`steps-title-${assignment.id}`} testId="steps-dialog" onClose={() => setShown(null)}>
          <h2 id={`steps-title-${assignment.id}`}>Run #{assignment.id} on {who}</h2>
          <StepTimelineView api={api} assignmentId={assignment.id} />
          <div class="dialog-actions">
            <button type="button" class="ghost" onClick={() => setShown("logcat")}>Logcat</button>
            <button type="button" onClick={() => setShown(null)}>Close</button>
          </div>
        </Dialog>
      )}
      {shown === "logcat" && <LogViewer api={api} assignmentId={assignment.id} title={`Run #${assignment.id} on ${who}`}
        onClose={() => setShown(null)} />}
    </span>
  );
}

/** "1 crash · 1 ANR", red, naming the processes in its tooltip (text, not only colour). */
export function CrashBadge({ crashes }: { crashes: Crash[] }) {
  const text = crashBadge(crashes);
  if (!text) return null;
  return <span class="badge badge-crash" data-testid="crash-badge" title={crashTitle(crashes)}>{text}</span>;
}

/** The run's steps in order; a failed run opens on (and scrolls to) the step it failed on. */
export function StepTimelineView({ api, assignmentId }: { api: Api; assignmentId: number }) {
  const [timeline, setTimeline] = useState<StepTimeline | null>(null);
  const [error, setError] = useState<string | null>(null);
  const failing = useRef<HTMLElement>(null);

  useEffect(() => {
    let cancelled = false;
    api.steps(assignmentId).then((t) => !cancelled && setTimeline(t))
      .catch((e: ApiError) => !cancelled && setError(e.message));
    return () => { cancelled = true; };
  }, [assignmentId]);

  useLayoutEffect(() => {
    failing.current?.scrollIntoView?.({ block: "nearest" });
  }, [timeline]);

  if (error) return <p class="field-error" role="alert">{error}</p>;
  if (!timeline) return <p class="muted">Loading steps…</p>;
  if (!timeline.steps.length) {
    return <p class="muted" data-testid="no-steps">No step was recorded for this run (its agent may predate step timelines).</p>;
  }
  const opened = openStep(timeline);
  return (
    <>
      {timeline.crashes && timeline.crashes.length > 0 && (
        <ul class="crash-list" data-testid="crash-list">
          {timeline.crashes.map((c, i) => <li key={i}><strong>{c.process}</strong> <span class="mono">{c.line}</span></li>)}
        </ul>
      )}
      <ol class="step-timeline" data-testid="step-timeline">
        {timeline.steps.map((s) => {
          const took = stepTook(s);
          const exit = exitText(s.exit_code);
          const isOpen = s.step_index === opened;
          return (
            <li key={s.step_index} class={`step step-${s.outcome}`} data-testid="step" data-outcome={s.outcome}
              data-index={s.step_index} ref={isOpen ? (failing as preact.Ref<HTMLLIElement>) : undefined}>
              <details open={isOpen}>
                <summary>
                  <span class="step-number">{s.step_index + 1}</span>{" "}
                  <span class="step-title">{stepTitle(s)}</span>{" "}
                  <span class={`badge badge-${s.outcome}`}>{OUTCOME_TEXT[s.outcome]}</span>
                  {took && <span class="muted"> · {took}</span>}
                  {exit && <span class={`mono ${s.exit_code === 0 ? "muted" : "exit-bad"}`}> · {exit}</span>}
                </summary>
                {s.started_at && <p class="muted step-when">started {new Date(s.started_at).toLocaleTimeString()}</p>}
                {s.error && <p class="field-error step-error" data-testid="step-error">{s.error}</p>}
                {s.output_tail ? <pre class="output-tail" data-testid="output-tail">{s.output_tail}</pre>
                  : s.outcome !== "not_run" && <p class="muted">No output.</p>}
                {s.outcome === "not_run" && <p class="muted">The run ended before this step.</p>}
              </details>
            </li>
          );
        })}
      </ol>
    </>
  );
}
