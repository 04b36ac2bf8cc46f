import { describe, expect, it } from "vitest";
import {
  anyUploading, byStep, bytesText, caption, mergePages, pendingText, positionText, statusText, step, stepText,
  viewable, viewerKey,
} from "./gallery";
import type { Artifact } from "./types";

function art(id: number, over: Partial<Artifact> = {}): Artifact {
  return {
    id, assignment_id: 7, name: `7-${id}.png`, kind: "screenshot", bytes: 1000, sha256: "a".repeat(64),
    status: "stored", step_index: id, taken_at: `2026-11-30T12:00:0${id}Z`, ...over,
  };
}

describe("gallery order and captions", () => {
  it("orders a run's files by step, then time, then name; files without a step last", () => {
    const items = [art(3), art(1, { step_index: null }), art(2), art(4, { step_index: 2, taken_at: "2026-11-30T11:00:00Z" })];
    expect(byStep(items).map((a) => a.id)).toEqual([4, 2, 3, 1]);
  });
  it("captions with the step (counted from 1) and the time taken", () => {
    expect(caption(art(2), (iso) => iso.slice(11, 19))).toBe("Step 3 · taken 12:00:02");
    expect(caption(art(2, { step_index: null, taken_at: null }))).toBe("7-2.png");
    expect(stepText(art(0))).toBe("Step 1");
  });
  it("shows uploading and deleted pictures as such, never as nothing", () => {
    expect(statusText(art(1, { status: "uploading" }))).toBe("uploading…");
    expect(statusText(art(1, { status: "deleted", deleted_reason: "age: older than 30 days" })))
      .toBe("deleted: age: older than 30 days");
    expect(statusText(art(1))).toBeNull();
    expect(viewable(art(1))).toBe(true);
    expect(viewable(art(1, { status: "uploading" }))).toBe(false);
    expect(viewable(art(1, { kind: "logcat" }))).toBe(false);
    expect(anyUploading([art(1), art(2, { status: "uploading" })])).toBe(true);
    expect(pendingText(0)).toBeNull();
    expect(pendingText(1)).toBe("1 file uploading");
    expect(pendingText(3)).toBe("3 files uploading");
  });
  it("sizes in human units", () => {
    expect(bytesText(830)).toBe("830 B");
    expect(bytesText(1234)).toBe("1.2 kB");
    expect(bytesText(45_000_000)).toBe("45 MB");
  });
});

describe("the full-size view", () => {
  it("steps to the next and previous picture, stopping at the ends", () => {
    expect(step(0, 3, 1)).toBe(1);
    expect(step(2, 3, 1)).toBe(2);
    expect(step(0, 3, -1)).toBe(0);
    expect(step(0, 0, 1)).toBe(0);
    expect(positionText(1, 6)).toBe("2 / 6");
  });
  it("reads arrow keys and Escape", () => {
    expect(viewerKey("ArrowRight")).toBe("next");
    expect(viewerKey("ArrowLeft")).toBe("previous");
    expect(viewerKey("Escape")).toBe("close");
    expect(viewerKey("a")).toBeNull();
  });
});

describe("a phone's pages", () => {
  it("joins pages newest first, each artifact once", () => {
    const first = [art(9), art(8)];
    expect(mergePages(first, { items: [art(8), art(7)], next_before: 7 }).map((a) => a.id)).toEqual([9, 8, 7]);
  });
});
