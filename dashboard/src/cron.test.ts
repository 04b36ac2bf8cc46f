import { describe, expect, it } from "vitest";
import { type CronProblem, cronProblem } from "./cron";
import shared from "./cronCases.json";

describe("cron expressions, as the server takes them", () => {
  // the same cases tests/test_cron_parity.py puts to the server's model
  it.each(shared.cases as [string, CronProblem | null][])("%j -> %s", (expression, problem) => {
    expect(cronProblem(expression.trim())).toBe(problem);
  });

  it("counts the length the server counts: characters, not UTF-16 units", () => {
    expect(cronProblem("\u{1F600}".repeat(150))).toBe("fields"); // 300 UTF-16 units, 150 characters
    expect(cronProblem("0".repeat(201))).toBe("too-long");
  });
});
