import { afterEach, describe, expect, it } from "vitest";
import { freezeClock } from "./clock";
import {
  ageText, cancelledRuns, cancelledText, durationText, etaSec, etaText, loadSort, parseSort, saveSort, sortJobs,
} from "./jobList";

afterEach(() => freezeClock(null));

const T0 = Date.parse("2026-11-30T14:00:00Z");
const at = (sec: number) => new Date(T0 + sec * 1000).toISOString();
const job = (over: Record<string, unknown> = {}) => ({
  id: 1, priority: 0, status: "active" as const, created_at: at(-60), activated_at: at(0), finished_at: null,
  target_count: 10, assigned_count: 4, completed_count: 0, failed_count: 0, ...over,
});

describe("job list columns", () => {
  it("says the age and the duration so far, or started to ended", () => {
    expect(ageText(job(), T0 + 120_000)).toBe("3 min ago");
    expect(durationText(job(), T0 + 65_000)).toBe("1 min 5 s");
    expect(durationText(job({ finished_at: at(30) }), T0 + 999_000)).toBe("30 s");
    expect(durationText(job({ activated_at: null, status: "scheduled" }), T0)).toBe("–");
  });

  it("stops ages and durations while the page is offline (clock.ts)", () => {
    freezeClock(T0 + 10_000);
    expect(durationText(job())).toBe("10 s");
    expect(etaText(job({ completed_count: 5 }))).toBe("ETA 10 s");
  });

  it("estimates the ETA from runs ended per second since the job started", () => {
    // 4 of 10 ended in 40 s: 0.1 run/s, 6 left -> 60 s
    expect(etaSec(job({ completed_count: 3, failed_count: 1 }), T0 + 40_000)).toBeCloseTo(60);
    expect(etaText(job({ completed_count: 3, failed_count: 1 }), T0 + 40_000)).toBe("ETA 1 min 0 s");
    expect(etaText(job({ completed_count: 10 }), T0 + 40_000)).toBe("ETA 0 s");
  });

  it("says – when the ETA cannot be estimated, and nothing for jobs that are not running", () => {
    expect(etaText(job(), T0 + 40_000)).toBe("ETA –"); // nothing ended yet
    expect(etaText(job({ activated_at: null }), T0)).toBe("ETA –");
    expect(etaText(job({ target_count: null, completed_count: 2 }), T0 + 5000)).toBe("ETA –");
    expect(etaText(job({ completed_count: 2 }), T0)).toBe("ETA –"); // no time has passed
    expect(etaText(job({ status: "completed", completed_count: 10 }), T0 + 5000)).toBe("");
    expect(etaText(job({ status: "paused", completed_count: 2 }), T0 + 5000)).toBe("");
  });

  it("counts a cancelled job's cancelled runs: assigned but not ended; the rest never started", () => {
    const c = job({ status: "cancelled", target_count: 10, assigned_count: 6, completed_count: 2, failed_count: 1 });
    expect(cancelledRuns(c)).toEqual({ cancelled: 3, neverStarted: 4 });
    expect(cancelledText(c)).toBe("3 runs cancelled · 4 never started");
    expect(cancelledText({ ...c, assigned_count: 4, target_count: 4, failed_count: 0, completed_count: 3 }))
      .toBe("1 run cancelled");
    expect(cancelledText(job({ status: "scheduled", assigned_count: 0 }))).toBe("");
  });
});

describe("job list sort", () => {
  const jobs = [
    job({ id: 1, priority: 5, status: "completed" }),
    job({ id: 2, priority: 0, status: "active" }),
    job({ id: 3, priority: 9, status: "cancelled" }),
    job({ id: 4, priority: 5, status: "scheduled" }),
  ];
  const ids = (list: { id: number }[]) => list.map((j) => j.id);

  it("sorts by created (newest first), priority (highest first), status (live work first)", () => {
    expect(ids(sortJobs(jobs, "created"))).toEqual([4, 3, 2, 1]);
    expect(ids(sortJobs(jobs, "priority"))).toEqual([3, 4, 1, 2]);
    expect(ids(sortJobs(jobs, "status"))).toEqual([2, 4, 1, 3]);
  });

  it("remembers the sort in storage and falls back to created", () => {
    const m = new Map<string, string>();
    const s = { getItem: (k: string) => m.get(k) ?? null, setItem: (k: string, v: string) => void m.set(k, v) };
    expect(loadSort(s)).toBe("created");
    saveSort("priority", s);
    expect(loadSort(s)).toBe("priority");
    expect(parseSort("bogus")).toBe("created");
    expect(loadSort({ getItem: () => { throw new Error("denied"); } })).toBe("created");
  });
});
