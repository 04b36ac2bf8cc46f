import { useEffect, useRef, useState } from "preact/hooks";
import type { Api, ApiError } from "../api";
import { eventTitle, eventTone, mergeEvents } from "../fleetHealth";
import { agoText } from "../logic";
import type { Store } from "../store";
import type { Device, DeviceEvent } from "../types";

const PAGE = 25;
/** The newest page is read again at most this often while the phone's row changes. */
const HEAD_MS = 1000;

/**
 * A phone's timeline, newest first, a page at a time ("Older"). Entries arrive live as device:event; the newest
 * page is also read again when the phone's row changes, for entries a server records without pushing them.
 */
export function PhoneTimeline({ api, store, deviceId, row }:
  { api: Api; store: Store; deviceId: number; row: Device | undefined }) {
  const [events, setEvents] = useState<DeviceEvent[] | null>(null);
  const [nextBefore, setNextBefore] = useState<number | null>(null);
  const [loadingOlder, setLoadingOlder] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const last = useRef(0);

  useEffect(() => store.onDeviceEvent((e) => {
    if (e.device_id === deviceId) setEvents((prev) => mergeEvents([e], prev ?? []));
  }), [deviceId]);

  useEffect(() => {
    let cancelled = false;
    const first = events === null;
    const t = setTimeout(async () => {
      last.current = Date.now();
      try {
        const page = await api.deviceEvents(deviceId, null, PAGE);
        if (cancelled) return;
        setEvents((prev) => mergeEvents(page.items, prev ?? []));
        if (first) setNextBefore(page.next_before);
        setError(null);
      } catch (e) {
        if (!cancelled) setError(`Cannot load the timeline: ${(e as ApiError).message}`);
      }
    }, first ? 0 : Math.max(0, last.current + HEAD_MS - Date.now()));
    return () => {
      cancelled = true;
      clearTimeout(t);
    };
  }, [deviceId, row]);

  async function older() {
    if (nextBefore === null) return;
    setLoadingOlder(true);
    try {
      const page = await api.deviceEvents(deviceId, nextBefore, PAGE);
      setEvents((prev) => mergeEvents(prev ?? [], page.items));
      setNextBefore(page.next_before);
      setError(null);
    } catch (e) {
      setError(`Cannot load older entries: ${(e as ApiError).message}`);
    } finally {
      setLoadingOlder(false);
    }
  }

  return (
    <div data-testid="timeline">
      {error && <p class="field-error" role="alert">{error}</p>}
      {events === null ? <p class="muted">Loading…</p> : events.length === 0 ? (
        <p class="muted">Nothing has happened to this phone yet.</p>
      ) : (
        <ol class="timeline" aria-label="Timeline, newest first">
          {events.map((e) => <Entry key={e.id} event={e} />)}
        </ol>
      )}
      {nextBefore !== null && (
        <button type="button" class="ghost" disabled={loadingOlder} onClick={older} data-testid="older">
          {loadingOlder ? "Loading…" : "Older"}
        </button>
      )}
    </div>
  );
}

function Entry({ event: e }: { event: DeviceEvent }) {
  const failed = e.kind === "selftest" && Array.isArray(e.data.checks)
    ? (e.data.checks as { name?: unknown; passed?: unknown; detail?: unknown }[]).filter((c) => c.passed === false)
    : [];
  return (
    <li class={`event tone-${eventTone(e)}`} data-testid="event" data-kind={e.kind}>
      <time dateTime={e.created_at} title={new Date(e.created_at).toLocaleString()}>
        {new Date(e.created_at).toLocaleTimeString()} <span class="muted">({agoText(e.created_at)})</span>
      </time>
      <span class="event-title">{eventTitle(e)}</span>
      <span class="muted">by {e.actor}</span>
      {e.reason && <span class="event-reason" data-testid="event-reason">{e.reason}</span>}
      {failed.length > 0 && (
        <ul class="event-checks">
          {failed.map((c, i) => <li key={i}>{String(c.name)} failed{c.detail ? `: ${String(c.detail)}` : ""}</li>)}
        </ul>
      )}
    </li>
  );
}
