import { memo } from "preact/compat";
import { useCallback, useEffect, useLayoutEffect, useMemo, useRef, useState } from "preact/hooks";
import { type Api, ApiError } from "../api";
import {
  ATTENTION_STATES, batteryReading, filterCounts, filterPhones, groupCountsText, isHot, lastSeenText, PHONE_FILTERS,
  type PhoneFilter, type PhoneGroup, phoneLines, temperatureReading, whyText,
} from "../fleetHealth";
import { clockNow } from "../clock";
import { useTicker } from "../hooks";
import { phonePauseText } from "../jobProgress";
import { agentTeamId, teamName } from "../teams";
import type { Store } from "../store";
import type { Agent, Device } from "../types";

/** Rows drawn beyond the viewport on each side, so Tab and short scrolls find rows already there. */
const OVERSCAN = 15;
const ROW_PX = 37; // until the first row is measured

/**
 * The rows of a long table that are on screen (plus OVERSCAN): 1,000 rendered rows make every change
 * relayout the whole table, a few dozen do not. The page itself scrolls; spacer rows keep its height.
 */
function useWindow(count: number, body: { current: HTMLElement | null }): [number, number, number] {
  const [rowPx, setRowPx] = useState(ROW_PX);
  const [range, setRange] = useState<[number, number]>([0, 60]);
  useLayoutEffect(() => {
    const measured = body.current?.querySelector<HTMLElement>("tr[data-testid=phone]")?.offsetHeight;
    if (measured && Math.abs(measured - rowPx) > 0.5) setRowPx(measured);
  });
  useEffect(() => {
    let frame = 0;
    const update = () => {
      frame = 0;
      const el = body.current;
      if (!el) return;
      const top = el.getBoundingClientRect().top; // of the first row, relative to the viewport
      const first = Math.max(0, Math.floor(-top / rowPx) - OVERSCAN);
      const last = Math.min(count, Math.ceil((innerHeight - top) / rowPx) + OVERSCAN);
      setRange((prev) => (prev[0] === first && prev[1] === last ? prev : [first, Math.max(first, last)]));
    };
    const schedule = () => {
      if (!frame) frame = requestAnimationFrame(update);
    };
    update();
    addEventListener("scroll", schedule, { passive: true });
    addEventListener("resize", schedule);
    return () => {
      removeEventListener("scroll", schedule);
      removeEventListener("resize", schedule);
      if (frame) cancelAnimationFrame(frame);
    };
  }, [count, rowPx]);
  return [Math.min(range[0], count), Math.min(range[1], count), rowPx];
}

/** Columns of the phones table (a group's header spans them all). */
const COLS = 10;

