import { countWarning, filtersOf, type JobFormValues, matchingPhones, targetValueOf } from "../jobForm";
import {
  defaultTitle, eligibleDevices, expectedPhones, PRESETS, type PresetId, type PresetValues, STEP_TEMPLATES,
} from "../logic";
import type { Store } from "../store";
import { teamPhones } from "../teams";
import { STEP_TYPES, type Step, type StepType } from "../types";
import { describedBy, FieldError } from "./Dialog";

/**
 * What a job is (plan, title, target, priority and limits, filters): the fields a new job and a schedule's
 * template share. Controlled: the owner keeps the values and turns them into a body (jobForm.ts).
 */
export function JobTemplateFields({ form, onChange, plan, errors, store, teamId = null }: {
  form: JobFormValues;
  onChange: (next: JobFormValues) => void;
  /** planOf(form), computed once by the owner. */
  plan: Step[];
  errors: Record<string, string>;
  store: Store;
  /** The team the job goes to: its phones are those counted (null: every phone the page knows). */
  teamId?: number | null;
}) {
  const set = (patch: Partial<JobFormValues>) => onChange({ ...form, ...patch });
  const input = (key: keyof JobFormValues) => (e: Event) => set({ [key]: (e.target as HTMLInputElement).value });
  const value = (key: keyof PresetValues) => (e: Event) =>
    set({ values: { ...form.values, [key]: (e.target as HTMLInputElement).value } });
  const described = (key: string) => describedBy(errors, key);

  const autoTitle = defaultTitle(plan);
  const connected = store.connectedPhones;
  const filters = filtersOf(form);
  const phones = teamPhones(store.devices.values(), store.agents, teamId);
  const eligible = eligibleDevices(phones, filters);
  const matching = matchingPhones(phones, filters);
  const warning = countWarning(form, matching);
  // a count above the phones that can ever run the job stops at them (the warning says so)
  const asked = expectedPhones(form.targetType, targetValueOf(form), eligible);
  const expected = warning ? Math.min(asked, matching) : asked;
  const { custom } = form;

  return (
    <>
      <fieldset>
        <legend>Plan</legend>
        <label for="preset">What to do</label>
        <select id="preset" value={form.preset} data-testid="preset"
          onChange={(e) => set({ preset: (e.target as HTMLSelectElement).value as PresetId })}>
          {PRESETS.map((p) => <option key={p.id} value={p.id}>{p.label}</option>)}
        </select>
        {form.preset === "open_url" && (
          <div class="row">
            <div>
              <label for="url">URL</label>
              <input id="url" type="url" value={form.values.url} onInput={value("url")} {...described("url")} />
              <FieldError id="url" message={errors.url} />
            </div>
            <div class="narrow">
              <label for="duration_sec">Seconds</label>
              <input id="duration_sec" type="number" min="0" value={form.values.duration_sec}
                onInput={value("duration_sec")} {...described("duration_sec")} />
              <FieldError id="duration_sec" message={errors.duration_sec} />
            </div>
          </div>
        )}
        {form.preset === "launch_app" && (
          <div>
            <label for="package">Package</label>
            <input id="package" value={form.values.package} onInput={value("package")} {...described("package")} />
            <FieldError id="package" message={errors.package} />
          </div>
        )}
        {form.preset === "install_apk" && (
          <div>
            <label for="apk_url">APK URL</label>
            <input id="apk_url" type="url" value={form.values.apk_url} onInput={value("apk_url")}
              {...described("apk_url")} />
            <FieldError id="apk_url" message={errors.apk_url} />
          </div>
        )}
        {form.preset === "custom" && (
          <ol class="steps">
            {custom.map((s, i) => (
              <li key={i}>
                <select aria-label={`Step ${i + 1} type`} value={s.type} onChange={(e) => {
                  const type = (e.target as HTMLSelectElement).value as StepType;
                  set({ custom: custom.map((c, j) => j === i ? { type, params: JSON.stringify(STEP_TEMPLATES[type]) } : c) });
                }}>
                  {STEP_TYPES.map((t) => <option key={t} value={t}>{t}</option>)}
                </select>
                <input aria-label={`Step ${i + 1} parameters (JSON)`} value={s.params} class="mono"
                  onInput={(e) => set({ custom: custom.map((c, j) =>
                    j === i ? { ...c, params: (e.target as HTMLInputElement).value } : c) })}
                  {...described(`plan.${i}`)} />
                <button type="button" class="ghost" aria-label={`Remove step ${i + 1}`} disabled={custom.length === 1}
                  onClick={() => set({ custom: custom.filter((_, j) => j !== i) })}>✕</button>
                <FieldError id={`plan.${i}`} message={errors[`plan.${i}`]} />
              </li>
            ))}
            <li>
              <button type="button" class="ghost" onClick={() =>
                set({ custom: [...custom, { type: "wait", params: JSON.stringify(STEP_TEMPLATES.wait) }] })}>
                Add step
              </button>
              <FieldError id="plan" message={errors.plan} />
            </li>
          </ol>
        )}
      </fieldset>

      <label for="title">Title</label>
      <input id="title" value={form.titleEdited ? form.title : autoTitle} placeholder={autoTitle} data-testid="title"
        onInput={(e) => set({ title: (e.target as HTMLInputElement).value, titleEdited: true })}
        {...described("title")} />
      <FieldError id="title" message={errors.title} />

      <fieldset>
        <legend>Target</legend>
        <div class="radios" role="radiogroup">
          <label><input type="radio" name="target" checked={form.targetType === "all_devices"}
            onChange={() => set({ targetType: "all_devices" })} data-testid="target-all" /> All phones</label>
          <label><input type="radio" name="target" checked={form.targetType === "percentage"}
            onChange={() => set({ targetType: "percentage" })} data-testid="target-percentage" /> Percentage</label>
          <label><input type="radio" name="target" checked={form.targetType === "device_count"}
            onChange={() => set({ targetType: "device_count" })} data-testid="target-count" /> Count</label>
        </div>
        {form.targetType === "percentage" && (
          <div class="narrow">
            <label for="percent">Percent of phones</label>
            <input id="percent" type="number" min="1" max="100" value={form.percent} data-testid="percent"
              onInput={input("percent")} {...described("target_value")} />
          </div>
        )}
        {form.targetType === "device_count" && (
          <div class="narrow">
            <label for="count">Number of phones</label>
            <input id="count" type="number" min="1" value={form.count} data-testid="count"
              onInput={input("count")} {...described("target_value")} />
          </div>
        )}
        <FieldError id="target_value" message={errors.target_value} />
        <FieldError id="target_type" message={errors.target_type} />
        <p class="hint" data-testid="expected" aria-live="polite">
          {connected} {connected === 1 ? "phone" : "phones"} connected now
          {eligible !== connected && `, ${eligible} eligible`} · expected: {expected}{" "}
          {expected === 1 ? "phone" : "phones"}
          {form.targetType === "device_count" && expected > eligible && !warning && " (fills as phones become free)"}
        </p>
        {warning && <p class="hint warning" role="status" data-testid="count-warning">{warning}</p>}
      </fieldset>

      <div class="row">
        <div class="narrow">
          <label for="priority">Priority</label>
          <input id="priority" type="number" min="-1000" max="1000" value={form.priority}
            onInput={input("priority")} {...described("priority")} />
          <FieldError id="priority" message={errors.priority} />
        </div>
        <div class="narrow">
          <label for="max_parallel">Max parallel</label>
          <input id="max_parallel" type="number" min="1" value={form.maxParallel} placeholder="no limit"
            title="At most this many phones run the job at once" onInput={input("maxParallel")}
            {...described("max_parallel")} />
          <FieldError id="max_parallel" message={errors.max_parallel} />
        </div>
        <div class="narrow">
          <label for="max_retries">Max retries</label>
          <input id="max_retries" type="number" min="0" max="100" value={form.maxRetries}
            title="A failed phone's slot is tried again on another phone this many times"
            onInput={input("maxRetries")} {...described("max_retries")} />
          <FieldError id="max_retries" message={errors.max_retries} />
        </div>
      </div>

      <details>
        <summary>Filters (optional)</summary>
        <label for="models">Models (comma-separated)</label>
        <input id="models" value={form.models} onInput={input("models")} {...described("filters.models")} />
        <FieldError id="filters.models" message={errors["filters.models"]} />
        <label for="versions">Android versions</label>
        <input id="versions" value={form.versions} placeholder="13, 14" onInput={input("versions")}
          {...described("filters.android_versions")} />
        <FieldError id="filters.android_versions" message={errors["filters.android_versions"]} />
        <label for="tags">Tags (the phone must carry all)</label>
        <input id="tags" value={form.tags} onInput={input("tags")} {...described("filters.tags")} />
        <FieldError id="filters.tags" message={errors["filters.tags"]} />
      </details>
    </>
  );
}
