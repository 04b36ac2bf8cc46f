import { useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";
import type { Api } from "../api";
import {
  anyUploading, byStep, bytesText, caption, isPicture, mergePages, pendingText, positionText, statusText, step,
  stepText, viewable, viewerKey,
} from "../gallery";
import type { Artifact, Assignment } from "../types";
import { Dialog } from "./Dialog";

/** How often a run still sending files is listed again. */
const UPLOADING_POLL_MS = 2000;
const PHONE_PAGE = 24;

/** An artifact's bytes as an object URL (the route needs the token, so no plain <img src>); revoked on unmount. */
function useBlobUrl(api: Api, a: Artifact | null): string | null {
  const [url, setUrl] = useState<string | null>(null);
  useEffect(() => {
    setUrl(null);
    if (!a || !viewable(a)) return;
    let cancelled = false;
    let made: string | null = null;
    api.artifactUrl(a.assignment_id, a.name).then((u) => {
      made = u;
      if (cancelled) URL.revokeObjectURL(u);
      else setUrl(u);
    }).catch(() => { /* gone meanwhile: the tile says what it is */ });
    return () => {
      cancelled = true;
      if (made) URL.revokeObjectURL(made);
    };
  }, [a?.assignment_id, a?.name, a?.status]);
  return url;
}

/** A run's files in the job detail's phone table: its screenshots as a gallery, its other files listed. */
export function RunArtifacts({ api, assignment }: { api: Api; assignment: Assignment }) {
  const [items, setItems] = useState<Artifact[] | null>(null);
  const [tick, setTick] = useState(0);
  const started = assignment.finished_at !== null || assignment.status === "running";
  useEffect(() => {
    if (!started) return;
    let cancelled = false;
    api.artifacts(assignment.id).then((list) => !cancelled && setItems(byStep(list))).catch(() => { /* later */ });
    return () => {
      cancelled = true;
    };
  }, [assignment.id, assignment.finished_at, assignment.artifacts_pending, tick]);
  const uploading = (items !== null && anyUploading(items)) || (assignment.artifacts_pending ?? 0) > 0;
  useEffect(() => {
    if (!uploading) return;
    const t = setTimeout(() => setTick((n) => n + 1), UPLOADING_POLL_MS);
    return () => clearTimeout(t);
  }, [uploading, tick]);
  if (!items?.length) {
    const pending = pendingText(assignment.artifacts_pending);
    return pending ? <span class="muted" data-testid="artifacts-pending">{pending}</span> : <span class="muted">–</span>;
  }
  const label = `run #${assignment.id} on ${assignment.serial ?? `phone ${assignment.device_id}`}`;
  return <Gallery api={api} items={items} label={label} testId={`run-gallery-${assignment.id}`} />;
}

/** A phone's screenshots over all its runs, newest first, a page at a time. */
export function PhoneGallery({ api, deviceId }: { api: Api; deviceId: number }) {
  const [items, setItems] = useState<Artifact[] | null>(null);
  const [before, setBefore] = useState<number | null>(null);
  const [error, setError] = useState<string | null>(null);

  async function load(from: number | null, loaded: Artifact[]) {
    try {
      const page = await api.deviceArtifacts(deviceId, { kind: "screenshot", before: from, limit: PHONE_PAGE });
      setItems(mergePages(loaded, page));
      setBefore(page.next_before ?? null);
      setError(null);
    } catch (e) {
      setError(`Cannot load screenshots: ${(e as Error).message}`);
    }
  }

  useEffect(() => {
    setItems(null);
    void load(null, []);
  }, [deviceId]);

  if (error) return <p class="field-error" role="alert">{error}</p>;
  if (items === null) return <p class="muted">Loading…</p>;
  if (!items.length) return <p class="muted" data-testid="phone-gallery-empty">No screenshots yet.</p>;
  return (
    <div data-testid="phone-gallery">
      <Gallery api={api} items={items} label="this phone" testId="phone-gallery-items" showRun />
      {before !== null && (
        <button type="button" class="ghost" data-testid="gallery-older" onClick={() => load(before, items)}>
          Older screenshots
        </button>
      )}
    </div>
  );
}

/** Thumbnails (uploading and deleted ones say so) that open the full-size view; files other than pictures listed. */
export function Gallery({ api, items, label, testId, showRun = false }:
  { api: Api; items: Artifact[]; label: string; testId: string; showRun?: boolean }) {
  const [open, setOpen] = useState<number | null>(null);
  const pictures = items.filter(viewable);
  const files = items.filter((a) => !isPicture(a));
  return (
    <div class="gallery" data-testid={testId}>
      <ul class="thumbs">
        {items.filter(isPicture).map((a) => (
          <li key={`${a.assignment_id}/${a.name}`}>
            <Thumb api={api} artifact={a} label={label} showRun={showRun}
              onOpen={viewable(a) ? () => setOpen(pictures.indexOf(a)) : undefined} />
          </li>
        ))}
      </ul>
      {files.length > 0 && (
        <ul class="files">
          {files.map((a) => <li key={a.name}><FileLine api={api} artifact={a} /></li>)}
        </ul>
      )}
      {open !== null && pictures.length > 0 && (
        <Viewer api={api} pictures={pictures} index={open} label={label} onIndex={setOpen} onClose={() => setOpen(null)} />
      )}
    </div>
  );
}

function Thumb({ api, artifact: a, label, showRun, onOpen }:
  { api: Api; artifact: Artifact; label: string; showRun: boolean; onOpen?: () => void }) {
  const url = useBlobUrl(api, a);
  const status = statusText(a);
  const sub = [showRun ? `run #${a.assignment_id}` : "", stepText(a)].filter(Boolean).join(" · ");
  if (status) {
    return (
      <div class={`thumb thumb-${a.status}`} data-testid="artifact-tile" data-status={a.status} title={a.name}>
        <span>{status}</span>
        {sub && <small>{sub}</small>}
      </div>
    );
  }
  return (
    <button type="button" class="thumb" onClick={onOpen} data-testid="artifact-thumb" data-status={a.status}
      aria-label={`Open screenshot ${a.name} (${caption(a)}) from ${label}`}>
      {url ? <img src={url} alt="" data-testid="artifact" /> : <span class="muted">…</span>}
      {sub && <small>{sub}</small>}
    </button>
  );
}

function FileLine({ api, artifact: a }: { api: Api; artifact: Artifact }) {
  const status = statusText(a);
  async function download() {
    const url = await api.artifactUrl(a.assignment_id, a.name);
    const link = document.createElement("a");
    link.href = url;
    link.download = a.name;
    link.click();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  }
  return (
    <span class={`file file-${a.status}`} data-testid="artifact-file" data-status={a.status}>
      <span class="badge">{a.kind}</span>{" "}
      {a.status === "stored" ? <button type="button" class="ghost small" onClick={download}>{a.name}</button>
        : <span class="mono">{a.name}</span>}
      {" "}<span class="muted">{bytesText(a.bytes)}{a.sha256 && <> · sha256 <span class="mono" title={a.sha256}>{a.sha256.slice(0, 12)}…</span></>}</span>
      {status && <> · <em>{status}</em></>}
    </span>
  );
}

/** The full-size view: one picture with its step and time taken; Previous/Next buttons and the arrow keys page. */
function Viewer({ api, pictures, index, label, onIndex, onClose }: {
  api: Api; pictures: Artifact[]; index: number; label: string; onIndex: (i: number) => void; onClose: () => void;
}) {
  const i = Math.min(index, pictures.length - 1);
  const a = pictures[i];
  const url = useBlobUrl(api, a);
  // The key listener reads what is on screen now, not what it saw when attached: effects run after paint, so a
  // listener re-attached per index would page from a stale index when keys come faster than paints.
  const shown = useRef({ i, count: pictures.length, onIndex, onClose });
  shown.current = { i, count: pictures.length, onIndex, onClose };
  // Attached before the viewer is painted (a plain effect waits for the next frame): an arrow key pressed as soon
  // as the viewer shows must page it, not be lost.
  useLayoutEffect(() => {
    function onKey(e: KeyboardEvent) {
      const now = shown.current;
      const action = viewerKey(e.key);
      if (action === "next" || action === "previous") {
        e.preventDefault();
        now.onIndex(step(now.i, now.count, action === "next" ? 1 : -1));
      } else if (action === "close") {
        now.onClose(); // focus left the dialog (its button at an end was disabled): Escape still closes it
      }
    }
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, []);
  return (
    <Dialog titleId="viewer-title" testId="artifact-viewer" onClose={onClose}>
      <div class="viewer">
        <div class="viewer-head">
          <h2 id="viewer-title">Screenshot <span data-testid="viewer-position">{positionText(i, pictures.length)}</span></h2>
          <button type="button" class="ghost" onClick={onClose} aria-label="Close">Close</button>
        </div>
        <figure>
          {url ? <img src={url} alt={`Screenshot ${a.name} from ${label}`} data-testid="viewer-image"
            data-name={a.name} /> : <p class="muted">Loading…</p>}
          <figcaption data-testid="viewer-caption">{caption(a)} <span class="muted mono">{a.name}</span></figcaption>
        </figure>
        <div class="viewer-nav">
          <button type="button" onClick={() => onIndex(step(i, pictures.length, -1))} disabled={i === 0}
            data-testid="viewer-previous">← Previous</button>
          <button type="button" onClick={() => onIndex(step(i, pictures.length, 1))}
            disabled={i === pictures.length - 1} data-testid="viewer-next">Next →</button>
        </div>
      </div>
    </Dialog>
  );
}
