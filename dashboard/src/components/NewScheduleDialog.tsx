import { useMemo, useState } from "preact/hooks";
import type { Api, ApiError } from "../api";
import {
  humanScheduleDetails, initialJobForm, initialScheduleForm, type IntervalUnit, type JobFormValues, placeErrors,
  planOf, scheduleCreateOf, type ScheduleFormValues, shownKeys, templateOf, validateScheduleForm,
} from "../jobForm";
import type { Store } from "../store";
import type { MisfirePolicy, Schedule } from "../types";
import { clearOnInput, describedBy, Dialog, FieldError, focusFirstWrong } from "./Dialog";
import { JobTemplateFields } from "./JobTemplateFields";
import { defaultTeamId, teamKeys, withTeam } from "../teams";
import { TeamPicker } from "./TeamPicker";

const UNITS: { id: IntervalUnit; label: string }[] = [
  { id: "s", label: "seconds" }, { id: "min", label: "minutes" }, { id: "h", label: "hours" }, { id: "d", label: "days" },
];

function browserZone(): string {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  } catch {
    return "UTC";
  }
}

function zones(): string[] {
  try {
    const known = Intl.supportedValuesOf("timeZone");
    return known.includes("UTC") ? known : ["UTC", ...known];
  } catch {
    return [];
  }
}

/** A new schedule: its name and rule, then the job it fires, with the very fields of the New job form. */
export function NewScheduleDialog({ api, store, onClose, onCreated }:
  { api: Api; store: Store; onClose: () => void; onCreated: (s: Schedule) => void }) {
  const [sched, setSched] = useState<ScheduleFormValues>(() => initialScheduleForm(browserZone()));
  const [form, setForm] = useState<JobFormValues>(initialJobForm);
  // null: not picked, so the default of the teams as known now (the list may arrive after the dialog opened)
  const [picked, setTeam] = useState<number | null>(null);
  const team = picked ?? defaultTeamId(store.teams);
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [busy, setBusy] = useState(false);
  const [plan, planErrors] = useMemo(() => planOf(form), [form.preset, form.values, form.custom]);
  const timezones = useMemo(zones, []);
  const allErrors = { ...errors, ...planErrors };
  const described = (key: string) => describedBy(allErrors, key);
  const set = (patch: Partial<ScheduleFormValues>) => setSched({ ...sched, ...patch });
  const text = (key: "name" | "cron" | "timezone" | "every") => (e: Event) =>
    set({ [key]: (e.target as HTMLInputElement).value });

  async function submit(e: Event) {
    e.preventDefault();
    // checked here first, in the same words the server's 422 is shown in: nothing is sent while any is wrong
    const local = validateScheduleForm(sched, form);
    if (Object.keys(local).length || Object.keys(planErrors).length) {
      setErrors(local);
      focusFirstWrong(e.currentTarget as HTMLFormElement);
      return;
    }
    setBusy(true);
    setErrors({});
    try {
      onCreated(await api.createSchedule(withTeam(scheduleCreateOf(sched, templateOf(form, plan)), team)));
      onClose();
    } catch (err) {
      const own = [...(sched.rule === "cron" ? ["name", "cron", "timezone", "misfire_policy"] :
        ["name", "interval_sec", "misfire_policy"]), ...teamKeys(store.teams)];
      const apiErr = err as ApiError;
      const worded = { message: apiErr.message, details: humanScheduleDetails(apiErr.details, sched, form.targetType) };
      setErrors(placeErrors(worded, form.preset, shownKeys(form.preset, own), "template."));
    } finally {
      setBusy(false);
    }
  }

  return (
    <Dialog titleId="new-schedule-title" testId="new-schedule-dialog" onClose={onClose}>
      <form onSubmit={submit} noValidate onInput={clearOnInput(errors, setErrors)}>
        <h2 id="new-schedule-title">New schedule</h2>
        {allErrors[""] && <p class="field-error" role="alert" data-testid="error-general">{allErrors[""]}</p>}

        <label for="schedule-name">Name</label>
        <input id="schedule-name" value={sched.name} placeholder="Nightly smoke test" data-testid="schedule-name"
          onInput={text("name")} {...described("name")} />
        <FieldError id="name" message={allErrors.name} />
        <TeamPicker teams={store.teams} value={team} onChange={setTeam} errors={allErrors} />

        <fieldset>
          <legend>When it runs</legend>
          <div class="radios" role="radiogroup" aria-label="Rule">
            <label><input type="radio" name="rule" checked={sched.rule === "cron"} data-testid="rule-cron"
              onChange={() => set({ rule: "cron" })} /> Cron expression</label>
            <label><input type="radio" name="rule" checked={sched.rule === "interval"} data-testid="rule-interval"
              onChange={() => set({ rule: "interval" })} /> Every…</label>
          </div>
          {sched.rule === "cron" ? (
            <div class="row">
              <div>
                <label for="cron">Cron</label>
                <input id="cron" class="mono" value={sched.cron} placeholder="0 9 * * 1-5" data-testid="cron"
                  onInput={text("cron")} {...described("cron")} />
                <p class="hint">minute hour day month weekday, or @hourly, @daily, @weekly…</p>
                <FieldError id="cron" message={allErrors.cron} />
              </div>
              <div>
                <label for="timezone">Time zone</label>
                <input id="timezone" value={sched.timezone} list="timezones" placeholder="UTC" data-testid="timezone"
                  onInput={text("timezone")} {...described("timezone")} />
                <datalist id="timezones">{timezones.map((z) => <option key={z} value={z} />)}</datalist>
                <FieldError id="timezone" message={allErrors.timezone} />
              </div>
            </div>
          ) : (
            <div class="row">
              <div class="narrow">
                <label for="every">Every</label>
                <input id="every" type="number" min="1" value={sched.every} data-testid="every"
                  onInput={text("every")} {...described("interval_sec")} />
              </div>
              <div class="narrow">
                <label for="unit">Unit</label>
                <select id="unit" value={sched.unit} data-testid="unit"
                  onChange={(e) => set({ unit: (e.target as HTMLSelectElement).value as IntervalUnit })}
                  {...described("interval_sec")}>
                  {UNITS.map((u) => <option key={u.id} value={u.id}>{u.label}</option>)}
                </select>
              </div>
              <FieldError id="interval_sec" message={allErrors.interval_sec} />
            </div>
          )}
          <div class="row">
            <div>
              <label for="misfire_policy">Missed while the server was down</label>
              <select id="misfire_policy" value={sched.misfirePolicy} data-testid="misfire-policy"
                onChange={(e) => set({ misfirePolicy: (e.target as HTMLSelectElement).value as MisfirePolicy })}
                {...described("misfire_policy")}>
                <option value="run_once">Run once on start-up</option>
                <option value="skip">Skip the missed runs</option>
              </select>
              <FieldError id="misfire_policy" message={allErrors.misfire_policy} />
            </div>
            <div class="narrow">
              <label class="check"><input type="checkbox" checked={sched.enabled} data-testid="schedule-enabled-new"
                onChange={(e) => set({ enabled: (e.target as HTMLInputElement).checked })} /> Enabled</label>
            </div>
          </div>
        </fieldset>

        <h3 class="subhead">The job it starts</h3>
        <JobTemplateFields form={form} onChange={setForm} plan={plan} errors={allErrors} store={store} teamId={team} />

        <div class="dialog-actions">
          <button type="button" class="ghost" onClick={onClose}>Cancel</button>
          <button type="submit" disabled={busy} data-testid="create-schedule">
            {busy ? "Creating…" : "Create schedule"}
          </button>
        </div>
      </form>
    </Dialog>
  );
}
