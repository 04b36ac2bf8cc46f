// The job form as typed (strings) and the bodies it makes: a JobTemplate for a schedule, a JobCreate for a
// job, a ScheduleCreate around a template. Pure, unit-tested in jobForm.test.ts. Numbers are parsed here;
// a bad one goes to the server as typed, so its 422 names the field (as the preset plans already do).
import { type CronField, type CronProblem, cronProblem, MAX_CRON } from "./cron";
import {
  defaultTitle, formFieldOf, isHttpUrl, parseList, type PresetId, presetPlan, type PresetValues, STEP_TEMPLATES,
} from "./logic";
import type {
  Device, ErrorDetail, JobCreate, JobFilters, JobTemplate, MisfirePolicy, ScheduleCreate, Step, StepType, TargetType,
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

// ---------------------------------------------------------------- checks before sending, in plain words

/** The limits the server's models hold (phonefleet/protocol/models.py, plan.py). */
const MAX_COUNT = 1_000_000;
const MAX_SECONDS = 86_400;
const MAX_TITLE = 200;
const PACKAGE_PATTERN = /^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)+$/;

function wholeNumber(low: number, high: number): string {
  return `Enter a whole number from ${low} to ${high}`;
}

/**
 * The message for a field, in the same words whether the browser or the server found it. `field` is the
 * last named part of a server path ("url" of plan.0.open_url.url) or a form key; null: no wording of ours.
 */
export function messageFor(field: string, targetType: TargetType): string | null {
  switch (field) {
    case "url":
    case "apk_url":
      return "Enter a full URL starting with http:// or https://";
    case "duration_sec":
      return `Enter a number of seconds from 0 to ${MAX_SECONDS}`;
    case "package":
      return "Enter an Android package name, such as com.example.app";
    case "title":
      return `Keep the title to ${MAX_TITLE} characters or fewer`;
    case "target_value":
      return targetType === "percentage" ? wholeNumber(1, 100) : wholeNumber(1, MAX_COUNT);
    case "priority":
      return wholeNumber(-1000, 1000);
    case "max_parallel":
      return `${wholeNumber(1, MAX_COUNT)}, or leave it empty for no limit`;
    case "max_retries":
      return wholeNumber(0, 100);
    case "run_at":
      return "Enter a date and time, or leave it empty to start now";
    case "depends_on":
      return "Enter job ids separated by commas, such as 12, 15";
    default:
      return null;
  }
}

function isWhole(text: string, low: number, high: number): boolean {
  const t = text.trim();
  const n = Number(t);
  return /^[+-]?\d+$/.test(t) && n >= low && n <= high;
}

/**
 * What is wrong with the form before it is sent, by form key ("" = nothing). A job with any of these is not
 * sent. Custom steps are checked for JSON only (planOf); the server names the rest.
 */
export function validateJobForm(form: JobFormValues, timing?: JobTiming): Record<string, string> {
  const out: Record<string, string> = {};
  const bad = (key: string, field = key) => { out[key] = messageFor(field, form.targetType) ?? "Check this field"; };
  const v = form.values;
  if (form.preset === "open_url") {
    if (!isHttpUrl(v.url)) bad("url");
    const d = Number(v.duration_sec.trim());
    if (v.duration_sec.trim() === "" || !Number.isFinite(d) || d < 0 || d > MAX_SECONDS) bad("duration_sec");
  }
  if (form.preset === "install_apk" && !isHttpUrl(v.apk_url)) bad("apk_url");
  if (form.preset === "launch_app" && !PACKAGE_PATTERN.test(v.package.trim())) bad("package");
  if (form.titleEdited && form.title.trim().length > MAX_TITLE) bad("title");
  if (form.targetType === "percentage" && !isWhole(form.percent, 1, 100)) bad("target_value");
  if (form.targetType === "device_count" && !isWhole(form.count, 1, MAX_COUNT)) bad("target_value");
  if (form.priority.trim() !== "" && !isWhole(form.priority, -1000, 1000)) bad("priority");
  if (form.maxParallel.trim() !== "" && !isWhole(form.maxParallel, 1, MAX_COUNT)) bad("max_parallel");
  if (form.maxRetries.trim() !== "" && !isWhole(form.maxRetries, 0, 100)) bad("max_retries");
  if (timing) {
    const runAt = localToIso(timing.runAt);
    if (runAt !== null && !Number.isFinite(Date.parse(runAt))) bad("run_at");
    if (parseIds(timing.dependsOn).some((id) => typeof id !== "number" || id < 1)) bad("depends_on");
  }
  return out;
}

/**
 * A server 422 in the form's words: a detail about a value's form or range (one from the models' validation,
 * which carries a `type`) gets our message for its field (the last named part of its path:
 * "plan.0.open_url.url" -> "url", "depends_on.1" -> "depends_on"). The others say something the form
 * cannot ("unknown job ids [99]") and are kept as the server said them.
 */
export function humanDetails(details: ErrorDetail[] | undefined, targetType: TargetType): ErrorDetail[] {
  return (details ?? []).map((d) => {
    if (!d.type) return d;
    const named = (d.field ?? "").split(".").filter((p) => p !== "" && !/^\d+$/.test(p));
    const ours = named.length ? messageFor(named[named.length - 1], targetType) : null;
    return ours ? { ...d, message: ours } : d;
  });
}

// ---------------------------------------------------------------- a schedule's own fields, checked the same way

