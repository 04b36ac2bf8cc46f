import { afterEach, describe, expect, it } from "vitest";
import { clockNow, freezeClock } from "./clock";
import { agoText, duration } from "./logic";

afterEach(() => freezeClock(null));

describe("the shown clock", () => {
  it("runs with the real clock while live, and stops at the last live moment while offline", () => {
    const past = new Date(Date.now() - 10 * 60_000).toISOString();
    expect(agoText(past)).toBe("10 min ago");
    freezeClock(Date.parse(past) + 30_000);
    expect(clockNow()).toBe(Date.parse(past) + 30_000);
    expect(agoText(past)).toBe("30 s ago");
    expect(duration(past, null)).toBe(duration(past, new Date(Date.parse(past) + 30_000).toISOString()));
    freezeClock(null);
    expect(agoText(past)).toBe("10 min ago");
  });
});
