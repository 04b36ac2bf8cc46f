import { describe, expect, it } from "vitest";
import {
  attentionSummary, batteryReading, eventTitle, eventTone, filterCounts, filterPhones, groupCountsText, healthChanged, isHot,
  liveDetail, mergeEvents, needsAttention, otherBroken, lastSeenText, parsePhoneFilter, phoneLines, recoverText, sortAttention,
  temperatureReading, temperatureText, thresholdChecks, whyText,
} from "./fleetHealth";
import { Store } from "./store";
import type { AttentionItem, Device, DeviceDetail, DeviceEvent } from "./types";

function device(id: number, over: Partial<Device> = {}): Device {
  return {
    id, serial: `s${String(id).padStart(3, "0")}`, agent_id: 1, agent_name: "pc-a", model: "Pixel 7",
    android_version: "14", tags: [], battery: 90, battery_temp_c: 30, state: "idle", paused_by: null,
    last_seen_at: null, health_reason: null, quarantine_reason: null, recovering: null, ...over,
  };
}

const HOT = "battery 52.0 °C above 45.0 °C";
const fleet = [
  device(1),
  device(2, { state: "busy" }),
  device(3, { state: "quarantined", quarantine_reason: "3 phone failures in a row (device_lost)" }),
  device(4, { state: "unhealthy", battery_temp_c: 52, health_reason: HOT, agent_name: "pc-b" }),
  device(5, { state: "recovering", recovering: "reboot", agent_name: "pc-b" }),
  device(6, { state: "offline", battery_temp_c: 60, agent_name: "pc-b" }),
  device(7, { state: "paused", paused_by: "server", agent_name: "pc-b" }),
  device(8, { state: "unhealthy", health_reason: "battery 9% below 15%", agent_name: "pc-c", agent_id: 3 }),
];

describe("a phone's health", () => {
  it("is hot above the fleet's limit or when its agent says so, never while offline", () => {
    expect(isHot(device(1, { battery_temp_c: 46 }), 45)).toBe(true);
    expect(isHot(device(1, { battery_temp_c: 45 }), 45)).toBe(false);
    expect(isHot(device(1, { battery_temp_c: 41, health_reason: "battery 41.0 °C above 40.0 °C" }), 45)).toBe(true);
    expect(isHot(device(1, { battery_temp_c: 60 }), null)).toBe(false);
    expect(isHot(device(6, { state: "offline", battery_temp_c: 60 }), 45)).toBe(false);
  });
  it("needs attention when quarantined, recovering, unhealthy or hot", () => {
    expect(fleet.filter((d) => needsAttention(d, 45)).map((d) => d.id)).toEqual([3, 4, 5, 8]);
    expect(needsAttention(device(1, { state: "busy", battery_temp_c: 50 }), 45)).toBe(true);
  });
  it("says why", () => {
    expect(whyText(fleet[2])).toBe("3 phone failures in a row (device_lost)");
    expect(whyText(fleet[3])).toBe(HOT);
    expect(whyText(fleet[4])).toBe("recovery rung reboot running");
    expect(whyText(device(1, { state: "recovering", recovering: "usb_reset" }))).toBe("recovery rung USB reset running");
    expect(whyText(device(1, { state: "unhealthy" }))).toBe("a health threshold is broken");
    expect(whyText(fleet[0])).toBeNull();
    expect(whyText(device(1, { state: "offline", health_reason: "old news" }))).toBeNull();
    expect(temperatureText(38.46)).toBe("38.5 °C");
    expect(temperatureText(null)).toBe("–");
  });
});

