import { describe, expect, it } from "vitest";
import {
  browserKnowsZone, countWarning, humanDetails, humanScheduleDetails, initialJobForm, initialScheduleForm,
  intervalSeconds, jobCreateOf, type JobFormValues, localToIso, matchingPhones, messageFor, parseIds, placeErrors,
  planOf, scheduleCreateOf, type ScheduleFormValues, shownKeys, templateOf, validateJobForm, validateScheduleForm,
} from "./jobForm";
import type { Device } from "./types";

function form(over: Partial<JobFormValues> = {}): JobFormValues {
  return { ...initialJobForm(), ...over };
}

const noTiming = { runAt: "", dependsOn: "" };

describe("job form -> JobCreate", () => {
  it("makes the body of the defaults, with the plan's own title", () => {
    const f = form();
    expect(jobCreateOf(f, noTiming, planOf(f)[0])).toEqual({
      title: "Open example.com for 60 s",
      plan: [{ type: "open_url", url: "https://example.com", duration_sec: 60 }],
      target_type: "all_devices", priority: 0, filters: {}, max_retries: 0,
    });
  });

  it("carries priority, limits, target, filters, run at and dependencies", () => {
    const f = form({
      preset: "screenshot", title: "  Shots ", titleEdited: true, targetType: "device_count", count: "3",
      priority: "7", maxParallel: "2", maxRetries: "4", tags: "lab, fast",
    });
    const body = jobCreateOf(f, { runAt: "2030-05-01T09:30", dependsOn: "12, #15" }, planOf(f)[0]);
    expect(body).toEqual({
      title: "Shots", plan: [{ type: "screenshot" }], target_type: "device_count", target_value: 3, priority: 7,
      filters: { tags: ["lab", "fast"] }, max_parallel: 2, max_retries: 4,
      run_at: new Date(2030, 4, 1, 9, 30).toISOString(), depends_on: [12, 15],
    });
  });

  it("leaves empty optional numbers out and passes bad ones on as typed for the server to name", () => {
    const f = form({ preset: "screenshot", maxParallel: " ", maxRetries: "", priority: "1.5" });
    const body = jobCreateOf(f, { runAt: "", dependsOn: "3, x" }, planOf(f)[0]);
    expect(body).not.toHaveProperty("max_parallel");
    expect(body).not.toHaveProperty("max_retries");
    expect(body).not.toHaveProperty("run_at");
    expect(body.priority).toBe("1.5");
    expect(body.depends_on).toEqual([3, "x"]);
  });

  it("reads a custom plan's JSON, naming the step that does not parse", () => {
    const f = form({ preset: "custom", custom: [{ type: "wait", params: "{\"duration_sec\": 2}" },
      { type: "tap", params: "[1]" }, { type: "screenshot", params: "" }] });
    const [plan, errors] = planOf(f);
    expect(plan).toEqual([{ type: "wait", duration_sec: 2 }, { type: "screenshot" }]);
    expect(Object.keys(errors)).toEqual(["plan.1"]);
  });

  it("turns a datetime-local value into an instant, and ids into numbers", () => {
    expect(localToIso("")).toBeNull();
    expect(localToIso("2031-12-31T23:59")).toBe(new Date(2031, 11, 31, 23, 59).toISOString());
    expect(localToIso("tomorrow")).toBe("tomorrow");
    expect(parseIds(" 4,#5 ,, 6")).toEqual([4, 5, 6]);
    expect(parseIds("")).toEqual([]);
  });
});

