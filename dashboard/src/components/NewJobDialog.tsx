import { useLayoutEffect, useMemo, useRef, useState } from "preact/hooks";
import { type Api, ApiError } from "../api";
import {
  defaultTitle, eligibleDevices, expectedPhones, groupFieldErrors, parseList, PRESETS, type PresetId, presetPlan,
  type PresetValues, STEP_TEMPLATES,
} from "../logic";
import type { Store } from "../store";
import { STEP_TYPES, type JobCreate, type JobFilters, type Step, type StepType, type TargetType } from "../types";

interface CustomStep {
  type: StepType;
  params: string; // JSON object of the step's other fields
}

function FieldError({ id, message }: { id: string; message?: string }) {
  return message ? <p id={id} class="field-error" role="alert" data-testid={`error-${id}`}>{message}</p> : null;
}

export function NewJobDialog({ api, store, onClose }: { api: Api; store: Store; onClose: () => void }) {
  const [preset, setPreset] = useState<PresetId>("open_url");
  const [values, setValues] = useState<PresetValues>({
    url: "https://example.com", duration_sec: "60", package: "com.android.settings",
    apk_url: "https://example.com/app.apk",
  });
  const [custom, setCustom] = useState<CustomStep[]>([{ type: "open_url", params: JSON.stringify(STEP_TEMPLATES.open_url) }]);
  const [title, setTitle] = useState("");
  const [titleEdited, setTitleEdited] = useState(false);
  const [targetType, setTargetType] = useState<TargetType>("all_devices");
  const [percent, setPercent] = useState("50");
  const [count, setCount] = useState("1");
  const [priority, setPriority] = useState("0");
  const [models, setModels] = useState("");
  const [versions, setVersions] = useState("");
  const [tags, setTags] = useState("");
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [busy, setBusy] = useState(false);
  const dialog = useRef<HTMLDivElement>(null);
  const opener = useRef<Element | null>(document.activeElement);

  // a layout effect, so focus is inside the dialog (and Escape closes it) before the next key press
  useLayoutEffect(() => {
    dialog.current?.querySelector<HTMLElement>("select, input")?.focus();
    const prev = opener.current;
    return () => (prev as HTMLElement | null)?.focus?.();
  }, []);

  // The plan as it stands; a custom step whose JSON does not parse is reported beside it.
  const [plan, planErrors] = useMemo((): [Step[], Record<string, string>] => {
    if (preset !== "custom") return [presetPlan(preset, values), {}];
    const steps: Step[] = [];
    const errs: Record<string, string> = {};
    custom.forEach((s, i) => {
      try {
        const params = s.params.trim() ? JSON.parse(s.params) : {};
        if (typeof params !== "object" || params === null || Array.isArray(params)) throw new Error("not an object");
        steps.push({ ...params, type: s.type } as Step);
      } catch {
        errs[`plan.${i}`] = "Parameters must be a JSON object, e.g. {\"duration_sec\": 5}";
      }
    });
    return [steps, errs];
  }, [preset, values, custom]);

  const autoTitle = defaultTitle(plan);
  const filters: JobFilters = {
    ...(parseList(models) ? { models: parseList(models) } : {}),
    ...(parseList(versions) ? { android_versions: parseList(versions) } : {}),
    ...(parseList(tags) ? { tags: parseList(tags) } : {}),
  };
  const connected = store.connectedPhones;
  const eligible = eligibleDevices(store.devices.values(), filters);
  const targetValue = targetType === "percentage" ? Number(percent) : targetType === "device_count" ? Number(count) : null;
  const expected = expectedPhones(targetType, targetValue, eligible);
  const allErrors = { ...errors, ...planErrors };

  function set<K extends keyof PresetValues>(key: K) {
    return (e: Event) => setValues({ ...values, [key]: (e.target as HTMLInputElement).value });
  }

  async function submit(e: Event) {
    e.preventDefault();
    if (Object.keys(planErrors).length) return;
    const body: JobCreate = {
      title: (titleEdited ? title : autoTitle).trim() || autoTitle,
      plan: plan as JobCreate["plan"],
      target_type: targetType,
      priority: Number.isInteger(Number(priority)) ? Number(priority) : (priority as unknown as number),
      filters,
    };
    if (targetType !== "all_devices") {
      body.target_value = Number.isInteger(targetValue) ? targetValue : (targetValue as number);
    }
    setBusy(true);
    setErrors({});
    try {
      const job = await api.createJob(body);
      store.putJob(job);
      onClose();
    } catch (err) {
      const e2 = err as ApiError;
      const grouped = groupFieldErrors(e2.details, preset);
      if (!Object.keys(grouped).length || grouped[""] !== undefined) grouped[""] = grouped[""] ?? e2.message;
      setErrors(grouped);
    } finally {
      setBusy(false);
    }
  }

  function onKey(e: KeyboardEvent) {
    if (e.key === "Escape") {
      e.stopPropagation();
      onClose();
    }
    if (e.key === "Tab" && dialog.current) { // keep focus inside the dialog
      const focusable = dialog.current.querySelectorAll<HTMLElement>("input, select, textarea, button");
      const first = focusable[0];
      const last = focusable[focusable.length - 1];
      if (e.shiftKey && document.activeElement === first) {
        e.preventDefault();
        last.focus();
      } else if (!e.shiftKey && document.activeElement === last) {
        e.preventDefault();
        first.focus();
      }
    }
  }

  const general = allErrors[""] ?? (allErrors["plan"] && preset !== "custom" ? allErrors["plan"] : undefined);
  const described = (key: string): { "aria-invalid"?: boolean; "aria-describedby"?: string } =>
    (allErrors[key] ? { "aria-invalid": true, "aria-describedby": key } : {});

  return (
    <div class="overlay" onClick={(e) => e.target === e.currentTarget && onClose()}>
      <div class="dialog" role="dialog" aria-modal="true" aria-labelledby="new-job-title" ref={dialog}
        onKeyDown={onKey} data-testid="new-job-dialog">
        <form onSubmit={submit} noValidate onInput={(e) => {
          // editing a field clears the server's complaint about it (and the general one)
          const key = (e.target as HTMLElement).getAttribute("aria-describedby");
          if ((key && key in errors) || "" in errors) {
            const next = { ...errors };
            if (key) delete next[key];
            delete next[""];
            setErrors(next);
          }
        }}>
          <h2 id="new-job-title">New job</h2>
          {general && <p class="field-error" role="alert" data-testid="error-general">{general}</p>}

          <fieldset>
            <legend>Plan</legend>
            <label for="preset">What to do</label>
            <select id="preset" value={preset} data-testid="preset"
              onChange={(e) => setPreset((e.target as HTMLSelectElement).value as PresetId)}>
              {PRESETS.map((p) => <option key={p.id} value={p.id}>{p.label}</option>)}
            </select>
            {preset === "open_url" && (
              <div class="row">
                <div>
                  <label for="url">URL</label>
                  <input id="url" type="url" value={values.url} onInput={set("url")} {...described("url")} />
                  <FieldError id="url" message={allErrors.url} />
                </div>
                <div class="narrow">
                  <label for="duration_sec">Seconds</label>
                  <input id="duration_sec" type="number" min="0" value={values.duration_sec}
                    onInput={set("duration_sec")} {...described("duration_sec")} />
                  <FieldError id="duration_sec" message={allErrors.duration_sec} />
                </div>
              </div>
            )}
            {preset === "launch_app" && (
              <div>
                <label for="package">Package</label>
                <input id="package" value={values.package} onInput={set("package")} {...described("package")} />
                <FieldError id="package" message={allErrors.package} />
              </div>
            )}
            {preset === "install_apk" && (
              <div>
                <label for="apk_url">APK URL</label>
                <input id="apk_url" type="url" value={values.apk_url} onInput={set("apk_url")} {...described("apk_url")} />
                <FieldError id="apk_url" message={allErrors.apk_url} />
              </div>
            )}
            {preset === "custom" && (
              <ol class="steps">
                {custom.map((s, i) => (
                  <li key={i}>
                    <select aria-label={`Step ${i + 1} type`} value={s.type} onChange={(e) => {
                      const type = (e.target as HTMLSelectElement).value as StepType;
                      setCustom(custom.map((c, j) => j === i ? { type, params: JSON.stringify(STEP_TEMPLATES[type]) } : c));
                    }}>
                      {STEP_TYPES.map((t) => <option key={t} value={t}>{t}</option>)}
                    </select>
                    <input aria-label={`Step ${i + 1} parameters (JSON)`} value={s.params} class="mono"
                      onInput={(e) => setCustom(custom.map((c, j) =>
                        j === i ? { ...c, params: (e.target as HTMLInputElement).value } : c))}
                      {...described(`plan.${i}`)} />
                    <button type="button" class="ghost" aria-label={`Remove step ${i + 1}`} disabled={custom.length === 1}
                      onClick={() => setCustom(custom.filter((_, j) => j !== i))}>✕</button>
                    <FieldError id={`plan.${i}`} message={allErrors[`plan.${i}`]} />
                  </li>
                ))}
                <li>
                  <button type="button" class="ghost" onClick={() =>
                    setCustom([...custom, { type: "wait", params: JSON.stringify(STEP_TEMPLATES.wait) }])}>
                    Add step
                  </button>
                  <FieldError id="plan" message={allErrors.plan} />
                </li>
              </ol>
            )}
          </fieldset>

          <label for="title">Title</label>
          <input id="title" value={titleEdited ? title : autoTitle} placeholder={autoTitle} data-testid="title"
            onInput={(e) => { setTitle((e.target as HTMLInputElement).value); setTitleEdited(true); }}
            {...described("title")} />
          <FieldError id="title" message={allErrors.title} />

          <fieldset>
            <legend>Target</legend>
            <div class="radios" role="radiogroup">
              <label><input type="radio" name="target" checked={targetType === "all_devices"}
                onChange={() => setTargetType("all_devices")} data-testid="target-all" /> All phones</label>
              <label><input type="radio" name="target" checked={targetType === "percentage"}
                onChange={() => setTargetType("percentage")} data-testid="target-percentage" /> Percentage</label>
              <label><input type="radio" name="target" checked={targetType === "device_count"}
                onChange={() => setTargetType("device_count")} data-testid="target-count" /> Count</label>
            </div>
            {targetType === "percentage" && (
              <div class="narrow">
                <label for="percent">Percent of phones</label>
                <input id="percent" type="number" min="1" max="100" value={percent} data-testid="percent"
                  onInput={(e) => setPercent((e.target as HTMLInputElement).value)} {...described("target_value")} />
              </div>
            )}
            {targetType === "device_count" && (
              <div class="narrow">
                <label for="count">Number of phones</label>
                <input id="count" type="number" min="1" value={count} data-testid="count"
                  onInput={(e) => setCount((e.target as HTMLInputElement).value)} {...described("target_value")} />
              </div>
            )}
            <FieldError id="target_value" message={allErrors.target_value} />
            <FieldError id="target_type" message={allErrors.target_type} />
            <p class="hint" data-testid="expected" aria-live="polite">
              {connected} {connected === 1 ? "phone" : "phones"} connected now
              {eligible !== connected && `, ${eligible} eligible`} · expected: {expected}{" "}
              {expected === 1 ? "phone" : "phones"}
              {targetType === "device_count" && expected > eligible && " (fills as phones become free)"}
            </p>
          </fieldset>

          <div class="row">
            <div class="narrow">
              <label for="priority">Priority</label>
              <input id="priority" type="number" min="-1000" max="1000" value={priority}
                onInput={(e) => setPriority((e.target as HTMLInputElement).value)} {...described("priority")} />
              <FieldError id="priority" message={allErrors.priority} />
            </div>
          </div>

          <details>
            <summary>Filters (optional)</summary>
            <label for="models">Models (comma-separated)</label>
            <input id="models" value={models} onInput={(e) => setModels((e.target as HTMLInputElement).value)}
              {...described("filters.models")} />
            <FieldError id="filters.models" message={allErrors["filters.models"]} />
            <label for="versions">Android versions</label>
            <input id="versions" value={versions} placeholder="13, 14"
              onInput={(e) => setVersions((e.target as HTMLInputElement).value)} {...described("filters.android_versions")} />
            <FieldError id="filters.android_versions" message={allErrors["filters.android_versions"]} />
            <label for="tags">Tags (the phone must carry all)</label>
            <input id="tags" value={tags} onInput={(e) => setTags((e.target as HTMLInputElement).value)}
              {...described("filters.tags")} />
            <FieldError id="filters.tags" message={allErrors["filters.tags"]} />
          </details>

          <div class="dialog-actions">
            <button type="button" class="ghost" onClick={onClose}>Cancel</button>
            <button type="submit" disabled={busy} data-testid="create">{busy ? "Creating…" : "Create job"}</button>
          </div>
        </form>
      </div>
    </div>
  );
}
