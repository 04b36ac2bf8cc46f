import { useMemo, useState } from "preact/hooks";
import type { Api, ApiError } from "../api";
import {
  humanDetails, initialJobForm, jobCreateOf, type JobFormValues, type JobTiming, placeErrors, planOf, shownKeys,
  validateJobForm,
} from "../jobForm";
import type { Store } from "../store";
import { clearOnInput, describedBy, Dialog, FieldError, focusFirstWrong } from "./Dialog";
import { JobTemplateFields } from "./JobTemplateFields";
import { defaultTeamId, teamKeys, withTeam } from "../teams";
import { TeamPicker } from "./TeamPicker";

export function NewJobDialog({ api, store, onClose }: { api: Api; store: Store; onClose: () => void }) {
  const [form, setForm] = useState<JobFormValues>(initialJobForm);
  const [timing, setTiming] = useState<JobTiming>({ runAt: "", dependsOn: "" });
  // null: not picked, so the default of the teams as known now (the list may arrive after the dialog opened)
  const [picked, setTeam] = useState<number | null>(null);
  const team = picked ?? defaultTeamId(store.teams);
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [busy, setBusy] = useState(false);
  const [plan, planErrors] = useMemo(() => planOf(form), [form.preset, form.values, form.custom]);
  const allErrors = { ...errors, ...planErrors };

  async function submit(e: Event) {
    e.preventDefault();
    // checked here first, in the same words the server's 422 is shown in: nothing is sent while any is wrong
    const local = validateJobForm(form, timing);
    if (Object.keys(local).length || Object.keys(planErrors).length) {
      setErrors(local);
      focusFirstWrong(e.currentTarget as HTMLFormElement);
      return;
    }
    setBusy(true);
    setErrors({});
    try {
      store.putJob(await api.createJob(withTeam(jobCreateOf(form, timing, plan), team)));
      onClose();
    } catch (err) {
      const apiErr = err as ApiError;
      const worded = { message: apiErr.message, details: humanDetails(apiErr.details, form.targetType) };
      const own = ["run_at", "depends_on", ...teamKeys(store.teams)];
      setErrors(placeErrors(worded, form.preset, shownKeys(form.preset, own)));
    } finally {
      setBusy(false);
    }
  }

  return (
    <Dialog titleId="new-job-title" testId="new-job-dialog" onClose={onClose}>
      <form onSubmit={submit} noValidate onInput={clearOnInput(errors, setErrors)}>
        <h2 id="new-job-title">New job</h2>
        {allErrors[""] && <p class="field-error" role="alert" data-testid="error-general">{allErrors[""]}</p>}

        <TeamPicker teams={store.teams} value={team} onChange={setTeam} errors={allErrors} />
        <JobTemplateFields form={form} onChange={setForm} plan={plan} errors={allErrors} store={store} teamId={team} />

        <fieldset>
          <legend>When</legend>
          <div class="row">
            <div>
              <label for="run_at">Run at <span class="muted">(empty: now)</span></label>
              <input id="run_at" type="datetime-local" value={timing.runAt} data-testid="run-at"
                onInput={(e) => setTiming({ ...timing, runAt: (e.target as HTMLInputElement).value })}
                {...describedBy(allErrors, "run_at")} />
              <FieldError id="run_at" message={allErrors.run_at} />
            </div>
            <div>
              <label for="depends_on">Depends on <span class="muted">(job ids)</span></label>
              <input id="depends_on" value={timing.dependsOn} placeholder="12, 15" data-testid="depends-on"
                title="Starts once every one of these jobs completed without failures"
                onInput={(e) => setTiming({ ...timing, dependsOn: (e.target as HTMLInputElement).value })}
                {...describedBy(allErrors, "depends_on")} />
              <FieldError id="depends_on" message={allErrors.depends_on} />
            </div>
          </div>
        </fieldset>

        <div class="dialog-actions">
          <button type="button" class="ghost" onClick={onClose}>Cancel</button>
          <button type="submit" disabled={busy} data-testid="create">{busy ? "Creating…" : "Create job"}</button>
        </div>
      </form>
    </Dialog>
  );
}