describe("schedule form -> ScheduleCreate", () => {
  const template = templateOf(form({ preset: "screenshot" }), [{ type: "screenshot" }]);

  it("sends a cron rule with its time zone", () => {
    const s = { ...initialScheduleForm("Europe/Berlin"), name: " nightly ", cron: " 0 3 * * * " };
    expect(scheduleCreateOf(s, template)).toEqual({
      name: "nightly", template, cron: "0 3 * * *", timezone: "Europe/Berlin", misfire_policy: "run_once",
      enabled: true,
    });
  });

  it("sends an interval in seconds, and no cron or time zone", () => {
    const s = { ...initialScheduleForm(), name: "often", rule: "interval" as const, every: "5", unit: "min" as const,
      misfirePolicy: "skip" as const, enabled: false };
    expect(scheduleCreateOf(s, template)).toEqual({
      name: "often", template, interval_sec: 300, misfire_policy: "skip", enabled: false,
    });
    expect(intervalSeconds("1.5", "min")).toBe(90);
    expect(intervalSeconds("0.5", "s")).toBe("0.5");
    expect(intervalSeconds("", "h")).toBe("");
  });
});

describe("server errors on the form", () => {
  const err = (details: { field: string | null; message: string }[]) => ({ message: "first problem", details });

  it("puts each detail beside its field, and the rest in the general message", () => {
    const shown = shownKeys("open_url", ["run_at", "depends_on"]);
    expect(placeErrors(err([
      { field: "plan.0.open_url.url", message: "bad url" },
      { field: "depends_on.1", message: "not an id" },
      { field: "max_parallel", message: ">= 1" },
      { field: "timeout_sec", message: "too long" },
      { field: null, message: "general" },
    ]), "open_url", shown)).toEqual({
      url: "bad url", depends_on: "not an id", max_parallel: ">= 1", "": "timeout_sec: too long; general",
    });
    expect(placeErrors({ message: "conflict", details: [] }, "open_url", shown)).toEqual({ "": "conflict" });
  });

  it("maps a schedule's template.* paths onto the shared job fields", () => {
    const shown = shownKeys("custom", ["name", "cron", "timezone", "misfire_policy"]);
    expect(placeErrors(err([
      { field: "cron", message: "bad cron" },
      { field: "template.plan.2.wait.duration_sec", message: "too long" },
      { field: "template.target_value", message: "between 1 and 100" },
      { field: "interval_sec", message: "give either cron or interval_sec" },
    ]), "custom", shown, "template.")).toEqual({
      cron: "bad cron", "plan.2": "too long", target_value: "between 1 and 100",
      "": "interval_sec: give either cron or interval_sec",
    });
  });
});

