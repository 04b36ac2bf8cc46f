// Fleet health in words and lists (no DOM, no network): which phones need a look and why, the phones table's
// filters and agent groups, the order of the "needs attention" list, a phone's thresholds and its timeline.
// Unit-tested in fleetHealth.test.ts.
import { clockNow } from "./clock";
import type {
  AttentionItem, Device, DeviceDetail, DeviceEvent, DeviceEventKind, DeviceState, RecoverAccepted, RecoveryRung,
} from "./types";

export const DEVICE_STATES: readonly DeviceState[] = [
  "idle", "busy", "paused", "offline", "unhealthy", "quarantined", "recovering",
];

/** States that take a phone out of work for a health reason: the operator should look. */
export const ATTENTION_STATES: ReadonlySet<DeviceState> = new Set<DeviceState>(["quarantined", "recovering", "unhealthy"]);

/** The thresholds' defaults (protocol.health.HealthThresholds), for a policy that leaves a field out. */
export const DEFAULT_THRESHOLDS = { min_battery: 15, max_battery_temp_c: 45, min_data_free_mb: 500, max_probe_sec: 5 };

type HealthFields = Pick<Device, "state" | "battery_temp_c" | "health_reason">;

/**
 * Above the fleet's temperature limit, or said to be by its agent (whose own limit may be lower). An offline
 * phone's temperature is its last one: not judged.
 */
export function isHot(d: HealthFields, maxTempC: number | null): boolean {
  if (d.state === "offline") return false;
  if (d.health_reason?.includes("°C above")) return true;
  return maxTempC !== null && d.battery_temp_c != null && d.battery_temp_c > maxTempC;
}

export function needsAttention(d: HealthFields, maxTempC: number | null): boolean {
  return ATTENTION_STATES.has(d.state) || isHot(d, maxTempC);
}

/** Why a phone takes no work (or is marked), in the operator's words; null when nothing is wrong. */
export function whyText(d: Pick<Device, "state" | "quarantine_reason" | "recovering" | "health_reason">):
  string | null {
  if (d.state === "quarantined") return d.quarantine_reason ?? "quarantined (no reason given)";
  if (d.state === "recovering") return `recovery rung ${rungLabel(d.recovering ?? null)} running`;
  if (d.state === "unhealthy") return d.health_reason ?? "a health threshold is broken";
  return d.state === "offline" ? null : d.health_reason ?? null;
}

/** "38.5 °C"; unknown -> "–". */
export function temperatureText(c: number | null | undefined): string {
  return c === null || c === undefined || !Number.isFinite(c) ? "–" : `${c.toFixed(1)} °C`;
}

/**
 * When the server last heard of the phone: "just now" while it is connected (its agent reports it live), its
 * age once offline ("12 min ago", from ``last_seen_at``; the page's clock stops while the page is offline).
 */