describe("the phones table", () => {
  it("filters by health and by state", () => {
    const ids = (f: Parameters<typeof filterPhones>[1]) => filterPhones(fleet, f, "", 45).map((d) => d.id);
    expect(ids("all")).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(ids("available")).toEqual([1, 2]);
    expect(ids("attention")).toEqual([3, 4, 5, 8]);
    expect(ids("hot")).toEqual([4]);
    expect(ids("quarantined")).toEqual([3]);
    expect(ids("offline")).toEqual([6]);
    expect(filterPhones(fleet, "all", "DEVICE_LOST", 45).map((d) => d.id)).toEqual([3]);
    expect(filterPhones(fleet, "attention", "pc-b", 45).map((d) => d.id)).toEqual([4, 5]);
  });
  it("counts each filter", () => {
    const c = filterCounts(fleet, 45);
    expect([c.all, c.available, c.attention, c.hot, c.idle, c.unhealthy, c.quarantined]).toEqual([8, 2, 4, 1, 1, 2, 1]);
  });
  it("reads a filter from the address, anything unknown as all", () => {
    expect(parsePhoneFilter("attention")).toBe("attention");
    expect(parsePhoneFilter("quarantined")).toBe("quarantined");
    expect(parsePhoneFilter("bogus")).toBe("all");
    expect(parsePhoneFilter(null)).toBe("all");
  });
  it("sorts by agent then serial and groups by agent with counts", () => {
    const shuffled = [fleet[7], fleet[3], fleet[0], fleet[5], fleet[1]];
    const shown = filterPhones(shuffled, "all", "", 45);
    expect(shown.map((d) => d.id)).toEqual([1, 2, 4, 6, 8]);
    const { lines, groups } = phoneLines(shown, fleet, new Set(), 45);
    expect(lines.map((l) => (l.kind === "group" ? l.group.agent : l.device.id))).toEqual(
      ["pc-a", 1, 2, "pc-b", 4, 6, "pc-c", 8]);
    expect(groups.map((g) => [g.agent, g.shown, g.total, g.attention])).toEqual(
      [["pc-a", 2, 3, 0], ["pc-b", 2, 4, 1], ["pc-c", 1, 1, 1]]);
    expect(groupCountsText(groups[0])).toBe("2 of 3 phones: 1 idle, 1 busy");
    expect(groupCountsText(groups[2])).toBe("1 phone: 1 unhealthy");
  });
  it("keeps a collapsed group's header and counts, without its phones", () => {
    const { lines, groups } = phoneLines(filterPhones(fleet, "all", "", 45), fleet, new Set(["pc-b"]), 45);
    expect(lines.map((l) => (l.kind === "group" ? `${l.group.agent}${l.collapsed ? "+" : ""}` : l.device.id)))
      .toEqual(["pc-a", 1, 2, 3, "pc-b+", "pc-c", 8]);
    expect(groupCountsText(groups[1])).toBe("4 phones: 1 paused, 1 offline, 1 unhealthy, 1 recovering");
  });
  it("groups a phone without an agent name under its agent id", () => {
    const { groups } = phoneLines([device(9, { agent_name: null, agent_id: 7 })], [], new Set(), 45);
    expect(groups[0].agent).toBe("agent 7");
  });
  it("refetches the attention list only for changes that matter", () => {
    const idle = device(1);
    expect(healthChanged(idle, { ...idle, state: "busy" }, 45)).toBe(false);
    expect(healthChanged(idle, { ...idle, state: "paused" }, 45)).toBe(false);
    expect(healthChanged(idle, { ...idle, state: "quarantined" }, 45)).toBe(true);
    expect(healthChanged(idle, { ...idle, battery_temp_c: 50 }, 45)).toBe(true);
    expect(healthChanged(idle, { ...idle, state: "offline" }, 45)).toBe(true);
    const sick = device(2, { state: "unhealthy", health_reason: "a" });
    expect(healthChanged(sick, { ...sick, health_reason: "b" }, 45)).toBe(true);
    expect(healthChanged(sick, { ...sick, battery: 80 }, 45)).toBe(false);
    expect(healthChanged(undefined, idle, 45)).toBe(false);
    expect(healthChanged(undefined, sick, 45)).toBe(true);
  });
});

function item(serial: string, problem: AttentionItem["problem"], since: string | null = null): AttentionItem {
  return { device_id: 1, serial, agent_name: "pc", state: "unhealthy", problem, reason: null, since };
}

describe("needs attention", () => {
  it("orders the worst first, then the longest-standing, then by serial", () => {
    const items = [
      item("f", "flapping"), item("u2", "unhealthy", "2024-01-01T10:00:00Z"), item("h", "hot"),
      item("u1", "unhealthy", "2024-01-01T09:00:00Z"), item("u0", "unhealthy"), item("r", "recovering"),
      item("q2", "quarantined", "2024-01-02T00:00:00Z"), item("q1", "quarantined", "2024-01-01T00:00:00Z"),
    ];
    expect(sortAttention(items).map((i) => i.serial)).toEqual(["q1", "q2", "r", "h", "u1", "u2", "u0", "f"]);
    expect(items[0].serial).toBe("f"); // not sorted in place
  });
  it("sums up by problem", () => {
    expect(attentionSummary([item("a", "hot"), item("b", "quarantined"), item("c", "quarantined")]))
      .toBe("2 quarantined · 1 hot");
    expect(attentionSummary([])).toBe("");
  });
});

