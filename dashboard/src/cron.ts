// Whether the server will take a cron expression, decided in the browser the way the server decides it:
// phonefleet/protocol/recurrence.py expands its @aliases and hands the rest to cronsim (2.8), whose parser
// this follows rule for rule (five fields, or six with seconds first). Cases shared with the server's own
// test, so the two cannot drift apart silently: cronCases.json (tests/test_cron_parity.py).

/** The server's @aliases (recurrence.ALIASES), matched without regard to case. */
export const CRON_ALIASES: Readonly<Record<string, string>> = {
  "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
  "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
};

/** The longest expression the server stores (ScheduleCreate.cron's max_length). */
export const MAX_CRON = 200;

export type CronField = "second" | "minute" | "hour" | "day-of-month" | "month" | "day-of-week";

/**
 * What the server would refuse in an expression, or null when it takes it. "no-such-day": a day of the
 * month that none of the months given has (30 February), which cronsim names as a bad day-of-month.
 */
export type CronProblem = "empty" | "too-long" | "fields" | CronField | "no-such-day";

const FIELDS: CronField[] = ["second", "minute", "hour", "day-of-month", "month", "day-of-week"];
const RANGES: [number, number][] = [[0, 59], [0, 59], [0, 23], [1, 31], [1, 12], [0, 7]];
const DAYS = "SUN MON TUE WED THU FRI SAT".split(" ");
const MONTHS = "JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split(" ");
const DAYS_IN_MONTH = [-1, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
const LAST = -1000;
const LAST_WEEKDAY = -1001;

class Bad extends Error {}

function digits(s: string): number {
  if (!/^[0-9]+$/.test(s)) throw new Bad();
  return Number(s);
}

function value(field: number, s: string): number {
  if (field === 4 && MONTHS.includes(s)) return MONTHS.indexOf(s) + 1;
  if (field === 5 && DAYS.includes(s)) return DAYS.indexOf(s);
  const v = digits(s);
  const [low, high] = RANGES[field];
  if (v < low || v > high) throw new Bad();
  return v;
}

/** The values one field stands for (cronsim's Field.parse); Bad when it does not parse. */
function parse(field: number, s: string): number[] {
  const [low, high] = RANGES[field];
  const span = (a: number, b: number) => Array.from({ length: b - a + 1 }, (_, i) => a + i);
  if (s === "*") return span(low, high);
  if (s.includes(",")) return s.split(",").flatMap((term) => parse(field, term));
  if (field === 5 && s.includes("L")) {
    if (!/^[0-9]+$/.test(s.slice(0, -1))) throw new Bad();
    value(field, s.slice(0, -1));
    return []; // the weekdays themselves are never looked at, only whether they parse
  }
  if (field === 5 && s.includes("#")) {
    const at = s.indexOf("#");
    const nth = digits(s.slice(at + 1));
    if (nth < 1 || nth > 5) throw new Bad();
    value(field, s.slice(0, at));
    return [];
  }
  if (s.includes("/")) {
    const at = s.indexOf("/");
    const step = digits(s.slice(at + 1));
    if (step === 0) throw new Bad();
    const items = parse(field, s.slice(0, at));
    if (items.length === 1 && (items[0] === LAST || items[0] === LAST_WEEKDAY)) return items;
    const sorted = items.length === 1 ? span(items[0], high) : [...new Set(items)].sort((a, b) => a - b);
    return sorted.filter((_, i) => i % step === 0);
  }
  if (s.includes("-")) {
    const at = s.indexOf("-");
    const start = value(field, s.slice(0, at));
    const end = value(field, s.slice(at + 1));
    if (end < start) throw new Bad();
    return span(start, end);
  }
  if (field === 3 && s === "LW") return [LAST_WEEKDAY];
  if (field === 3 && s === "L") return [LAST];
  return [value(field, s)];
}

/** What the server would refuse in `expression` as sent (the form trims it), or null when it takes it. */
export function cronProblem(expression: string): CronProblem | null {
  if ([...expression].length > MAX_CRON) return "too-long";
  const text = expression.trim().split(/\s+/).filter(Boolean).join(" ");
  if (!text) return "empty";
  const parts = (CRON_ALIASES[text.toLowerCase()] ?? text).toUpperCase().split(" ");
  if (parts.length === 5) parts.unshift("0");
  if (parts.length !== 6) return "fields";
  const values: number[][] = [];
  for (let i = 0; i < 6; i++) {
    try {
      values.push(parse(i, parts[i]));
    } catch (e) {
      if (e instanceof Bad) return FIELDS[i];
      throw e;
    }
  }
  // both day fields must match when either starts with a star: a day no month given has never comes
  const dayAnd = parts[3].startsWith("*") || parts[5].startsWith("*");
  const firstDay = Math.min(...values[3]);
  if (dayAnd && firstDay > 29 && firstDay > Math.max(...values[4].map((m) => DAYS_IN_MONTH[m]))) return "no-such-day";
  return null;
}
