// The job form as typed (strings) and the bodies it makes: a JobTemplate for a schedule, a JobCreate for a
// job, a ScheduleCreate around a template. Pure, unit-tested in jobForm.test.ts. Numbers are parsed here;
// a bad one goes to the server as typed, so its 422 names the field (as the preset plans already do).
import { defaultTitle, formFieldOf, parseList, type PresetId, presetPlan, type PresetValues, STEP_TEMPLATES } from "./logic";
import type {
  ErrorDetail, JobCreate, JobFilters, JobTemplate, MisfirePolicy, ScheduleCreate, Step, StepType, TargetType,
} from "./types";

export interface CustomStep {
  type: StepType;
  params: string; // JSON object of the step's other fields
}

/** Everything a job template is made of, as the form holds it. */
export interface JobFormValues {
  preset: PresetId;
  values: PresetValues;
  custom: CustomStep[];
  title: string;
  /** false: the title follows the plan (defaultTitle). */
  titleEdited: boolean;
  targetType: TargetType;
  percent: string;
  count: string;
  priority: string;
  /** "" = no limit. */
  maxParallel: string;
  maxRetries: string;
  models: string;
  versions: string;
  tags: string;
}

/** When a one-off job starts: the fields a JobCreate has beyond its template. */
export interface JobTiming {
  /** An <input type="datetime-local"> value (local time), "" = now. */
  runAt: string;
  /** Job ids, "12, #15". */
  dependsOn: string;
}

export function initialJobForm(): JobFormValues {
  return {
    preset: "open_url",
    values: { url: "https://example.com", duration_sec: "60", package: "com.android.settings",
      apk_url: "https://example.com/app.apk" },
    custom: [{ type: "open_url", params: JSON.stringify(STEP_TEMPLATES.open_url) }],
    title: "", titleEdited: false, targetType: "all_devices", percent: "50", count: "1",
    priority: "0", maxParallel: "", maxRetries: "0", models: "", versions: "", tags: "",
  };
}

/** The plan as it stands; a custom step whose JSON does not parse is reported by its key (plan.<i>). */
export function planOf(form: JobFormValues): [Step[], Record<string, string>] {
  if (form.preset !== "custom") return [presetPlan(form.preset, form.values), {}];
  const steps: Step[] = [];
  const errors: Record<string, string> = {};
  form.custom.forEach((s, i) => {
    try {
      const params: unknown = s.params.trim() ? JSON.parse(s.params) : {};
      if (typeof params !== "object" || params === null || Array.isArray(params)) throw new Error("not an object");
      steps.push({ ...params, type: s.type } as Step);
    } catch {
      errors[`plan.${i}`] = "Parameters must be a JSON object, e.g. {\"duration_sec\": 5}";
    }
  });
  return [steps, errors];
}

export function filtersOf(form: Pick<JobFormValues, "models" | "versions" | "tags">): JobFilters {
  const models = parseList(form.models);
  const versions = parseList(form.versions);
  const tags = parseList(form.tags);
  return {
    ...(models ? { models } : {}),
    ...(versions ? { android_versions: versions } : {}),
    ...(tags ? { tags } : {}),
  };
}

export function targetValueOf(form: Pick<JobFormValues, "targetType" | "percent" | "count">): number | null {
  if (form.targetType === "percentage") return Number(form.percent);
  if (form.targetType === "device_count") return Number(form.count);
  return null;
}

/** An integer as typed; otherwise the text itself, typed as a number so the server's 422 names the field. */
export function intOrAsTyped(text: string): number {
  const t = text.trim();
  const n = Number(t);
  return t !== "" && Number.isInteger(n) ? n : (t as unknown as number);
}

/** The template the form describes; optional numbers left empty are left out (the server's defaults). */
export function templateOf(form: JobFormValues, plan: Step[]): JobTemplate {
  const autoTitle = defaultTitle(plan);
  const template: JobTemplate = {
    title: (form.titleEdited ? form.title : autoTitle).trim() || autoTitle,
    plan: plan as JobTemplate["plan"],
    target_type: form.targetType,
    priority: form.priority.trim() === "" ? 0 : intOrAsTyped(form.priority),
    filters: filtersOf(form),
  };
  if (form.targetType !== "all_devices") template.target_value = targetValueOf(form);
  if (form.maxParallel.trim() !== "") template.max_parallel = intOrAsTyped(form.maxParallel);
  if (form.maxRetries.trim() !== "") template.max_retries = intOrAsTyped(form.maxRetries);
  return template;
}