describe("checks before sending", () => {
  const URL_MSG = "Enter a full URL starting with http:// or https://";

  it("passes the defaults and every preset with good values", () => {
    expect(validateJobForm(form(), noTiming)).toEqual({});
    for (const preset of ["launch_app", "install_apk", "screenshot", "custom"] as const) {
      expect(validateJobForm(form({ preset }), noTiming)).toEqual({});
    }
    expect(validateJobForm(form({ targetType: "device_count", count: "1000000", priority: "-1000",
      maxParallel: "3", maxRetries: "100" }), { runAt: "2030-01-01T10:00", dependsOn: "1, #2" })).toEqual({});
  });

  it("names a URL that is not a full web address, in words", () => {
    for (const url of ["example.com", "", "ftp://x.org/a", "http:example.com", "https://exa mple.com"]) {
      expect(validateJobForm(form({ values: { ...form().values, url } }))).toEqual({ url: URL_MSG });
      expect(validateJobForm(form({ preset: "install_apk", values: { ...form().values, apk_url: url } })))
        .toEqual({ apk_url: URL_MSG });
    }
  });

  it("wants whole numbers in range, and says which", () => {
    const v = form().values;
    expect(validateJobForm(form({ values: { ...v, duration_sec: "" } })).duration_sec)
      .toBe("Enter a number of seconds from 0 to 86400");
    expect(validateJobForm(form({ values: { ...v, duration_sec: "2.5" } }))).toEqual({});
    expect(validateJobForm(form({ values: { ...v, duration_sec: "90000" } }))).toHaveProperty("duration_sec");
    expect(validateJobForm(form({ targetType: "percentage", percent: "0" }))).toEqual({
      target_value: "Enter a whole number from 1 to 100" });
    expect(validateJobForm(form({ targetType: "percentage", percent: "101" }))).toHaveProperty("target_value");
    expect(validateJobForm(form({ targetType: "device_count", count: "" }))).toEqual({
      target_value: "Enter a whole number from 1 to 1000000" });
    expect(validateJobForm(form({ targetType: "device_count", count: "2.5" }))).toHaveProperty("target_value");
    expect(validateJobForm(form({ targetType: "all_devices", count: "" }))).toEqual({});
    expect(validateJobForm(form({ priority: "1.5", maxParallel: "0", maxRetries: "101" }))).toEqual({
      priority: "Enter a whole number from -1000 to 1000",
      max_parallel: "Enter a whole number from 1 to 1000000, or leave it empty for no limit",
      max_retries: "Enter a whole number from 0 to 100",
    });
    expect(validateJobForm(form({ priority: "", maxParallel: "", maxRetries: "" }))).toEqual({});
  });

  it("checks the package, the title's length and the timing", () => {
    expect(validateJobForm(form({ preset: "launch_app", values: { ...form().values, package: "settings" } })))
      .toEqual({ package: "Enter an Android package name, such as com.example.app" });
    expect(validateJobForm(form({ title: "x".repeat(201), titleEdited: true }))).toHaveProperty("title");
    expect(validateJobForm(form({ title: "", titleEdited: true }))).toEqual({}); // empty: the auto-title
    expect(validateJobForm(form(), { runAt: "soon", dependsOn: "3, x" })).toEqual({
      run_at: "Enter a date and time, or leave it empty to start now",
      depends_on: "Enter job ids separated by commas, such as 12, 15",
    });
  });
});

describe("server errors in the form's words", () => {
  it("replace the server's message by ours for the same field, and keep the others", () => {
    const details = humanDetails([
      { field: "plan.0.open_url.url", message: "Input should be a valid URL", type: "url_parsing" },
      { field: "target_value", message: "a device count must be at least 1", type: "value_error" },
      { field: "depends_on.1", message: "Input should be a valid integer", type: "int_parsing" },
      { field: "depends_on", message: "unknown job ids [99]" }, // not about the value's form: kept
      { field: "timeout_sec", message: "too long", type: "less_than_equal" },
      { field: null, message: "general", type: "value_error" },
    ], "device_count");
    expect(details.map((d) => d.message)).toEqual([
      "Enter a full URL starting with http:// or https://", "Enter a whole number from 1 to 1000000",
      "Enter job ids separated by commas, such as 12, 15", "unknown job ids [99]", "too long", "general",
    ]);
    expect(placeErrors({ message: "x", details }, "open_url", shownKeys("open_url", ["run_at", "depends_on"])).url)
      .toBe(messageFor("url", "all_devices"));
    expect(humanDetails([{ field: "target_value", message: "m", type: "value_error" }], "percentage")[0].message)
      .toBe("Enter a whole number from 1 to 100");
    expect(humanDetails(undefined, "all_devices")).toEqual([]);
  });
});