describe("one phone", () => {
  const thresholds = { min_battery: 15, max_battery_temp_c: 45, min_data_free_mb: 500, max_probe_sec: 5 };
  it("checks each threshold against its last facts", () => {
    const checks = thresholdChecks({
      thresholds, battery: 90, battery_temp_c: 52, broken: [HOT],
      health: { battery: 90, battery_temp_c: 52, data_free_mb: 120, probe_ms: 80 },
    });
    expect(checks.map((c) => [c.key, c.value, c.broken])).toEqual([
      ["min_battery", "90%", false], ["max_battery_temp_c", "52.0 °C", true], ["min_data_free_mb", "120 MB", true],
      ["max_probe_sec", "80 ms", false]]);
    expect(checks[1].limit).toBe("at most 45 °C");
  });
  it("takes the agent's word where its own limit is stricter, and unknown facts as unknown", () => {
    const checks = thresholdChecks({
      thresholds, battery: 18, battery_temp_c: null, broken: ["battery 18% below 20%", "adb unauthorized: accept"],
      health: null,
    });
    expect(checks.map((c) => c.broken)).toEqual([true, null, null, null]);
    expect(otherBroken(["battery 18% below 20%", "adb unauthorized: accept", "probe took 6.0 s, above 5.0 s"]))
      .toEqual(["adb unauthorized: accept"]);
  });
  it("does not judge an offline phone's battery and temperature: unknown, with the last value in a title", () => {
    const checks = thresholdChecks({
      thresholds, state: "offline", battery: 9, battery_temp_c: 52, broken: [HOT],
      health: { battery: 9, battery_temp_c: 52, data_free_mb: 120, probe_ms: 80 },
    });
    expect(checks.map((c) => [c.key, c.value, c.broken, c.title])).toEqual([
      ["min_battery", "–", null, "unknown while offline; last 9 %"],
      ["max_battery_temp_c", "–", null, "unknown while offline; last 52.0 °C"],
      ["min_data_free_mb", "120 MB", true, undefined], ["max_probe_sec", "80 ms", false, undefined]]);
  });
  it("words the timeline", () => {
    const e = (kind: DeviceEvent["kind"], data: Record<string, unknown> = {}) => ({ kind, data });
    expect(eventTitle(e("recovery_ended", { rung: "reboot", outcome: "healed" }))).toBe("Recovery ended: reboot (healed)");
    expect(eventTitle(e("recovery_started", { rung: "power_cycle" }))).toBe("Recovery started: power cycle");
    expect(eventTitle(e("selftest", { passed: false }))).toBe("Self-test failed");
    expect(eventTitle(e("health_changed", { healthy: true }))).toBe("Healthy again");
    expect(eventTitle(e("health_changed", { healthy: false }))).toBe("Unhealthy");
    expect(eventTitle(e("connected", { first_seen: true }))).toBe("Connected (first seen)");
    expect(eventTitle(e("quarantined"))).toBe("Quarantined");
    expect([eventTone(e("quarantined")), eventTone(e("released")), eventTone(e("paused"))])
      .toEqual(["bad", "good", "info"]);
  });
  it("merges timeline pages newest first, each entry once", () => {
    const ev = (id: number): DeviceEvent => ({ id, device_id: 1, kind: "connected", actor: "agent", reason: null,
      data: {}, created_at: "2024-01-01T00:00:00Z" });
    expect(mergeEvents([ev(5), ev(4)], [ev(6), ev(4), ev(2)]).map((x) => x.id)).toEqual([6, 5, 4, 2]);
  });
  it("says what a recovery request did", () => {
    expect(recoverText({ device_id: 1, serial: "s1", rung: "reboot", sent: true }))
      .toBe("s1: its agent was asked to run reboot; the timeline shows how it goes.");
    expect(recoverText({ device_id: 1, serial: "s1", rung: "usb_reset", sent: false })).toContain("not connected");
  });
});

