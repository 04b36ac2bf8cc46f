// The fleet grid: every phone as a tile with its state and a recent picture of its screen.
// Pictures are fetched slowly (every THUMB_REFRESH_MS), only for tiles on screen, a few at a time:
// a 500-phone rack scrolled past costs nothing, and a wall display of 40 tiles costs 40 small JPEGs
// every half minute.
import type { Device, DeviceState } from "./types";

export const THUMB_REFRESH_MS = 30_000;
/** Pictures asked for at once: each is a screencap on a phone, so a burst would queue behind adb. */
export const THUMB_CONCURRENCY = 4;
/** Pixels wide asked of the server (tiles are ~180 CSS px; 2x for sharp screens is more than a thumbnail needs). */
export const THUMB_WIDTH = 240;

/** States with no screen to show: the agent cannot reach the phone. */
const NO_SCREEN: ReadonlySet<DeviceState> = new Set<DeviceState>(["offline"]);

export function hasScreen(state: DeviceState): boolean {
  return !NO_SCREEN.has(state);
}

/** Tiles in a stable order: by agent, then serial (a phone keeps its place on a wall display as states change). */
export function tileOrder(devices: Iterable<Device>): Device[] {
  return [...devices].sort((a, b) =>
    (a.agent_name ?? "").localeCompare(b.agent_name ?? "") || a.serial.localeCompare(b.serial) || a.id - b.id);
}

export interface Thumb {
  /** An object URL of the latest picture, or null before the first arrives. */
  url: string | null;
  /** When the latest picture (or the latest failure) came, ms since the epoch. */
  at: number;
  /** Why the latest try gave no picture, or null. */
  error: string | null;
}

/**
 * Which tiles need a picture now, and the bookkeeping around the fetches. No timers of its own: the page
 * calls `pump()` when visibility changes and once a second; tests drive it with their own clock.
 */
export class ThumbScheduler {
  private readonly visible = new Map<number, boolean>(); // id -> has a screen to show
  private readonly fetchedAt = new Map<number, number>();
  private readonly inflight = new Set<number>();
  readonly thumbs = new Map<number, Thumb>();
  private stopped = false;

  constructor(
    private readonly fetchThumb: (id: number) => Promise<string>,
    private readonly onChange: (id: number) => void,
    private readonly now: () => number = () => Date.now(),
    private readonly refreshMs = THUMB_REFRESH_MS,
    private readonly concurrency = THUMB_CONCURRENCY,
    private readonly revoke: (url: string) => void = (url) => URL.revokeObjectURL(url),
  ) {}

  /** A tile came on screen (with whether its phone has a screen to show) or left it (`null`). */
  show(id: number, screen: boolean | null): void {
    if (screen === null) this.visible.delete(id);
    else this.visible.set(id, screen);
  }

  /** Tiles on screen whose picture is missing or older than the refresh, oldest (or never fetched) first. */
  due(): number[] {
    const now = this.now();
    const ids = [...this.visible].filter(([id, screen]) => screen && !this.inflight.has(id)
      && now - (this.fetchedAt.get(id) ?? -Infinity) >= this.refreshMs).map(([id]) => id);
    ids.sort((a, b) => (this.fetchedAt.get(a) ?? -Infinity) - (this.fetchedAt.get(b) ?? -Infinity) || a - b);
    return ids.slice(0, Math.max(0, this.concurrency - this.inflight.size));
  }

  /** Start the fetches that are due; resolves when those are done (the page does not wait on it). */
  async pump(): Promise<void> {
    const started = this.due().map((id) => this.fetch(id));
    await Promise.all(started);
  }

  private async fetch(id: number): Promise<void> {
    this.inflight.add(id);
    let url: string | null = null;
    let error: string | null = null;
    try {
      url = await this.fetchThumb(id);
    } catch (e) {
      error = (e as Error).message || "no picture";
    } finally {
      this.inflight.delete(id);
    }
    const at = this.now();
    this.fetchedAt.set(id, at); // a failure waits for the next round too: a phone that cannot answer is not hammered
    if (this.stopped) {
      if (url) this.revoke(url);
      return;
    }
    const old = this.thumbs.get(id);
    if (url && old?.url) this.revoke(old.url);
    this.thumbs.set(id, { url: url ?? old?.url ?? null, at, error });
    this.onChange(id);
  }

  /** The page went away: let go of every picture. */
  stop(): void {
    this.stopped = true;
    for (const t of this.thumbs.values()) if (t.url) this.revoke(t.url);
    this.thumbs.clear();
  }
}

/** "12 s ago", "3 min ago": how old a tile's picture is. */
export function ageText(at: number, now: number): string {
  const s = Math.max(0, Math.round((now - at) / 1000));
  return s < 60 ? `${s} s ago` : `${Math.floor(s / 60)} min ago`;
}