export function PhonesPage({ api, store, initialFilter }: { api: Api; store: Store; initialFilter: PhoneFilter }) {
  const [search, setSearch] = useState("");
  const [filter, setFilter] = useState<PhoneFilter>(initialFilter);
  const [collapsed, setCollapsed] = useState<ReadonlySet<string>>(new Set());
  const [error, setError] = useState<string | null>(null);
  const agents = useMemo(() => [...store.agents.values()].sort((a, b) => a.name.localeCompare(b.name)), [store.version]);
  const running = useRunningJobs(api, store);
  const counts = useMemo(() => filterCounts(store.devices.values(), store.maxTempC), [store.version]);
  const shown = useMemo(() => filterPhones(store.devices.values(), filter, search, store.maxTempC),
    [store.version, filter, search]);
  const { lines, groups } = useMemo(() => phoneLines(shown, store.devices.values(), collapsed, store.maxTempC),
    [shown, collapsed]);
  const body = useRef<HTMLTableSectionElement>(null);
  const [first, last, rowPx] = useWindow(lines.length, body);
  // offline phones' "last seen" ages move on their own (to the second; the page's clock stops while it is offline)
  useTicker(counts.offline > 0, 5000);
  const nowSec = Math.floor(clockNow() / 1000);
  const toggle = useCallback((agent: string) => setCollapsed((prev) => {
    const next = new Set(prev);
    if (next.has(agent)) next.delete(agent);
    else next.add(agent);
    return next;
  }), []);
  function choose(f: PhoneFilter) {
    setFilter(f);
    history.replaceState(null, "", f === "all" ? "#/phones" : `#/phones?show=${f}`); // a reload keeps it
  }

  return (
    <section aria-labelledby="phones-title">
      <div class="page-head">
        <h1 id="phones-title">Phones</h1>
        <p class="big-count"><span data-testid="connected-count">{store.connectedPhones}</span> connected of{" "}
          {store.devices.size}
          {counts.attention > 0 && (
            <a href="#/phones?show=attention" class="attention-link" data-testid="attention-count"
              onClick={(e) => { e.preventDefault(); choose("attention"); }}>
              {counts.attention} need{counts.attention === 1 ? "s" : ""} attention</a>
          )}
        </p>
      </div>
      <h2>Agents</h2>
      {agents.length === 0 ? <p class="empty">No agent has registered yet.</p> : (
        <ul class="agents" data-testid="agents">
          {agents.map((a) => <AgentCard key={a.id} agent={a} team={teamName(store.teams, agentTeamId(a))} />)}
        </ul>
      )}
      <h2>Phones</h2>
      <div class="toolbar" role="search">
        <label>Show{" "}
          <select value={filter} data-testid="phone-filter"
            onChange={(e) => choose((e.target as HTMLSelectElement).value as PhoneFilter)}>
            {PHONE_FILTERS.map((f) => <option key={f.id} value={f.id}>{f.label} ({counts[f.id]})</option>)}
          </select>
        </label>
        <label>Search <input type="search" placeholder="serial, model, reason, tag…" value={search}
          onInput={(e) => setSearch((e.target as HTMLInputElement).value)} /></label>
        <span class="muted" data-testid="phones-shown">
          {shown.length === store.devices.size ? `${shown.length} phones` : `${shown.length} of ${store.devices.size} match`}
        </span>
        <span class="toolbar-end">
          <button type="button" class="ghost small" disabled={collapsed.size === 0}
            onClick={() => setCollapsed(new Set())}>Expand all</button>
          <button type="button" class="ghost small" disabled={groups.every((g) => collapsed.has(g.agent))}
            onClick={() => setCollapsed(new Set(groups.map((g) => g.agent)))}>Collapse all</button>
        </span>
      </div>
      {error && <p class="field-error" role="alert">{error}</p>}
      {shown.length === 0 && store.devices.size > 0 && <p class="empty">No phone matches.</p>}
      <div class="table-wrap">
        <table class="phones" data-testid="phones" aria-rowcount={lines.length + 1}>
          <thead>
            <tr>
              <th scope="col">Serial</th><th scope="col">State</th><th scope="col">Why</th>
              <th scope="col">Battery</th><th scope="col">Temp</th><th scope="col">Last seen</th><th scope="col">Model</th>
              <th scope="col">Android</th><th scope="col">Job</th><th scope="col"><span class="sr-only">Actions</span></th>
            </tr>
          </thead>
          <tbody ref={body}>
            {first > 0 && <Spacer px={first * rowPx} />}
            {lines.slice(first, last).map((line, i) => line.kind === "group" ? (
              <GroupRow key={`g:${line.group.agent}`} group={line.group} collapsed={line.collapsed}
                index={first + i + 2} onToggle={toggle} />
            ) : (
              <PhoneRow key={line.device.id} device={line.device} index={first + i + 2}
                job={running.get(line.device.id) ?? null} hot={isHot(line.device, store.maxTempC)} api={api}
                store={store} onError={setError} nowSec={line.device.state === "offline" ? nowSec : 0} />
            ))}
            {last < lines.length && <Spacer px={(lines.length - last) * rowPx} />}
          </tbody>
        </table>
      </div>
    </section>
  );
}

function Spacer({ px }: { px: number }) {
  return <tr aria-hidden="true" class="spacer"><td colSpan={COLS} style={{ height: `${px}px` }} /></tr>;
}

/** An agent's header row: collapses its phones; says how many it has, by state, and how many need a look. */
const GroupRow = memo(function GroupRow({ group: g, collapsed, index, onToggle }:
  { group: PhoneGroup; collapsed: boolean; index: number; onToggle: (agent: string) => void }) {
  return (
    <tr class="group line" data-testid="phone-group" data-agent={g.agent} aria-rowindex={index}>
      <th scope="rowgroup" colSpan={COLS}>
        <button type="button" class="ghost small expander" aria-expanded={!collapsed} onClick={() => onToggle(g.agent)}
          data-testid="group-toggle">
          <span aria-hidden="true">{collapsed ? "▸" : "▾"}</span> {g.agent}
        </button>
        <span class="muted group-counts" data-testid="group-counts">{groupCountsText(g)}</span>
        {g.attention > 0 && <span class="needs-look" data-testid="group-attention">
          {g.attention} need{g.attention === 1 ? "s" : ""} attention</span>}
      </th>
    </tr>
  );
});

/**
 * Which job each phone runs: not part of the device payload, so read from the running assignments,
 * again (at most every 2 s) whenever the store changes, never on a timer of its own.
 */
