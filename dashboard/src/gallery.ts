// Screenshot galleries (a run's, a phone's): ordering, captions, paging and the viewer's keys. Pure functions,
// so the components stay thin and this is tested without a browser.
import type { Artifact, ArtifactPage } from "./types";

/** A run's files in the order they were made: by step, then time taken, then name. */
export function byStep(items: Artifact[]): Artifact[] {
  return [...items].sort((a, b) =>
    (a.step_index ?? Number.MAX_SAFE_INTEGER) - (b.step_index ?? Number.MAX_SAFE_INTEGER)
    || (a.taken_at ?? "").localeCompare(b.taken_at ?? "")
    || a.name.localeCompare(b.name));
}

export const isPicture = (a: Artifact) => a.kind === "screenshot";

/** A stored picture the browser can show (uploading and deleted ones show as what they are, never vanish). */
export const viewable = (a: Artifact) => isPicture(a) && a.status === "stored";

/** "Step 3" (steps count from 1 on screen), or "" when no step made it. */
export function stepText(a: Artifact): string {
  return a.step_index == null ? "" : `Step ${a.step_index + 1}`;
}

/** "Step 3 · taken 12:01:02" — what the full-size view says under a picture. */
export function caption(a: Artifact, time: (iso: string) => string = (iso) => new Date(iso).toLocaleString()): string {
  return [stepText(a), a.taken_at ? `taken ${time(a.taken_at)}` : ""].filter(Boolean).join(" · ") || a.name;
}

/** What a tile says in place of a picture it cannot show. */
export function statusText(a: Artifact): string | null {
  if (a.status === "uploading") return "uploading…";
  if (a.status === "deleted") return `deleted${a.deleted_reason ? `: ${a.deleted_reason}` : ""}`;
  return null;
}

/** "1.2 MB", "830 B". */
export function bytesText(n: number): string {
  if (n < 1000) return `${n} B`;
  const units = ["kB", "MB", "GB"];
  let v = n;
  let i = -1;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

/** The index after ``move`` within ``count`` pictures, stopping at either end (never wrapping: the end is the end). */
export function step(index: number, count: number, move: 1 | -1): number {
  if (count <= 0) return 0;
  return Math.min(count - 1, Math.max(0, index + move));
}

export type ViewerKey = "next" | "previous" | "close" | null;

/** What a key does in the full-size view. */
export function viewerKey(key: string): ViewerKey {
  if (key === "ArrowRight" || key === "PageDown") return "next";
  if (key === "ArrowLeft" || key === "PageUp") return "previous";
  if (key === "Escape") return "close";
  return null;
}

/** "2 / 6". */
export const positionText = (index: number, count: number) => `${Math.min(index + 1, count)} / ${count}`;

/** A phone's pages joined, newest first, each artifact once (a page may overlap what was loaded before). */
export function mergePages(loaded: Artifact[], page: ArtifactPage): Artifact[] {
  const seen = new Set(loaded.map((a) => a.id));
  return [...loaded, ...page.items.filter((a) => !seen.has(a.id))];
}

/** A run is still sending files: worth looking again soon. */
export const anyUploading = (items: Artifact[]) => items.some((a) => a.status === "uploading");

/** "2 screenshots uploading" for a run the server says is still receiving files (Assignment.artifacts_pending). */
export function pendingText(pending: number | undefined): string | null {
  if (!pending) return null;
  return `${pending} file${pending === 1 ? "" : "s"} uploading`;
}
