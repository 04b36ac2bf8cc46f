import { describe, expect, it } from "vitest";
import { ageText, hasScreen, ThumbScheduler, tileOrder } from "./grid";
import type { Device } from "./types";

function device(id: number, over: Partial<Device> = {}): Device {
  return {
    id, serial: `s${String(id).padStart(3, "0")}`, agent_id: 1, agent_name: "pc-a", model: "Pixel 7",
    android_version: "14", tags: [], battery: 90, battery_temp_c: 30, state: "idle", paused_by: null,
    last_seen_at: null, health_reason: null, quarantine_reason: null, recovering: null, ...over,
  };
}

/** A scheduler on a hand-moved clock whose fetches the test settles one by one. */
function harness(concurrency = 2) {
  let now = 1_000_000;
  const asked: number[] = [];
  const pending = new Map<number, { ok: (url: string) => void; fail: (e: Error) => void }>();
  const revoked: string[] = [];
  const changed: number[] = [];
  const s = new ThumbScheduler((id) => new Promise<string>((ok, fail) => {
    asked.push(id);
    pending.set(id, { ok, fail });
  }), (id) => changed.push(id), () => now, 30_000, concurrency, (url) => revoked.push(url));
  return {
    s, asked, revoked, changed,
    advance: (ms: number) => { now += ms; },
    settle: async (id: number, url: string | Error) => {
      const p = pending.get(id)!;
      pending.delete(id);
      if (url instanceof Error) p.fail(url);
      else p.ok(url);
      await new Promise((r) => setTimeout(r, 0));
    },
  };
}

describe("the fleet grid", () => {
  it("keeps tiles in agent then serial order, whatever their state", () => {
    const tiles = tileOrder([device(3, { agent_name: "pc-b" }), device(2, { serial: "zz" }), device(1, { state: "busy" })]);
    expect(tiles.map((d) => d.id)).toEqual([1, 2, 3]);
  });

  it("has no screen to show for an offline phone only", () => {
    expect(hasScreen("offline")).toBe(false);
    for (const state of ["idle", "busy", "paused", "quarantined", "unhealthy", "recovering"] as const) {
      expect(hasScreen(state)).toBe(true);
    }
  });

  it("fetches only tiles on screen with a screen, a few at a time", async () => {
    const h = harness(2);
    h.s.show(1, true);
    h.s.show(2, false); // offline
    h.s.show(3, true);
    h.s.show(4, true);
    void h.s.pump();
    expect(h.asked).toEqual([1, 3]);
    void h.s.pump();
    expect(h.asked).toEqual([1, 3]); // both slots busy
    await h.settle(1, "blob:1");
    void h.s.pump();
    expect(h.asked).toEqual([1, 3, 4]);
    expect(h.s.thumbs.get(1)).toMatchObject({ url: "blob:1", error: null });
    expect(h.changed).toEqual([1]);
  });

  it("refreshes a picture only after the refresh interval, and lets go of the old one", async () => {
    const h = harness(4);
    h.s.show(1, true);
    void h.s.pump();
    await h.settle(1, "blob:a");
    h.advance(29_000);
    expect(h.s.due()).toEqual([]);
    h.advance(1_000);
    expect(h.s.due()).toEqual([1]);
    void h.s.pump();
    await h.settle(1, "blob:b");
    expect(h.s.thumbs.get(1)?.url).toBe("blob:b");
    expect(h.revoked).toEqual(["blob:a"]);
  });

  it("stops asking for a tile scrolled away, and asks the oldest first when it returns", async () => {
    const h = harness(1);
    h.s.show(1, true);
    h.s.show(2, true);
    void h.s.pump();
    await h.settle(1, "blob:1");
    h.s.show(2, null);
    expect(h.s.due()).toEqual([]);
    h.advance(31_000);
    h.s.show(2, true);
    expect(h.s.due()).toEqual([2]); // never fetched: before 1, which has a picture
  });

  it("keeps the last picture and says why when a refresh fails, and waits a round before trying again", async () => {
    const h = harness(4);
    h.s.show(1, true);
    void h.s.pump();
    await h.settle(1, "blob:1");
    h.advance(30_000);
    void h.s.pump();
    await h.settle(1, new Error("the phone is offline"));
    expect(h.s.thumbs.get(1)).toMatchObject({ url: "blob:1", error: "the phone is offline" });
    expect(h.s.due()).toEqual([]);
  });

  it("lets go of every picture when the page goes, including one still on its way", async () => {
    const h = harness(4);
    h.s.show(1, true);
    h.s.show(2, true);
    void h.s.pump();
    await h.settle(1, "blob:1");
    h.s.stop();
    await h.settle(2, "blob:2");
    expect(h.revoked.sort()).toEqual(["blob:1", "blob:2"]);
    expect(h.s.thumbs.size).toBe(0);
  });

  it("says how old a picture is", () => {
    expect(ageText(0, 12_400)).toBe("12 s ago");
    expect(ageText(0, 185_000)).toBe("3 min ago");
  });
});