describe("a schedule's checks before sending", () => {
  const sched = (over: Partial<ScheduleFormValues> = {}): ScheduleFormValues =>
    ({ ...initialScheduleForm("Europe/Berlin"), name: "nightly", ...over });
  const every = (n: string, unit: ScheduleFormValues["unit"]) => sched({ rule: "interval", every: n, unit });
  const CRON_SHAPE = "Enter five fields: minute hour day month weekday, such as 0 9 * * 1-5, or one of @hourly, "
    + "@daily, @weekly, @monthly, @yearly";

  it("passes good schedules of either rule, with any macro the server takes", () => {
    expect(validateScheduleForm(sched(), form())).toEqual({});
    for (const cron of ["@daily", " @Hourly ", "*/15 9-17 * * mon-fri", "0 0 L * *", "0 0 * * 5L", "30 0 9 * * *"]) {
      expect(validateScheduleForm(sched({ cron }), form())).toEqual({});
    }
    expect(validateScheduleForm(sched({ timezone: "" }), form())).toEqual({}); // sent as UTC
    expect(validateScheduleForm(every("366", "d"), form())).toEqual({});
    expect(validateScheduleForm(every("31622400", "s"), form())).toEqual({});
    expect(validateScheduleForm(every("1.5", "min"), form())).toEqual({}); // 90 s: the server takes it
  });

  it("names a missing or too long name", () => {
    expect(validateScheduleForm(sched({ name: "  " }), form())).toEqual({ name: "Give the schedule a name" });
    expect(validateScheduleForm(sched({ name: "x".repeat(200) }), form())).toEqual({});
    expect(validateScheduleForm(sched({ name: "x".repeat(201) }), form()))
      .toEqual({ name: "Keep the name to 200 characters or fewer" });
  });

  it("says what is wrong with a cron expression, down to its field", () => {
    const cron = (c: string) => validateScheduleForm(sched({ cron: c }), form()).cron;
    expect(cron("")).toBe(CRON_SHAPE);
    expect(cron("every day")).toBe(CRON_SHAPE);
    expect(cron("@reboot")).toBe(CRON_SHAPE);
    expect(cron("61 * * * *")).toBe("Check the minute (0 to 59) in the cron expression");
    expect(cron("0 25 * * *")).toBe("Check the hour (0 to 23) in the cron expression");
    expect(cron("0 0 32 * *")).toBe("Check the day of the month (1 to 31, or L for the last) in the cron expression");
    expect(cron("0 0 * 13 *")).toBe("Check the month (1 to 12, or JAN to DEC) in the cron expression");
    expect(cron("0 0 * * 8")).toBe("Check the weekday (0 to 7, or SUN to SAT) in the cron expression");
    expect(cron("0 0 30 2 *")).toBe("No month given has that day, so it would never run: check the day and the month");
    expect(cron("0".repeat(201))).toBe("Keep the cron expression to 200 characters or fewer");
    // an interval rule does not look at the cron field
    expect(validateScheduleForm(sched({ rule: "interval", cron: "nonsense" }), form())).toEqual({});
  });

  it("takes a time zone the browser knows, spelt as the server spells it", () => {
    const zone = (timezone: string) => validateScheduleForm(sched({ timezone }), form()).timezone;
    const ZONE = "Choose a time zone from the list, such as Europe/Berlin or UTC";
    for (const ok of ["UTC", "Europe/Berlin", "America/New_York", "US/Pacific", "Etc/GMT+1"]) expect(zone(ok)).toBeUndefined();
    for (const bad of ["Mars/Olympus", "Berlin", "europe/berlin", "utc", "GMT+1"]) expect(zone(bad)).toBe(ZONE);
    expect(browserKnowsZone("Asia/Kolkata")).toBe(true);
    // the check is given, so another list of zones can be used
    expect(validateScheduleForm(sched({ timezone: "Mars/Olympus" }), form(), () => true)).toEqual({});
  });

  it("takes an interval of whole seconds from 1 s to 366 days, and words it in the chosen unit", () => {
    const interval = (n: string, unit: ScheduleFormValues["unit"]) =>
      validateScheduleForm(every(n, unit), form()).interval_sec;
    expect(interval("0", "h")).toBe("Enter a whole number of hours from 1 to 8784");
    expect(interval("-5", "min")).toBe("Enter a whole number of minutes from 1 to 527040");
    expect(interval("", "d")).toBe("Enter a whole number of days from 1 to 366");
    expect(interval("367", "d")).toBe("Enter a whole number of days from 1 to 366");
    expect(interval("8785", "h")).toBe("Enter a whole number of hours from 1 to 8784");
    expect(interval("1.5", "s")).toBe("Enter a whole number of seconds from 1 to 31622400");
    expect(interval("abc", "s")).toBe("Enter a whole number of seconds from 1 to 31622400");
  });

  it("checks a misfire policy and the job template too, in the job form's words", () => {
    expect(validateScheduleForm(sched({ misfirePolicy: "later" as ScheduleFormValues["misfirePolicy"] }), form()))
      .toEqual({ misfire_policy: "Choose what happens to the runs missed while the server was down" });
    const values = { ...initialJobForm().values, url: "example.com" };
    expect(validateScheduleForm(sched({ name: "" }), form({ values, priority: "5000" }))).toEqual({
      name: "Give the schedule a name", url: "Enter a full URL starting with http:// or https://",
      priority: "Enter a whole number from -1000 to 1000",
    });
  });

  it("words the server's 422 for a schedule's fields and its template's as the checks do", () => {
    const s = sched({ name: "", cron: "0 25 * * *", rule: "cron", unit: "min" });
    const worded = humanScheduleDetails([
      { field: "name", message: "String should have at least 1 character", type: "string_too_short" },
      { field: "cron", message: "Value error, invalid cron expression: Bad hour", type: "value_error" },
      { field: "timezone", message: "Value error, unknown time zone 'x'", type: "value_error" },
      { field: "interval_sec", message: "Input should be greater than or equal to 1", type: "greater_than_equal" },
      { field: "template.plan.0.open_url.url", message: "URL scheme should be 'http' or 'https'", type: "url_scheme" },
      { field: "name", message: "a schedule with this name exists" },
    ], s, "all_devices");
    expect(worded.map((d) => d.message)).toEqual([
      "Give the schedule a name", "Check the hour (0 to 23) in the cron expression",
      "Choose a time zone from the list, such as Europe/Berlin or UTC",
      "Enter a whole number of minutes from 1 to 527040",
      "Enter a full URL starting with http:// or https://", "a schedule with this name exists",
    ]);
    // a cron expression the server refused that the browser took: the general wording, never the parser's
    expect(humanScheduleDetails([{ field: "cron", message: "Bad", type: "value_error" }], sched(), "all_devices")[0]
      .message).toBe(CRON_SHAPE);
  });
});

