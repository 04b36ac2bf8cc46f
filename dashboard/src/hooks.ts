import { useEffect, useState } from "preact/hooks";
import type { Store } from "./store";

/** Re-render on the store's (throttled) notifications. */
export function useStore(store: Store): number {
  const [, setVersion] = useState(store.version);
  useEffect(() => store.subscribe(() => setVersion(store.version)), [store]);
  return store.version;
}

export function useHash(): string {
  const [hash, setHash] = useState(location.hash || "#/jobs");
  useEffect(() => {
    const on = () => setHash(location.hash || "#/jobs");
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  return hash;
}

/** Re-render every `ms` while `on` (a running run's "took" counter moves without any message). */
export function useTicker(on: boolean, ms = 1000): number {
  const [tick, setTick] = useState(0);
  useEffect(() => {
    if (!on) return;
    const t = setInterval(() => setTick((n) => n + 1), ms);
    return () => clearInterval(t);
  }, [on, ms]);
  return tick;
}
