import { memo } from "preact/compat";
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import type { Api } from "../api";
import { filterCounts, filterPhones, PHONE_FILTERS, type PhoneFilter, whyText } from "../fleetHealth";
import { ageText, hasScreen, type Thumb, THUMB_WIDTH, ThumbScheduler, tileOrder } from "../grid";
import type { Store } from "../store";
import type { Device } from "../types";

/** Every phone as a tile: its state as a colour, a recent picture of its screen, one click to its page. */
export function FleetGrid({ api, store }: { api: Api; store: Store }) {
  const [filter, setFilter] = useState<PhoneFilter>("all");
  const [search, setSearch] = useState("");
  const [, setDrawn] = useState(0);
  const counts = useMemo(() => filterCounts(store.devices.values(), store.maxTempC), [store.version]);
  const tiles = useMemo(() => tileOrder(filterPhones(store.devices.values(), filter, search, store.maxTempC)),
    [store.version, filter, search]);
  const scheduler = useMemo(() => {
    let frame = 0;
    return new ThumbScheduler((id) => api.screenThumb(id, THUMB_WIDTH), () => {
      if (!frame) frame = requestAnimationFrame(() => { frame = 0; setDrawn((n) => n + 1); });
    });
  }, [api]);
  const onScreen = useRef(new Set<number>());
  const grid = useRef<HTMLUListElement>(null);

  useEffect(() => {
    const tick = setInterval(() => void scheduler.pump(), 1000);
    return () => {
      clearInterval(tick);
      scheduler.stop();
    };
  }, [scheduler]);

  useEffect(() => { // which tiles are on screen: only those are ever fetched
    const el = grid.current;
    if (!el) return;
    const observer = new IntersectionObserver((entries) => {
      for (const entry of entries) {
        const id = Number((entry.target as HTMLElement).dataset.id);
        if (entry.isIntersecting) onScreen.current.add(id);
        else onScreen.current.delete(id);
        const device = store.devices.get(id);
        scheduler.show(id, entry.isIntersecting && device ? hasScreen(device.state) : null);
      }
      void scheduler.pump();
    }, { rootMargin: "100px" });
    el.querySelectorAll<HTMLElement>("li[data-id]").forEach((li) => observer.observe(li));
    return () => {
      observer.disconnect();
      for (const id of onScreen.current) scheduler.show(id, null);
      onScreen.current.clear();
    };
  }, [scheduler, tiles]);

  useEffect(() => { // a phone that goes offline (or comes back) changes whether its tile is fetched
    for (const id of onScreen.current) {
      const device = store.devices.get(id);
      scheduler.show(id, device ? hasScreen(device.state) : null);
    }
  }, [store.version, scheduler]);

  return (
    <section aria-labelledby="grid-title">
      <div class="page-head">
        <h1 id="grid-title">Fleet grid</h1>
        <p class="muted">Screens refresh every 30 s while their tile is on screen. Open a phone for its live screen.</p>
      </div>
      <div class="toolbar" role="search">
        <label>Show{" "}
          <select value={filter} data-testid="grid-filter"
            onChange={(e) => setFilter((e.target as HTMLSelectElement).value as PhoneFilter)}>
            {PHONE_FILTERS.map((f) => <option key={f.id} value={f.id}>{f.label} ({counts[f.id]})</option>)}
          </select>
        </label>
        <label>Search <input type="search" placeholder="serial, model, reason, tag…" value={search}
          onInput={(e) => setSearch((e.target as HTMLInputElement).value)} /></label>
        <span class="muted" data-testid="tiles-shown">{tiles.length} of {store.devices.size} phones</span>
      </div>
      {store.devices.size === 0 && <p class="empty">No phone has connected yet.</p>}
      {tiles.length === 0 && store.devices.size > 0 && <p class="empty">No phone matches.</p>}
      <ul class="grid" ref={grid} data-testid="fleet-grid">
        {tiles.map((d) => <Tile key={d.id} device={d} thumb={scheduler.thumbs.get(d.id) ?? null} />)}
      </ul>
    </section>
  );
}

const Tile = memo(function Tile({ device: d, thumb }: { device: Device; thumb: Thumb | null }) {
  const why = whyText(d);
  const screen = hasScreen(d.state);
  return (
    <li class={`tile tile-${d.state}`} data-id={d.id} data-testid="tile" data-serial={d.serial} data-state={d.state}>
      <a href={`#/phones/${d.id}`} aria-label={`${d.serial}, ${d.state}${why ? `: ${why}` : ""}`}>
        <div class="tile-screen">
          {screen && thumb?.url
            ? <img src={thumb.url} alt={`screen of ${d.serial}`} data-testid="tile-screen" />
            : <span class="tile-blank" data-testid="tile-blank">
              {!screen ? "offline" : thumb?.error ? `no picture: ${thumb.error}` : "…"}</span>}
        </div>
        <div class="tile-label">
          <span class="mono tile-serial" title={d.serial}>{d.serial}</span>
          <span class={`badge badge-${d.state}`}>{d.state}</span>
        </div>
        {why && <div class="tile-why" title={why}>{why}</div>}
        {screen && thumb?.url && <div class="tile-age muted">{thumb.error ? `stale: ${thumb.error}` : ageText(thumb.at, Date.now())}</div>}
      </a>
    </li>
  );
});
