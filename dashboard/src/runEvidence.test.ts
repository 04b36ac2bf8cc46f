import { describe, expect, it } from "vitest";
import type { Crash, StepRecord } from "./generated/protocol";
import {
  DEFAULT_FILTER, artifactPath, crashBadge, crashTitle, exitText, highlight, logcatArtifact, logcatQuery, matchText,
  openStep, stepTitle, stepTook,
} from "./runEvidence";

function step(index: number, over: Partial<StepRecord> = {}): StepRecord {
  return {
    step_index: index, type: "tap", name: null, outcome: "completed", exit_code: 0, output_tail: null, error: null,
    started_at: "2026-11-30T10:00:00.000Z", finished_at: "2026-11-30T10:00:00.420Z", ...over,
  };
}

const FATAL: Crash = { process: "com.example.app", line: "11-30 10:00:01.000  4007  4007 E AndroidRuntime: FATAL EXCEPTION: main" };
const ANR: Crash = { process: "com.example.slow", line: "11-30 10:00:02.000  1234  1234 E ActivityManager: ANR in com.example.slow" };

describe("the step timeline", () => {
  it("opens on the failing step, or the first that failed or timed out, or on none", () => {
    const steps = [step(0), step(1, { outcome: "timed_out" }), step(2, { outcome: "not_run" })];
    expect(openStep({ steps, failed_step: 1 })).toBe(1);
    expect(openStep({ steps, failed_step: null })).toBe(1);
    expect(openStep({ steps: [step(0), step(1)], failed_step: null })).toBeNull();
    expect(openStep({ steps: [step(0, { outcome: "failed" }), step(1, { outcome: "failed" })] })).toBe(0);
  });

  it("names a step by its type and name, with how long it took and its exit", () => {
    expect(stepTitle(step(0))).toBe("tap");
    expect(stepTitle(step(0, { name: "poke", type: "shell" }))).toBe("shell · poke");
    expect(stepTook(step(0))).toBe("0.42 s");
    expect(stepTook(step(0, { finished_at: "2026-11-30T10:03:05.000Z" }))).toBe("3 min 5 s");
    expect(stepTook(step(0, { finished_at: "2026-11-30T10:00:30.200Z" }))).toBe("30 s");
    expect(stepTook(step(0, { started_at: null }))).toBeNull();
    expect(stepTook(step(0, { finished_at: "2026-11-30T09:00:00.000Z" }))).toBeNull();
    expect(exitText(127)).toBe("exit 127");
    expect(exitText(0)).toBe("exit 0");
    expect(exitText(null)).toBeNull();
  });
});

describe("the crash badge", () => {
  it("counts crashes and ANRs apart, and says nothing when there are none", () => {
    expect(crashBadge([])).toBeNull();
    expect(crashBadge(undefined)).toBeNull();
    expect(crashBadge([FATAL])).toBe("1 crash");
    expect(crashBadge([FATAL, FATAL, ANR])).toBe("2 crashes · 1 ANR");
    expect(crashBadge([ANR, ANR])).toBe("2 ANRs");
    expect(crashTitle([FATAL, ANR])).toBe("com.example.app: crashed\ncom.example.slow: ANR");
  });
});

describe("the log viewer", () => {
  it("asks the server only for the filters set", () => {
    expect(logcatQuery(DEFAULT_FILTER)).toBe("");
    expect(logcatQuery({ ...DEFAULT_FILTER, level: "E" })).toBe("?level=E");
    expect(logcatQuery({ level: "W", tag: " AndroidRuntime ", q: "virtual crash", limit: 50 }))
      .toBe("?level=W&tag=AndroidRuntime&q=virtual+crash&limit=50");
    expect(logcatQuery({ ...DEFAULT_FILTER, q: "a&b=c" })).toBe("?q=a%26b%3Dc");
  });

  it("names the stored capture and its download", () => {
    expect(logcatArtifact(42)).toBe("42-logcat.txt.gz");
    expect(artifactPath(42, logcatArtifact(42))).toBe("/api/assignments/42/artifacts/42-logcat.txt.gz");
  });

  it("says how many lines it shows", () => {
    expect(matchText(31, 31, 31)).toBe("all 31 lines");
    expect(matchText(4, 4, 31)).toBe("4 of 31 lines");
    expect(matchText(1000, 4031, 5000)).toBe("the first 1,000 of 4,031 matching lines");
    expect(matchText(0, 0, 12)).toBe("no line of 12 matches");
    expect(matchText(0, 0, 0)).toBe("the capture is empty");
  });

  it("highlights every occurrence of the search, whatever its case", () => {
    expect(highlight("Virtual crash: a VIRTUAL one", "virtual")).toEqual(["", "Virtual", " crash: a ", "VIRTUAL", " one"]);
    expect(highlight("no match", "zzz")).toEqual(["no match"]);
    expect(highlight("text", " ")).toEqual(["text"]);
  });
});