describe("phones that can ever run the job", () => {
  const phone = (id: number, over: Partial<Device> = {}): Device => ({
    id, serial: `s${id}`, agent_id: 1, agent_name: "pc", model: "Pixel 7", android_version: "14", tags: ["lab"],
    battery: 90, state: "idle", paused_by: null, last_seen_at: null, ...over,
  } as Device);
  const fleet = [phone(1), phone(2, { state: "busy" }), phone(3, { state: "paused" }), phone(4, { state: "unhealthy" }),
    phone(5, { state: "offline" }), phone(6, { state: "quarantined" }), phone(7, { model: "Galaxy" }),
    phone(8, { tags: [] })];

  it("counts those matching the filters that are not offline or quarantined", () => {
    expect(matchingPhones(fleet, {})).toBe(6);
    expect(matchingPhones(fleet, { models: ["Pixel 7"] })).toBe(5);
    expect(matchingPhones(fleet, { tags: ["lab"] })).toBe(5);
    expect(matchingPhones(fleet, { android_versions: ["13"] })).toBe(0);
  });

  it("warns when the count asks for more", () => {
    const count = (c: string) => ({ targetType: "device_count" as const, count: c });
    expect(countWarning(count("30"), 20)).toBe("only 20 phones match; the job will stop at 20");
    expect(countWarning(count("2"), 1)).toBe("only 1 phone matches; the job will stop at 1");
    expect(countWarning(count("20"), 20)).toBeNull();
    expect(countWarning(count("x"), 20)).toBeNull();
    expect(countWarning({ targetType: "percentage", count: "30" }, 20)).toBeNull();
  });
});
