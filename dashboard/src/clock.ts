// The page's "now" for the times it shows ("5 s ago", "took 12 s"): the real clock while the live link is up,
// and the last moment it was live while it is down, so nothing stale reads as current.
let frozenAt: number | null = null;

/** Stop the shown times at `at` (the link was lost then); null lets them run with the real clock again. */
export function freezeClock(at: number | null): void {
  frozenAt = at;
}

export function clockNow(): number {
  return frozenAt ?? Date.now();
}
