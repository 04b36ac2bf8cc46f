import { memo } from "preact/compat";
import { useEffect, useLayoutEffect, useMemo, useRef, useState } from "preact/hooks";
import { type Api, ApiError } from "../api";
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

export function PhonesPage({ api, store }: { api: Api; store: Store }) {
  const [search, setSearch] = useState("");
  const [error, setError] = useState<string | null>(null);
  const agents = useMemo(() => [...store.agents.values()].sort((a, b) => a.name.localeCompare(b.name)), [store.version]);
  const running = useRunningJobs(api, store);
  const phones = useMemo(() => {
    const q = search.trim().toLowerCase();
    return [...store.devices.values()]
      .filter((d) => !q || [d.serial, d.model, d.android_version, d.agent_name, d.state, ...d.tags]
        .some((v) => (v ?? "").toLowerCase().includes(q)))
      .sort((a, b) => (a.agent_name ?? "").localeCompare(b.agent_name ?? "") || a.serial.localeCompare(b.serial));
  }, [store.version, search]);
  const body = useRef<HTMLTableSectionElement>(null);
  const [first, last, rowPx] = useWindow(phones.length, body);

  return (
    <section aria-labelledby="phones-title">
      <div class="page-head">
        <h1 id="phones-title">Phones</h1>
        <p class="big-count"><span data-testid="connected-count">{store.connectedPhones}</span> connected of{" "}
          {store.devices.size}</p>
      </div>
      <h2>Agents</h2>
      {agents.length === 0 ? <p class="empty">No agent has registered yet.</p> : (
        <ul class="agents" data-testid="agents">
          {agents.map((a) => <AgentCard key={a.id} agent={a} />)}
        </ul>
      )}
      <h2>Phones</h2>
      <div class="toolbar" role="search">
        <label>Search <input type="search" placeholder="serial, model, state, tag…" value={search}
          onInput={(e) => setSearch((e.target as HTMLInputElement).value)} /></label>
        <span class="muted" data-testid="phones-shown">
          {phones.length === store.devices.size ? `${phones.length} phones` : `${phones.length} of ${store.devices.size} match`}
        </span>
      </div>
      {error && <p class="field-error" role="alert">{error}</p>}
      <div class="table-wrap">
        <table class="phones" data-testid="phones" aria-rowcount={phones.length + 1}>
          <thead>
            <tr>
              <th scope="col">Serial</th><th scope="col">Agent</th><th scope="col">State</th>
              <th scope="col">Battery</th><th scope="col">Model</th><th scope="col">Android</th>
              <th scope="col">Job</th><th scope="col"><span class="sr-only">Actions</span></th>
            </tr>
          </thead>
          <tbody ref={body}>
            {first > 0 && <Spacer px={first * rowPx} />}
            {phones.slice(first, last).map((d, i) => (
              <PhoneRow key={d.id} device={d} index={first + i + 2} job={running.get(d.id) ?? null} api={api}
                store={store} onError={setError} />
            ))}
            {last < phones.length && <Spacer px={(phones.length - last) * rowPx} />}
          </tbody>
        </table>
      </div>
    </section>
  );
}

function Spacer({ px }: { px: number }) {
  return <tr aria-hidden="true" class="spacer"><td colSpan={8} style={{ height: `${px}px` }} /></tr>;
}

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

const AgentCard = memo(function AgentCard({ agent }: { agent: Agent }) {
  return (
    <li class={`agent ${agent.connected ? "" : "agent-off"}`} data-testid="agent" data-agent={agent.name}>
      <strong>{agent.name}</strong>
      <span class={`badge badge-${agent.paused ? "paused" : agent.connected ? "idle" : "offline"}`}>
        {agent.paused ? "paused" : agent.connected ? "connected" : "offline"}
      </span>
      <span class="muted">{agent.device_count} phones · {agent.hostname ?? "?"} · v{agent.version ?? "?"}</span>
    </li>
  );
});

interface PhoneRowProps {
  device: Device;
  /** aria-rowindex: the header is row 1. */
  index: number;
  job: string | null;
  api: Api;
  store: Store;
  onError: (e: string | null) => void;
}

const PhoneRow = memo(function PhoneRow({ device: d, index, job, api, store, onError }: PhoneRowProps) {
  const [busy, setBusy] = useState(false);
  const paused = d.state === "paused";
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
    <tr data-testid="phone" aria-rowindex={index} data-serial={d.serial} data-state={d.state}>
      <td class="mono">{d.serial}</td>
      <td>{d.agent_name ?? d.agent_id}</td>
      <td>
        <span class={`badge badge-${d.state}`} data-testid="phone-state">{d.state}</span>
        {d.paused_by && <span class="muted"> by {d.paused_by}</span>}
      </td>
      <td>{d.battery === null ? "–" : `${d.battery}%`}</td>
      <td>{d.model ?? "–"}</td>
      <td>{d.android_version ?? "–"}</td>
      <td>{job ?? (d.state === "busy" ? "busy" : "–")}</td>
      <td>
        {d.state !== "offline" && (
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