describe("the store", () => {
  it("keeps the attention list worst first and says which device updates change it", () => {
    const store = new Store(0, () => undefined);
    store.setAttention([item("u", "unhealthy"), item("q", "quarantined")]);
    expect(store.attention?.map((i) => i.serial)).toEqual(["q", "u"]);
    store.maxTempC = 45;
    store.replaceDevices([device(1), device(2)]);
    expect(store.devicesUpdate([device(1, { state: "busy" })])).toBe(false);
    expect(store.devicesUpdate([device(1, { state: "idle" }), device(2, { battery_temp_c: 47 })])).toBe(true);
    const heard: number[] = [];
    const off = store.onDeviceEvent((e) => heard.push(e.id));
    store.deviceEvent({ id: 7, device_id: 1, kind: "released", actor: "env", reason: null, data: {},
      created_at: "2024-01-01T00:00:00Z" });
    off();
    store.deviceEvent({ id: 8, device_id: 1, kind: "released", actor: "env", reason: null, data: {},
      created_at: "2024-01-01T00:00:00Z" });
    expect(heard).toEqual([7]);
  });
  it("shows a phone's page with its live row on top of its detail, but never an older record", () => {
    const record = { runs: 9, runs_24h: 9, success_rate_50: 1, success_rate_24h: 1, failure_streak: 0,
      failures_by_code: {}, disconnects_24h: 0, mtbf_sec: null, last_failure: null, avg_queue_wait_sec: null };
    const detail: DeviceDetail = { ...device(1, { state: "quarantined", quarantine_reason: "x" }), reliability: record,
      thresholds: {}, broken: [] };
    const stale: DeviceDetail = { ...detail, state: "idle", quarantine_reason: null,
      reliability: { ...record, runs: 1 } };
    const shown = liveDetail(detail, stale);
    expect([shown.state, shown.quarantine_reason, shown.reliability.runs]).toEqual(["idle", null, 9]);
    expect(liveDetail(detail, undefined)).toBe(detail);
  });
});

describe("last seen, battery and temperature", () => {
  const at = Date.parse("2026-11-30T12:00:00Z");
  const seen = "2026-11-30T11:48:00Z";
  it("says just now while connected, whatever the last report's age", () => {
    expect(lastSeenText(device(1, { last_seen_at: seen }), at)).toBe("just now");
    expect(lastSeenText(device(2, { state: "unhealthy", last_seen_at: null }), at)).toBe("just now");
  });
  it("says how long ago an offline phone was last seen", () => {
    const off = (iso: string | null) => device(6, { state: "offline", last_seen_at: iso });
    expect(lastSeenText(off(seen), at)).toBe("12 min ago");
    expect(lastSeenText(off("2026-11-30T11:59:47Z"), at)).toBe("13 s ago");
    expect(lastSeenText(off("2026-11-30T09:00:00Z"), at)).toBe("3 h ago");
    expect(lastSeenText(off("2026-11-25T12:00:00Z"), at)).toBe("5 d ago");
    expect(lastSeenText(off("2026-11-30T12:00:09Z"), at)).toBe("0 s ago"); // a server clock a little ahead
    expect(lastSeenText(off(null), at)).toBe("never");
  });
  it("shows battery and temperature while connected, unknown with the last value in a title while offline", () => {
    expect(batteryReading(device(1, { battery: 87 }))).toEqual({ text: "87%", title: undefined });
    expect(batteryReading(device(1, { battery: null }))).toEqual({ text: "–", title: undefined });
    expect(batteryReading(device(6, { state: "offline", battery: 87 })))
      .toEqual({ text: "–", title: "unknown while offline; last 87 %" });
    expect(batteryReading(device(6, { state: "offline", battery: null })))
      .toEqual({ text: "–", title: "unknown while offline" });
    expect(batteryReading(device(6, { state: "offline", battery: 87 }), 40).title).toBe("unknown while offline; last 40 %");
    expect(temperatureReading(device(1, { battery_temp_c: 31.5 }))).toEqual({ text: "31.5 °C", title: undefined });
    expect(temperatureReading(device(6, { state: "offline", battery_temp_c: 31.5 })))
      .toEqual({ text: "–", title: "unknown while offline; last 31.5 °C" });
    expect(temperatureReading(device(6, { state: "offline", battery_temp_c: null })).title).toBe("unknown while offline");
  });
});