/**
 * A datetime-local value ("2025-03-01T09:30", the browser's local time) as an ISO instant; "" -> null.
 * Text that is not a time is passed on as typed for the server to name.
 */
export function localToIso(local: string): string | null {
  const t = local.trim();
  if (!t) return null;
  const ms = new Date(t).getTime();
  return Number.isFinite(ms) ? new Date(ms).toISOString() : t;
}

/** "12, #15 ,16" -> [12, 15, 16]; a token that is no id is kept as typed (the server's 422 names it). */
export function parseIds(text: string): number[] {
  return (parseList(text) ?? []).map((s) => intOrAsTyped(s.replace(/^#/, "")));
}

export function jobCreateOf(form: JobFormValues, timing: JobTiming, plan: Step[]): JobCreate {
  const body: JobCreate = templateOf(form, plan);
  const runAt = localToIso(timing.runAt);
  if (runAt !== null) body.run_at = runAt;
  const deps = parseIds(timing.dependsOn);
  if (deps.length) body.depends_on = deps;
  return body;
}

export type IntervalUnit = "s" | "min" | "h" | "d";
export const UNIT_SECONDS: Record<IntervalUnit, number> = { s: 1, min: 60, h: 3600, d: 86_400 };

/** A schedule's own fields, as typed. */
export interface ScheduleFormValues {
  name: string;
  rule: "cron" | "interval";
  cron: string;
  timezone: string;
  every: string;
  unit: IntervalUnit;
  misfirePolicy: MisfirePolicy;
  enabled: boolean;
}

export function initialScheduleForm(timezone = "UTC"): ScheduleFormValues {
  return { name: "", rule: "cron", cron: "0 9 * * *", timezone, every: "1", unit: "h", misfirePolicy: "run_once",
    enabled: true };
}

/** "every N unit" in seconds; a count that is not a whole number of seconds is passed on as typed. */
export function intervalSeconds(every: string, unit: IntervalUnit): number {
  const n = Number(every.trim());
  const sec = n * UNIT_SECONDS[unit];
  return every.trim() !== "" && Number.isInteger(sec) ? sec : (every.trim() as unknown as number);
}

export function scheduleCreateOf(s: ScheduleFormValues, template: JobTemplate): ScheduleCreate {
  const body: ScheduleCreate = {
    name: s.name.trim(), template, misfire_policy: s.misfirePolicy, enabled: s.enabled,
  };
  if (s.rule === "cron") {
    body.cron = s.cron.trim();
    body.timezone = s.timezone.trim() || "UTC";
  } else {
    body.interval_sec = intervalSeconds(s.every, s.unit);
  }
  return body;
}

/** Form keys the shared template fields show (the preset's own inputs are added per preset). */
const TEMPLATE_KEYS = ["title", "target_type", "target_value", "priority", "max_parallel", "max_retries",
  "filters.models", "filters.android_versions", "filters.tags"];
const PRESET_KEYS: Record<PresetId, string[]> = {
  open_url: ["url", "duration_sec"], launch_app: ["package"], install_apk: ["apk_url"], screenshot: [], custom: ["plan"],
};

/** The keys a form with this preset shows an error beside, plus its own `extra` ones. */
export function shownKeys(preset: PresetId, extra: string[]): Set<string> {
  return new Set([...TEMPLATE_KEYS, ...PRESET_KEYS[preset], ...extra]);
}

/**
 * A server error placed on the form: each detail by the form field it belongs to (the template's paths
 * under `templatePrefix`, "template." for a schedule; the others by their top-level name). A detail for a
 * field the form does not show goes to the general message ("" key), named, so nothing is lost.
 */
export function placeErrors(err: { message: string; details?: ErrorDetail[] }, preset: PresetId,
  shown: ReadonlySet<string>, templatePrefix = ""): Record<string, string> {
  const out: Record<string, string> = {};
  const general: string[] = [];
  for (const d of err.details ?? []) {
    const path = d.field ?? "";
    let key: string;
    if (!path) key = "";
    else if (templatePrefix && path.startsWith(templatePrefix)) key = formFieldOf(path.slice(templatePrefix.length), preset);
    else if (templatePrefix) key = path.split(".")[0];
    else key = formFieldOf(path, preset);
    const isShown = shown.has(key) || (preset === "custom" && /^plan\.\d+$/.test(key));
    if (key && isShown) {
      if (!(key in out)) out[key] = d.message;
    } else {
      general.push(path ? `${path}: ${d.message}` : d.message);
    }
  }
  if (general.length) out[""] = general.join("; ");
  else if (!Object.keys(out).length) out[""] = err.message;
  return out;
}
