import { useEffect, useState } from "preact/hooks";
import type { Api, ApiError } from "../api";
import {
  ACTOR_KINDS, NO_FILTERS, OBJECT_KINDS, actorText, appendOlder, auditQuery, changeRows, objectText,
  type AuditFilters,
} from "../audit";
import { agoText } from "../logic";
import type { AuditEvent } from "../types";

const PAGE = 50;

/**
 * The audit trail: every change by a person, token, agent or the CLI, newest first, a page at a time ("Older"),
 * filtered on the server. It is read-only here as everywhere: nothing edits or deletes it.
 */
export function AuditPage({ api }: { api: Api }) {
  const [draft, setDraft] = useState<AuditFilters>(NO_FILTERS);
  const [applied, setApplied] = useState<AuditFilters>(NO_FILTERS);
  const [events, setEvents] = useState<AuditEvent[] | null>(null);
  const [nextBefore, setNextBefore] = useState<number | null>(null);
  const [loadingOlder, setLoadingOlder] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [reload, setReload] = useState(0);

  useEffect(() => {
    let cancelled = false;
    setEvents(null);
    api.audit(auditQuery(applied, null, PAGE)).then((page) => {
      if (cancelled) return;
      setEvents(page.items);
      setNextBefore(page.next_before);
      setError(null);
    }, (e: ApiError) => {
      if (cancelled) return;
      setEvents([]);
      setError(`Cannot load the audit trail: ${e.message}`);
    });
    return () => {
      cancelled = true;
    };
  }, [applied, reload]);

  async function older() {
    if (nextBefore === null) return;
    setLoadingOlder(true);
    try {
      const page = await api.audit(auditQuery(applied, nextBefore, PAGE));
      setEvents((prev) => appendOlder(prev ?? [], page.items));
      setNextBefore(page.next_before);
      setError(null);
    } catch (e) {
      setError(`Cannot load older entries: ${(e as ApiError).message}`);
    } finally {
      setLoadingOlder(false);
    }
  }

  const field = (key: keyof AuditFilters) => ({
    value: draft[key],
    onInput: (e: Event) => setDraft({ ...draft, [key]: (e.target as HTMLInputElement).value }),
  });

  return (
    <section aria-labelledby="audit-title">
      <div class="page-head">
        <h1 id="audit-title">Audit</h1>
        <button type="button" class="ghost" onClick={() => setReload((n) => n + 1)} data-testid="audit-refresh">
          Refresh</button>
      </div>
      <form class="audit-filters" data-testid="audit-filters" onSubmit={(e) => {
        e.preventDefault();
        setApplied(draft);
      }}>
        <label>Actor <input name="actor" placeholder="name" {...field("actor")} /></label>
        <label>Kind
          <select name="actor_kind" {...field("actor_kind")}>
            <option value="">any</option>
            {ACTOR_KINDS.map((k) => <option key={k} value={k}>{k}</option>)}
          </select>
        </label>
        <label>Object
          <select name="object_kind" {...field("object_kind")}>
            <option value="">any</option>
            {OBJECT_KINDS.map((k) => <option key={k} value={k}>{k.replace(/_/g, " ")}</option>)}
          </select>
        </label>
        <label>Id <input name="object_id" size={6} {...field("object_id")} /></label>
        <label>Action <input name="action" placeholder="job.pause" {...field("action")} /></label>
        <label>Since <input name="since" type="datetime-local" {...field("since")} /></label>
        <label>Until <input name="until" type="datetime-local" {...field("until")} /></label>
        <button type="submit" data-testid="audit-apply">Filter</button>
        <button type="button" class="ghost" onClick={() => {
          setDraft(NO_FILTERS);
          setApplied(NO_FILTERS);
        }}>Clear</button>
      </form>
      {error && <p class="field-error" role="alert">{error}</p>}
      {events === null ? <p class="muted">Loading…</p> : events.length === 0 ? (
        <p class="empty">No changes recorded{applied === NO_FILTERS ? " yet" : " match these filters"}.</p>
      ) : (
        <div class="table-wrap">
          <table class="audit" data-testid="audit">
            <thead>
              <tr>
                <th scope="col">When</th><th scope="col">Who</th><th scope="col">Action</th>
                <th scope="col">Object</th><th scope="col">Change</th>
              </tr>
            </thead>
            <tbody>
              {events.map((e) => <Row key={e.id} event={e} />)}
            </tbody>
          </table>
        </div>
      )}
      {nextBefore !== null && (
        <button type="button" class="ghost" disabled={loadingOlder} onClick={older} data-testid="audit-older">
          {loadingOlder ? "Loading…" : "Older"}
        </button>
      )}
    </section>
  );
}

function Row({ event: e }: { event: AuditEvent }) {
  const rows = changeRows(e);
  return (
    <tr data-testid="audit-row" data-action={e.action} data-id={e.id}>
      <td>
        <time dateTime={e.at} title={new Date(e.at).toLocaleString()}>
          {new Date(e.at).toLocaleTimeString()}</time>
        <div class="muted">{agoText(e.at)}</div>
      </td>
      <td>
        {actorText(e.actor)}
        {(e.via !== "system" || e.address) && (
          <div class="muted">{e.via}{e.address ? ` from ${e.address}` : ""}</div>
        )}
      </td>
      <td><code>{e.action}</code></td>
      <td>{objectText(e)}</td>
      <td>
        {rows.length === 0 ? <span class="muted">–</span> : (
          <ul class="audit-diff">
            {rows.map((r) => (
              <li key={r.field} data-testid="audit-change">
                <span class="audit-field">{r.field}</span>{" "}
                {r.side === "made" ? <ins title="as made">{r.after}</ins>
                  : r.side === "removed" ? <del title="as it was">{r.before}</del>
                  : <><del title="before">{r.before}</del> → <ins title="after">{r.after}</ins></>}
              </li>
            ))}
          </ul>
        )}
      </td>
    </tr>
  );
}