/** The limits of ScheduleCreate (phonefleet/protocol/models.py). */
const MAX_NAME = 200;
const MAX_INTERVAL_SECONDS = 366 * 86_400;
const UNIT_NAMES: Record<IntervalUnit, string> = { s: "seconds", min: "minutes", h: "hours", d: "days" };
const CRON_FIELD_WORDS: Record<CronField, string> = {
  second: "the second (0 to 59)", minute: "the minute (0 to 59)", hour: "the hour (0 to 23)",
  "day-of-month": "the day of the month (1 to 31, or L for the last)", month: "the month (1 to 12, or JAN to DEC)",
  "day-of-week": "the weekday (0 to 7, or SUN to SAT)",
};
const CRON_SHAPE = "Enter five fields: minute hour day month weekday, such as 0 9 * * 1-5, or one of @hourly, "
  + "@daily, @weekly, @monthly, @yearly";
const MISFIRE_POLICIES: ReadonlySet<string> = new Set<MisfirePolicy>(["run_once", "skip"]);

/**
 * Whether the server can place a time zone, as far as the browser can tell: a name this browser knows, spelt
 * as the server spells it (the server's names are case-sensitive; the browser's are not).
 */
export function browserKnowsZone(name: string): boolean {
  try {
    const resolved = new Intl.DateTimeFormat("en-US", { timeZone: name }).resolvedOptions().timeZone;
    return resolved === name || resolved.toLowerCase() !== name.toLowerCase();
  } catch {
    return false;
  }
}

/** The cron expression's problem in words; null when there is none. */
export function cronMessage(problem: CronProblem | null): string | null {
  switch (problem) {
    case null:
      return null;
    case "empty":
    case "fields":
      return CRON_SHAPE;
    case "too-long":
      return `Keep the cron expression to ${MAX_CRON} characters or fewer`;
    case "no-such-day":
      return "No month given has that day, so it would never run: check the day and the month";
    default:
      return `Check ${CRON_FIELD_WORDS[problem]} in the cron expression`;
  }
}

/**
 * The message for one of a schedule's own fields (its ScheduleCreate name), in the same words whether the
 * browser or the server found it; worded from the values as typed. null: not a field of the schedule's own.
 */
export function scheduleMessageFor(field: string, s: ScheduleFormValues): string | null {
  switch (field) {
    case "name":
      return s.name.trim() ? `Keep the name to ${MAX_NAME} characters or fewer` : "Give the schedule a name";
    case "cron":
      return cronMessage(cronProblem(s.cron.trim())) ?? CRON_SHAPE;
    case "timezone":
      return "Choose a time zone from the list, such as Europe/Berlin or UTC";
    case "interval_sec":
      return `Enter a whole number of ${UNIT_NAMES[s.unit]} from 1 to ${MAX_INTERVAL_SECONDS / UNIT_SECONDS[s.unit]}`;
    case "misfire_policy":
      return "Choose what happens to the runs missed while the server was down";
    default:
      return null;
  }
}

/**
 * What is wrong with a schedule before it is sent, by form key: its own fields (checked as the server checks
 * them, cron rule for rule, see cron.ts) and its job template's (validateJobForm). Nothing is sent while any is.
 */
export function validateScheduleForm(s: ScheduleFormValues, form: JobFormValues,
  knowsZone: (name: string) => boolean = browserKnowsZone): Record<string, string> {
  const out = validateJobForm(form);
  const bad = (key: string) => { out[key] = scheduleMessageFor(key, s) ?? "Check this field"; };
  const name = s.name.trim();
  if (!name || [...name].length > MAX_NAME) bad("name");
  if (s.rule === "cron") {
    if (cronProblem(s.cron.trim())) bad("cron");
    const zone = s.timezone.trim();
    if (zone && !knowsZone(zone)) bad("timezone");
  } else {
    const sec = intervalSeconds(s.every, s.unit);
    if (typeof sec !== "number" || sec < 1 || sec > MAX_INTERVAL_SECONDS) bad("interval_sec");
  }
  if (!MISFIRE_POLICIES.has(s.misfirePolicy)) bad("misfire_policy");
  return out;
}

/**
 * A schedule's 422 in the form's words: a validation detail about one of its own fields gets our message for
 * it; the template's ("template.plan.0.open_url.url") are worded as the job form's (humanDetails).
 */
export function humanScheduleDetails(details: ErrorDetail[] | undefined, s: ScheduleFormValues,
  targetType: TargetType): ErrorDetail[] {
  return humanDetails(details, targetType).map((d) => {
    const ours = d.type ? scheduleMessageFor(d.field ?? "", s) : null;
    return ours ? { ...d, message: ours } : d;
  });
}

/** States in which a phone can never take work until someone or something changes it. */
const NEVER_RUNS: ReadonlySet<string> = new Set(["offline", "quarantined"]);

/** Phones that could ever run a job with these filters: matching them, and not offline or quarantined. */
export function matchingPhones(devices: Iterable<Device>, filters: JobFilters): number {
  let n = 0;
  for (const d of devices) {
    if (NEVER_RUNS.has(d.state)) continue;
    if (filters.models?.length && !filters.models.includes(d.model ?? "")) continue;
    if (filters.android_versions?.length && !filters.android_versions.includes(d.android_version ?? "")) continue;
    if (filters.tags?.length && !filters.tags.every((t) => d.tags.includes(t))) continue;
    n += 1;
  }
  return n;
}

/** The warning for a phone count above the phones that match; null when none is due. */
export function countWarning(form: Pick<JobFormValues, "targetType" | "count">, matching: number): string | null {
  if (form.targetType !== "device_count" || !isWhole(form.count, 1, MAX_COUNT)) return null;
  if (Number(form.count.trim()) <= matching) return null;
  const phones = matching === 1 ? "1 phone matches" : `${matching} phones match`;
  return `only ${phones}; the job will stop at ${matching}`;
}