function useRunningJobs(api: Api, store: Store): Map<number, string> {
  const [byDevice, setByDevice] = useState<Map<number, number>>(new Map());
  const last = useRef(0);
  useEffect(() => {
    let cancelled = false;
    const wait = Math.max(0, last.current + 2000 - Date.now());
    const t = setTimeout(async () => {
      last.current = Date.now();
      try {
        const list = await api.runningAssignments();
        if (!cancelled) setByDevice(new Map(list.items.map((a) => [a.device_id, a.job_id])));
      } catch {
        /* the link banner tells */
      }
    }, wait);
    return () => {
      cancelled = true;
      clearTimeout(t);
    };
  }, [store.version]);
  return useMemo(() => {
    const out = new Map<number, string>();
    for (const [device, job] of byDevice) out.set(device, store.jobs.get(job)?.title ?? `job ${job}`);
    return out;
  }, [byDevice, store.version]);
}

/** An agent: its link, its phones and, when the server says it, its team. */
const AgentCard = memo(function AgentCard({ agent, team }: { agent: Agent; team: string }) {
  return (
    <li class={`agent ${agent.connected ? "" : "agent-off"}`} data-testid="agent" data-agent={agent.name}>
      <strong>{agent.name}</strong>
      <span class={`badge badge-${agent.paused ? "paused" : agent.connected ? "idle" : "offline"}`}>
        {agent.paused ? "paused" : agent.connected ? "connected" : "offline"}
      </span>
      {agent.paused && <span class="muted" data-testid="agent-paused-by">paused at PC {agent.name} by operator</span>}
      <span class="muted">{agent.device_count} phones · {agent.hostname ?? "?"} · v{agent.version ?? "?"}</span>
      {team && <span class="muted agent-team" data-testid="agent-team">team {team}</span>}
    </li>
  );
});

interface PhoneRowProps {
  device: Device;
  /** aria-rowindex: the header is row 1. */
  index: number;
  job: string | null;
  hot: boolean;
  /** The page's clock in whole seconds, for an offline phone's "last seen" (0 for a connected one: no re-render). */
  nowSec: number;
  api: Api;
  store: Store;
  onError: (e: string | null) => void;
}

const PhoneRow = memo(function PhoneRow({ device: d, index, job, hot, api, store, onError, nowSec }: PhoneRowProps) {
  const [busy, setBusy] = useState(false);
  const paused = d.state === "paused";
  const why = whyText(d);
  const battery = batteryReading(d);
  const temp = temperatureReading(d);
  const attention = hot || ATTENTION_STATES.has(d.state);
  async function toggle() {
    setBusy(true);
    onError(null);
    try {
      store.putDevice(await api.patchDevice(d.id, !paused));
    } catch (e) {
      onError(`${d.serial}: ${(e as ApiError).message}`);
    } finally {
      setBusy(false);
    }
  }
  return (
    <tr data-testid="phone" aria-rowindex={index} data-serial={d.serial} data-state={d.state}
      class={attention ? "line attention" : "line"}>
      <td><a class="mono" href={`#/phones/${d.id}`} data-testid="phone-link">{d.serial}</a></td>
      <td>
        <span class={`badge badge-${d.state}`} data-testid="phone-state">{d.state}</span>
        {d.paused_by && <span class="muted" data-testid="phone-paused-by">
          {` ${phonePauseText(d) ?? ""}`}</span>}
      </td>
      <td class="why"><span title={why ?? undefined} data-testid="phone-why">{why ?? ""}</span></td>
      <td><span title={battery.title} data-testid="phone-battery">{battery.text}</span></td>
      <td>
        <span title={temp.title} data-testid="phone-temp">{temp.text}</span>
        {hot && <span class="badge badge-hot" data-testid="phone-hot">hot</span>}
      </td>
      <td class="muted" data-testid="phone-last-seen"
        title={d.last_seen_at ? new Date(d.last_seen_at).toLocaleString() : undefined}>
        {lastSeenText(d, nowSec ? nowSec * 1000 : clockNow())}</td>
      <td>{d.model ?? "–"}</td>
      <td>{d.android_version ?? "–"}</td>
      <td>{job ?? (d.state === "busy" ? "busy" : "–")}</td>
      <td>
        {d.state !== "offline" && api.can("operator") && (
          <button type="button" class={paused ? "small" : "small ghost"} disabled={busy} onClick={toggle}
            data-testid="phone-toggle"
            aria-label={`${paused ? "Resume" : "Pause"} ${d.serial}`}>
            {paused ? "Resume" : "Pause"}
          </button>
        )}
      </td>
    </tr>
  );
});
