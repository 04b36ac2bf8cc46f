// The audit page's logic: the query a filter makes, and an event's before → after as rows to read.
import type { AuditActor, AuditEvent } from "./types";

export interface AuditFilters {
  actor: string;
  actor_kind: "" | AuditActor["kind"];
  object_kind: string;
  object_id: string;
  action: string;
  /** As a datetime-local input holds it (the browser's local time), or "". */
  since: string;
  until: string;
}

export const NO_FILTERS: AuditFilters = {
  actor: "", actor_kind: "", object_kind: "", object_id: "", action: "", since: "", until: "",
};

export const ACTOR_KINDS: AuditActor["kind"][] = ["person", "token", "agent", "cli", "system"];
export const OBJECT_KINDS = ["job", "device", "agent", "schedule", "admin_token", "fleet_policy", "scheduler", "person",
  "personal_token"];

/** A datetime-local value ("2026-11-30T19:05") as the instant it names here, in ISO 8601; null if none. */
export function localToIso(value: string): string | null {
  if (!value.trim()) return null;
  const at = new Date(value);
  return Number.isNaN(at.getTime()) ? null : at.toISOString();
}

/** "?limit=…&actor=…": blanks left out, times as ISO instants, ``before`` for the next (older) page. */
export function auditQuery(f: AuditFilters, before: number | null = null, limit = 50): string {
  const q = new URLSearchParams({ limit: String(limit) });
  for (const key of ["actor", "actor_kind", "object_kind", "object_id", "action"] as const) {
    const v = f[key].trim();
    if (v) q.set(key, v);
  }
  for (const key of ["since", "until"] as const) {
    const iso = localToIso(f[key]);
    if (iso) q.set(key, iso);
  }
  if (before !== null) q.set("before", String(before));
  return `?${q.toString()}`;
}

/** One field's change: its name, its values before and after as text, and whether the object was made or removed
 * (then only one side means anything). */
export interface ChangeRow {
  field: string;
  before: string;
  after: string;
  side: "both" | "made" | "removed";
}

/** null and missing as "–"; text as it is; anything else as compact JSON. */
export function valueText(v: unknown): string {
  if (v === null || v === undefined) return "–";
  if (typeof v === "string") return v;
  return JSON.stringify(v);
}

/** Every field either side names, in the order first seen: a creation shows only "after", a deletion "before". */
export function changeRows(e: Pick<AuditEvent, "before" | "after">): ChangeRow[] {
  const before = e.before ?? {};
  const after = e.after ?? {};
  const fields = [...new Set([...Object.keys(before), ...Object.keys(after)])];
  const side = e.before === null ? "made" : e.after === null ? "removed" : "both";
  return fields.map((field) => ({ field, before: valueText(before[field]), after: valueText(after[field]), side }));
}

/** "env (token)", "rack-2 (agent)". */
export function actorText(a: AuditActor): string {
  return `${a.name} (${a.kind === "cli" ? "CLI" : a.kind})`;
}

/** "job 12", "fleet policy" (singletons have no id). */
export function objectText(e: Pick<AuditEvent, "object_kind" | "object_id">): string {
  const kind = e.object_kind.replace(/_/g, " ");
  return e.object_id === null ? kind : `${kind} ${e.object_id}`;
}

/** Older pages appended after what is shown, without repeating an event. */
export function appendOlder(shown: AuditEvent[], older: AuditEvent[]): AuditEvent[] {
  const seen = new Set(shown.map((e) => e.id));
  return [...shown, ...older.filter((e) => !seen.has(e.id))];
}
