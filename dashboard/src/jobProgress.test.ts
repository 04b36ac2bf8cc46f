import { describe, expect, it } from "vitest";
import { outcomeOf, pauseText, phonePauseText, segmentsOf, segmentsText, segmentWidths, statusLabel } from "./jobProgress";

const base = { target_count: 10, assigned_count: 10, completed_count: 0, failed_count: 0, running_count: 0, paused_count: 0 };

describe("segments", () => {
  it("counts failures apart from successes", () => {
    const p = { ...base, completed_count: 9, failed_count: 1 };
    expect(segmentsText(p)).toBe("9 done · 1 failed · 0 running of 10");
    expect(segmentsOf(p)).toEqual({ done: 9, failed: 1, running: 0, waiting: 0, total: 10 });
    expect(segmentWidths(segmentsOf(p))).toEqual({ done: 90, failed: 10, running: 0, waiting: 0 });
  });
  it("leaves the rest waiting, and never exceeds the bar", () => {
    const p = { ...base, completed_count: 2, failed_count: 1, running_count: 3 };
    expect(segmentsOf(p).waiting).toBe(4);
    expect(segmentsOf({ ...base, target_count: 2, completed_count: 2, running_count: 1 }).total).toBe(3);
    expect(segmentWidths(segmentsOf({ ...base, target_count: null, assigned_count: 0 })))
      .toEqual({ done: 0, failed: 0, running: 0, waiting: 0 });
    expect(segmentsText({ ...base, target_count: 3, completed_count: 1 })).toBe("1 done · 0 failed · 0 running of 3");
  });
});

describe("outcome", () => {
  it("is never plain completed with a failure", () => {
    expect(outcomeOf("completed", { ...base, completed_count: 9, failed_count: 1 })).toBe("completed with failures");
    expect(outcomeOf("completed", { ...base, completed_count: 10 })).toBe("completed");
    expect(outcomeOf("active", base)).toBeNull();
    expect(statusLabel("completed", { ...base, failed_count: 10 })).toBe("completed with failures");
    expect(statusLabel("cancelled", base)).toBe("cancelled");
  });
});

describe("pause wording", () => {
  it("says what still runs, then paused", () => {
    expect(pauseText({ ...base, running_count: 10 })).toBe("pausing: 10 running will finish, 0 waiting held");
    expect(pauseText({ ...base, running_count: 2, completed_count: 3 })).toBe("pausing: 2 running will finish, 5 waiting held");
    expect(pauseText({ ...base, completed_count: 3 })).toBe("paused");
    expect(statusLabel("paused", { ...base, running_count: 1 })).toBe("pausing: 1 running will finish, 9 waiting held");
  });
  it("names who paused a phone and where", () => {
    expect(phonePauseText({ state: "paused", paused_by: "agent", agent_name: "rack-3" })).toBe("paused at PC rack-3 by operator");
    expect(phonePauseText({ state: "paused", paused_by: "server", agent_name: "rack-3" }))
      .toBe("paused at PC rack-3 from the dashboard");
    expect(phonePauseText({ state: "paused", paused_by: "control", pause_reason: "in use by ann", agent_name: null }))
      .toBe("paused: in use by ann");
    expect(phonePauseText({ state: "idle", paused_by: null })).toBeNull();
  });
});
