import { describe, expect, it } from "vitest";
import {
  initialJobForm, initialScheduleForm, intervalSeconds, jobCreateOf, type JobFormValues, localToIso, parseIds,
  placeErrors, planOf, scheduleCreateOf, shownKeys, templateOf,
} from "./jobForm";

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