export function lastSeenText(d: Pick<Device, "state" | "last_seen_at">, now = clockNow()): string {
  if (d.state !== "offline") return "just now";
  const at = d.last_seen_at ? Date.parse(d.last_seen_at) : Number.NaN;
  if (!Number.isFinite(at)) return "never";
  const s = Math.max(0, Math.floor((now - at) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86_400 * 2) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86_400)} d ago`;
}

/** A live figure as shown: its text, and (when it is not the live value) why, for a title. */
export interface Reading {
  text: string;
  title: string | undefined;
}

/** Unknown while offline ("–", titled with the last value), never the last value as if it were current. */
function reading(offline: boolean, last: string | null): Reading {
  if (!offline) return { text: last ?? "–", title: undefined };
  return { text: "–", title: last === null ? "unknown while offline" : `unknown while offline; last ${last}` };
}

/** "87%"; offline: "–" titled "unknown while offline; last 87 %". */
export function batteryReading(d: Pick<Device, "state" | "battery">, battery = d.battery): Reading {
  const known = battery !== null && battery !== undefined && Number.isFinite(battery);
  return d.state === "offline" ? reading(true, known ? `${battery} %` : null)
    : reading(false, known ? `${battery}%` : null);
}

/** "38.5 °C"; offline: "–" titled "unknown while offline; last 38.5 °C". */
export function temperatureReading(d: Pick<Device, "state" | "battery_temp_c">, temp = d.battery_temp_c): Reading {
  const text = temperatureText(temp);
  return reading(d.state === "offline", text === "–" ? null : text);
}

// ---------------------------------------------------------------- the phones table

export type PhoneFilter = "all" | "available" | "attention" | "hot" | DeviceState;

export const PHONE_FILTERS: readonly { id: PhoneFilter; label: string }[] = [
  { id: "all", label: "All phones" },
  { id: "available", label: "Available (idle or busy)" },
  { id: "attention", label: "Needs attention" },
  { id: "hot", label: "Hot" },
  ...DEVICE_STATES.map((s) => ({ id: s, label: `State: ${s}` })),
];

const FILTER_IDS: ReadonlySet<string> = new Set(PHONE_FILTERS.map((f) => f.id));

/** A filter from the address (#/phones?show=attention); anything unknown shows all. */
export function parsePhoneFilter(text: string | null | undefined): PhoneFilter {
  return text && FILTER_IDS.has(text) ? (text as PhoneFilter) : "all";
}

export function matchesFilter(d: Device, filter: PhoneFilter, maxTempC: number | null): boolean {
  switch (filter) {
    case "all":
      return true;
    case "available":
      return d.state === "idle" || d.state === "busy";
    case "attention":
      return needsAttention(d, maxTempC);
    case "hot":
      return isHot(d, maxTempC);
    default:
      return d.state === filter;
  }
}

/** How many phones each filter shows, for the filter's options. */
export function filterCounts(devices: Iterable<Device>, maxTempC: number | null): Record<PhoneFilter, number> {
  const out = Object.fromEntries(PHONE_FILTERS.map((f) => [f.id, 0])) as Record<PhoneFilter, number>;
  for (const d of devices) {
    out.all += 1;
    out[d.state] += 1;
    if (d.state === "idle" || d.state === "busy") out.available += 1;
    const hot = isHot(d, maxTempC);
    if (hot) out.hot += 1;
    if (hot || ATTENTION_STATES.has(d.state)) out.attention += 1;
  }
  return out;
}

export function agentLabel(d: Pick<Device, "agent_name" | "agent_id">): string {
  return d.agent_name ?? `agent ${d.agent_id}`;
}

function matchesSearch(d: Device, q: string): boolean {
  return [d.serial, d.model, d.android_version, d.agent_name, d.state, d.quarantine_reason, d.health_reason,
    ...d.tags].some((v) => (v ?? "").toLowerCase().includes(q));
}

/** The phones a filter and a search show, by agent, then serial. */
export function filterPhones(devices: Iterable<Device>, filter: PhoneFilter, search: string,
  maxTempC: number | null): Device[] {
  const q = search.trim().toLowerCase();
  const out: Device[] = [];
  for (const d of devices) {
    if (matchesFilter(d, filter, maxTempC) && (!q || matchesSearch(d, q))) out.push(d);
  }
  return out.sort((a, b) => agentLabel(a).localeCompare(agentLabel(b)) || a.serial.localeCompare(b.serial));
}

export interface PhoneGroup {
  agent: string;
  /** Phones of this agent shown (after the filter and search). */
  shown: number;
  /** All of this agent's phones. */
  total: number;
  byState: Partial<Record<DeviceState, number>>;
  attention: number;
}

/** One row of the windowed table: an agent's header, or a phone. */
export type PhoneLine = { kind: "group"; group: PhoneGroup; collapsed: boolean } | { kind: "phone"; device: Device };

/**
 * The table's rows: each agent's header (with its counts) followed by its phones, unless collapsed. ``shown``
 * comes from ``filterPhones`` (sorted by agent); ``all`` gives each agent's total.
 */
export function phoneLines(shown: Device[], all: Iterable<Device>, collapsed: ReadonlySet<string>,
  maxTempC: number | null): { lines: PhoneLine[]; groups: PhoneGroup[] } {
  const totals = new Map<string, number>();
  for (const d of all) totals.set(agentLabel(d), (totals.get(agentLabel(d)) ?? 0) + 1);
  const lines: PhoneLine[] = [];
  const groups: PhoneGroup[] = [];
  let group: PhoneGroup | null = null;
  for (const d of shown) {
    const agent = agentLabel(d);
    if (group === null || group.agent !== agent) {
      group = { agent, shown: 0, total: totals.get(agent) ?? 0, byState: {}, attention: 0 };
      groups.push(group);
      lines.push({ kind: "group", group, collapsed: collapsed.has(agent) });
    }
    group.shown += 1;
    group.byState[d.state] = (group.byState[d.state] ?? 0) + 1;
    if (needsAttention(d, maxTempC)) group.attention += 1;
    if (!collapsed.has(agent)) lines.push({ kind: "phone", device: d });
  }
  return { lines, groups };
}

/** "100 phones: 80 idle, 15 busy, 5 offline" or, filtered, "3 of 100 phones: 3 quarantined". */
export function groupCountsText(g: PhoneGroup): string {
  const head = g.shown === g.total ? `${g.total} ${g.total === 1 ? "phone" : "phones"}`
    : `${g.shown} of ${g.total} ${g.total === 1 ? "phone" : "phones"}`;
  const parts = DEVICE_STATES.filter((s) => g.byState[s]).map((s) => `${g.byState[s]} ${s}`);
  return parts.length ? `${head}: ${parts.join(", ")}` : head;
}

// ---------------------------------------------------------------- needs attention

export type Problem = AttentionItem["problem"];

/** Worst first: out of work by the policy or a person, then being repaired, then hot, unwell, flapping. */
export const PROBLEM_ORDER: readonly Problem[] = ["quarantined", "recovering", "hot", "unhealthy", "flapping"];

/** Worst problem first; within one, the longest-standing first (unknown since: last), then by serial. */
export function sortAttention(items: readonly AttentionItem[]): AttentionItem[] {
  const since = (i: AttentionItem) => (i.since ? Date.parse(i.since) : Number.POSITIVE_INFINITY);
  return [...items].sort((a, b) => PROBLEM_ORDER.indexOf(a.problem) - PROBLEM_ORDER.indexOf(b.problem)
    || since(a) - since(b) || a.serial.localeCompare(b.serial));
}

/** "2 quarantined · 1 hot · 1 flapping". */
export function attentionSummary(items: readonly AttentionItem[]): string {
  const counts = new Map<Problem, number>();
  for (const i of items) counts.set(i.problem, (counts.get(i.problem) ?? 0) + 1);
  return PROBLEM_ORDER.filter((p) => counts.has(p)).map((p) => `${counts.get(p)} ${p}`).join(" · ");
}

// ---------------------------------------------------------------- one phone

export interface ThresholdCheck {
  key: "min_battery" | "max_battery_temp_c" | "min_data_free_mb" | "max_probe_sec";
  label: string;
  limit: string;
  value: string;
  /** null: not known (no probe yet, or a live figure of an offline phone). */
  broken: boolean | null;
  /** Why the value is not shown: "unknown while offline; last 87 %". */
  title?: string;
}

/** Which threshold each of the agent's sentences speaks of (agent/health.py words them). */
const SENTENCES: Record<ThresholdCheck["key"], RegExp> = {
  min_battery: /^battery \d+% below/,
  max_battery_temp_c: /°C above/,
  min_data_free_mb: /^\/data .* below/,
  max_probe_sec: /^probe took/,
};

/**
 * Each fleet threshold against the phone's last facts. The agent's own sentences win: its limits may
 * override the fleet's, so a threshold it names is broken even if the fleet's limit is not crossed.
 */
export function thresholdChecks(d: Pick<DeviceDetail, "thresholds" | "health" | "broken" | "battery"
  | "battery_temp_c"> & Partial<Pick<DeviceDetail, "state">>): ThresholdCheck[] {
  const t = { ...DEFAULT_THRESHOLDS, ...d.thresholds };
  const h = d.health ?? {};
  const named = (key: ThresholdCheck["key"]) => (d.broken ?? []).some((s) => SENTENCES[key].test(s));
  const check = (key: ThresholdCheck["key"], label: string, limit: string, value: number | null | undefined,
    text: (v: number) => string, crossed: (v: number) => boolean): ThresholdCheck => {
    const known = value !== null && value !== undefined;
    return { key, label, limit, value: known ? text(value) : "–",
      broken: named(key) || (known ? crossed(value) : null) };
  };
  const battery = h.battery ?? d.battery;
  const temp = h.battery_temp_c ?? d.battery_temp_c;
  // an offline phone's battery and temperature are unknown now: not its last values, not judged
  const offline = (c: ThresholdCheck, last: Reading): ThresholdCheck => d.state === "offline"
    ? { ...c, value: "–", broken: null, title: last.title } : c;
  return [
    offline(check("min_battery", "Battery level", `at least ${t.min_battery}%`, battery, (v) => `${v}%`,
      (v) => v < t.min_battery), batteryReading({ state: "offline", battery })),
    offline(check("max_battery_temp_c", "Battery temperature", `at most ${t.max_battery_temp_c} °C`, temp,
      temperatureText, (v) => v > t.max_battery_temp_c), temperatureReading({ state: "offline", battery_temp_c: temp })),
    check("min_data_free_mb", "Free space on /data", `at least ${t.min_data_free_mb} MB`, h.data_free_mb,
      (v) => `${v} MB`, (v) => v < t.min_data_free_mb),
    check("max_probe_sec", "Health probe time", `at most ${t.max_probe_sec} s`, h.probe_ms,
      (v) => `${Math.round(v)} ms`, (v) => v / 1000 > t.max_probe_sec),
  ];
}

/** The agent's sentences that no threshold row shows (adb unauthorized, not booted, the probe failing). */
export function otherBroken(broken: readonly string[] | undefined): string[] {
  return (broken ?? []).filter((s) => !Object.values(SENTENCES).some((re) => re.test(s)));
}

/** The recovery ladder, gentlest first: a button each on the phone's page, confirmed with its effect. */
export const RUNGS: readonly { rung: RecoveryRung; label: string; word: string; effect: string }[] = [
  { rung: "reconnect", label: "Reconnect", word: "reconnect",
    effect: "reconnects adb to the phone; a run on it may lose its connection" },
  { rung: "usb_reset", label: "USB reset", word: "USB reset",
    effect: "resets the phone's USB port: it drops off adb for a few seconds" },
  { rung: "reboot", label: "Reboot", word: "reboot", effect: "reboots the phone: whatever runs on it now is interrupted" },
  { rung: "power_cycle", label: "Power cycle", word: "power cycle",
    effect: "cuts the phone's power and turns it back on (a hard reboot): whatever runs on it now is interrupted" },
];

/** A rung in running text: "reboot", "USB reset"; an unknown one as it is. */
export function rungLabel(rung: RecoveryRung | string | null): string {
  return RUNGS.find((r) => r.rung === rung)?.word ?? String(rung ?? "?");
}

/** What a 202 from POST /recover means for the operator. */
export function recoverText(r: RecoverAccepted): string {
  const rung = rungLabel(r.rung);
  return r.sent ? `${r.serial}: its agent was asked to run ${rung}; the timeline shows how it goes.`
    : `${r.serial}: its agent is not connected by socket right now, so the ${rung} may not reach it: try again `
      + "once the agent is back.";
}

const EVENT_LABELS: Record<DeviceEventKind, string> = {
  connected: "Connected", disconnected: "Disconnected", health_changed: "Health changed", quarantined: "Quarantined",
  released: "Released", recovery_started: "Recovery started", recovery_ended: "Recovery ended",
  selftest: "Self-test", paused: "Paused", resumed: "Resumed", control_started: "Remote control started",
  control_ended: "Remote control ended",
};

/** A timeline entry's headline: "Recovery ended: reboot (healed)", "Self-test failed", "Unhealthy". */
export function eventTitle(e: Pick<DeviceEvent, "kind" | "data">): string {
  const rung = typeof e.data.rung === "string" ? rungLabel(e.data.rung) : "?";
  switch (e.kind) {
    case "recovery_started":
      return `Recovery started: ${rung}`;
    case "recovery_ended":
      return `Recovery ended: ${rung}${typeof e.data.outcome === "string" ? ` (${e.data.outcome})` : ""}`;
    case "selftest":
      return `Self-test ${e.data.passed === true ? "passed" : "failed"}`;
    case "health_changed":
      return e.data.healthy === true ? "Healthy again" : "Unhealthy";
    case "connected":
      return e.data.first_seen === true ? "Connected (first seen)" : "Connected";
    default:
      return EVENT_LABELS[e.kind] ?? e.kind;
  }
}

/** Whether an entry is bad news, good news, or neither (its marker; the headline says it in words too). */
export function eventTone(e: Pick<DeviceEvent, "kind" | "data">): "bad" | "good" | "info" {
  switch (e.kind) {
    case "quarantined":
    case "disconnected":
      return "bad";
    case "released":
    case "connected":
      return "good";
    case "health_changed":
      return e.data.healthy === true ? "good" : "bad";
    case "selftest":
      return e.data.passed === true ? "good" : "bad";
    case "recovery_ended":
      return e.data.outcome === "healed" ? "good" : "bad";
    default:
      return "info";
  }
}

/**
 * A phone's detail with its live row's fields on top (device:update keeps the row current between refetches).
 * Only the row's own fields: a row put from an older detail must not bring back its older record.
 */
export function liveDetail(detail: DeviceDetail, row: Device | undefined): DeviceDetail {
  if (!row) return detail;
  const { id, serial, agent_id, agent_name, model, android_version, tags, battery, battery_temp_c, state, paused_by,
    pause_reason, last_seen_at, health_reason, quarantine_reason, recovering } = row;
  return { ...detail, id, serial, agent_id, agent_name, model, android_version, tags, battery, battery_temp_c, state,
    paused_by, pause_reason, last_seen_at, health_reason, quarantine_reason, recovering };
}

/** Two pages of a timeline as one, newest first, each entry once. */
export function mergeEvents(a: readonly DeviceEvent[], b: readonly DeviceEvent[]): DeviceEvent[] {
  const byId = new Map<number, DeviceEvent>();
  for (const e of [...a, ...b]) byId.set(e.id, e);
  return [...byId.values()].sort((x, y) => y.id - x.id);
}

/**
 * Whether a device:update may change what the "needs attention" list shows: a state, reason, rung or
 * temperature that matters, or a phone going offline or coming back (flapping). Busy/idle/paused churn of
 * healthy phones does not, so 1,000 phones at work cost no refetches.
 */
export function healthChanged(before: Device | undefined, after: Device, maxTempC: number | null): boolean {
  if (!before) return needsAttention(after, maxTempC);
  if (needsAttention(before, maxTempC) !== needsAttention(after, maxTempC)) return true;
  if ((before.state === "offline") !== (after.state === "offline")) return true;
  if (!needsAttention(after, maxTempC)) return false;
  return before.state !== after.state || before.health_reason !== after.health_reason
    || before.quarantine_reason !== after.quarantine_reason || before.recovering !== after.recovering;
}
