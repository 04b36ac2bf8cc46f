import { describe, expect, it } from "vitest";
import { NO_FILTERS, actorText, appendOlder, auditQuery, changeRows, localToIso, objectText, valueText } from "./audit";
import type { AuditEvent } from "./types";

function event(id: number, over: Partial<AuditEvent> = {}): AuditEvent {
  return {
    id, at: "2026-11-30T19:00:00Z", actor: { kind: "token", id: null, name: "env" }, action: "job.pause",
    object_kind: "job", object_id: "7", team_id: null, before: { status: "active" }, after: { status: "paused" },
    via: "rest", address: "127.0.0.1", ...over,
  };
}

describe("the audit query", () => {
  it("leaves blank filters out and keeps the page size", () => {
    expect(auditQuery(NO_FILTERS)).toBe("?limit=50");
  });

  it("sends each given filter, trimmed, and the older page's cursor", () => {
    const q = new URLSearchParams(auditQuery({ ...NO_FILTERS, actor: " alice ", actor_kind: "token",
      object_kind: "job", object_id: "12", action: "job.pause" }, 340, 25).slice(1));
    expect(Object.fromEntries(q)).toEqual({ limit: "25", actor: "alice", actor_kind: "token", object_kind: "job",
      object_id: "12", action: "job.pause", before: "340" });
  });

  it("sends times as the instants the local inputs name", () => {
    const since = "2026-11-30T19:05";
    const q = new URLSearchParams(auditQuery({ ...NO_FILTERS, since, until: "not a time" }).slice(1));
    expect(q.get("since")).toBe(new Date(since).toISOString());
    expect(q.has("until")).toBe(false);
    expect(localToIso("")).toBeNull();
  });
});

describe("an event's change", () => {
  it("pairs each field's before and after", () => {
    expect(changeRows(event(1))).toEqual([{ field: "status", before: "active", after: "paused", side: "both" }]);
  });

  it("shows a creation's fields as new and a deletion's as gone", () => {
    expect(changeRows(event(1, { before: null, after: { title: "smoke", priority: 2 } }))).toEqual([
      { field: "title", before: "–", after: "smoke", side: "made" },
      { field: "priority", before: "–", after: "2", side: "made" }]);
    expect(changeRows(event(1, { before: { name: "alice" }, after: null }))).toEqual([
      { field: "name", before: "alice", after: "–", side: "removed" }]);
    expect(changeRows(event(1, { before: null, after: null }))).toEqual([]);
  });

  it("writes values readably", () => {
    expect(valueText(null)).toBe("–");
    expect(valueText(false)).toBe("false");
    expect(valueText({ cron: "0 2 * * *" })).toBe('{"cron":"0 2 * * *"}');
  });

  it("names who and what", () => {
    expect(actorText({ kind: "agent", id: "3", name: "rack-2" })).toBe("rack-2 (agent)");
    expect(actorText({ kind: "cli", id: null, name: "ops@host" })).toBe("ops@host (CLI)");
    expect(objectText({ object_kind: "fleet_policy", object_id: null })).toBe("fleet policy");
    expect(objectText({ object_kind: "admin_token", object_id: "4" })).toBe("admin token 4");
  });
});

describe("older pages", () => {
  it("append after what is shown, without repeats", () => {
    expect(appendOlder([event(5), event(4)], [event(4), event(3)]).map((e) => e.id)).toEqual([5, 4, 3]);
  });
});
