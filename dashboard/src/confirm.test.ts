import { describe, expect, it } from "vitest";
import { cancelJobsText, cancelJobText, deleteJobText } from "./confirm";

const job = { id: 12, status: "active" as const, target_count: 10, assigned_count: 10, completed_count: 0,
  failed_count: 0, running_count: 4, paused_count: 0 };

describe("confirmations say what will happen", () => {
  it("cancel names the running runs and their phones, and those still waiting", () => {
    expect(cancelJobText(job)).toBe("This cancels 4 running runs on 4 phones and 6 waiting runs. " +
      "Runs already finished keep their results.");
    expect(cancelJobText({ ...job, running_count: 1, completed_count: 9 }))
      .toBe("This cancels 1 running run on 1 phone. Runs already finished keep their results.");
    expect(cancelJobText({ ...job, running_count: 0, completed_count: 10 })).toContain("none is in flight");
  });
  it("delete names the job and its runs, and cancels running ones first", () => {
    expect(deleteJobText(job)).toBe("This deletes job 12 and its 10 runs, with their results and files. " +
      "It first cancels 4 running runs on 4 phones. It cannot be undone.");
    expect(deleteJobText({ ...job, running_count: 0, assigned_count: 1 })).toContain("its 1 run,");
  });
  it("a batch cancel adds up the jobs", () => {
    expect(cancelJobsText([job, { ...job, id: 13, running_count: 0, paused_count: 2, completed_count: 8 }]))
      .toBe("This cancels 2 jobs: it cancels 4 running runs on 4 phones, 2 paused runs and 6 waiting runs. " +
        "Runs already finished keep their results.");
    expect(cancelJobsText([])).toContain("None of the selected jobs can be cancelled");
  });
});
