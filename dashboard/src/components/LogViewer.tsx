import { useEffect, useState } from "preact/hooks";
import type { Api, ApiError } from "../api";
import type { LogcatAnswer, LogLevel } from "../generated/protocol";
import {
  DEFAULT_FILTER, LEVEL_NAMES, LOG_LEVELS, type LogFilter, artifactPath, highlight, logcatArtifact, logcatQuery,
  matchText,
} from "../runEvidence";
import { Dialog } from "./Dialog";

/** Typing settles this long before the server is asked again. */
const DEBOUNCE_MS = 250;

/** A run's logcat, filtered on the server by level (and above), tag and text; the raw capture downloads. */
export function LogViewer({ api, assignmentId, title, onClose }:
  { api: Api; assignmentId: number; title: string; onClose: () => void }) {
  const [filter, setFilter] = useState<LogFilter>(DEFAULT_FILTER);
  const [answer, setAnswer] = useState<LogcatAnswer | null>(null);
  const [missing, setMissing] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [loading, setLoading] = useState(true);
  const titleId = `logcat-title-${assignmentId}`;

  useEffect(() => {
    let cancelled = false;
    setLoading(true);
    const t = setTimeout(async () => {
      try {
        const got = await api.logcat(assignmentId, logcatQuery(filter));
        if (cancelled) return;
        setAnswer(got);
        setError(null);
        setMissing(false);
      } catch (e) {
        if (cancelled) return;
        const err = e as ApiError;
        if (err.status === 404) setMissing(true);
        else setError(err.details[0]?.field ? `${err.details[0].field}: ${err.details[0].message}` : err.message);
      } finally {
        if (!cancelled) setLoading(false);
      }
    }, answer === null ? 0 : DEBOUNCE_MS);
    return () => {
      cancelled = true;
      clearTimeout(t);
    };
  }, [assignmentId, filter]);

  async function download(e: Event) {
    e.preventDefault(); // the route needs the token: fetched, then saved from a blob
    try {
      const name = answer?.artifact ?? logcatArtifact(assignmentId);
      const url = await api.artifactUrl(assignmentId, name);
      const a = document.createElement("a");
      a.href = url;
      a.download = name;
      a.click();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (err) {
      setError((err as ApiError).message);
    }
  }

  const set = (patch: Partial<LogFilter>) => setFilter((f) => ({ ...f, ...patch }));
  return (
    <Dialog titleId={titleId} testId="log-viewer" onClose={onClose}>
      <div class="dialog-wide">
        <h2 id={titleId}>Logcat · {title}</h2>
        <div class="toolbar log-toolbar">
          <label>Level
            <select value={filter.level} data-testid="log-level"
              onChange={(e) => set({ level: (e.target as HTMLSelectElement).value as LogLevel | "" })}>
              <option value="">All</option>
              {LOG_LEVELS.map((l) => <option key={l} value={l}>{LEVEL_NAMES[l]} and above</option>)}
            </select>
          </label>
          <label>Tag
            <input type="text" value={filter.tag} placeholder="exact tag" size={14} data-testid="log-tag"
              onInput={(e) => set({ tag: (e.target as HTMLInputElement).value })} />
          </label>
          <label>Search
            <input type="search" value={filter.q} placeholder="text in the line" data-testid="log-search"
              onInput={(e) => set({ q: (e.target as HTMLInputElement).value })} />
          </label>
          <a href={artifactPath(assignmentId, answer?.artifact ?? logcatArtifact(assignmentId))} onClick={download}
            data-testid="log-download" download>Download</a>
        </div>
        {error && <p class="field-error" role="alert">{error}</p>}
        {missing ? (
          <p class="muted" data-testid="log-missing">No logcat was kept for this run (yet): it arrives after the run ends.</p>
        ) : answer && (
          <>
            <p class="muted" role="status" data-testid="log-count" aria-busy={loading}>
              {matchText(answer.lines.length, answer.matched, answer.total)}
              {answer.capture_truncated && " · the capture kept only the run's last 2 MiB"}
            </p>
            <div class="log-lines" tabIndex={0} aria-label="Log lines">
              <table class="mono">
                <tbody>
                  {answer.lines.map((l, i) => (
                    <tr key={i} class={`log-${l.level}`} data-testid="log-line" data-level={l.level} data-tag={l.tag}>
                      <td class="log-at">{l.at}</td>
                      <td class="log-pid">{l.pid}</td>
                      <td class="log-level" title={LEVEL_NAMES[l.level]}>{l.level}</td>
                      <td class="log-tag">{l.tag}</td>
                      <td class="log-message">{highlight(l.message, filter.q).map((part, j) =>
                        j % 2 ? <mark key={j}>{part}</mark> : part)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          </>
        )}
        <div class="dialog-actions">
          <button type="button" onClick={onClose}>Close</button>
        </div>
      </div>
    </Dialog>
  );
}
