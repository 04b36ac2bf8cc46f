// Light or dark: the operator's choice (kept in localStorage) or else the system's (prefers-color-scheme),
// applied as <html data-theme="light|dark">, which style.css reads.
export type Theme = "light" | "dark";
export const THEME_KEY = "phonefleet.theme";

const media = (): MediaQueryList | null =>
  typeof matchMedia === "function" ? matchMedia("(prefers-color-scheme: dark)") : null;

export function storedTheme(): Theme | null {
  const t = localStorage.getItem(THEME_KEY);
  return t === "light" || t === "dark" ? t : null;
}

export function currentTheme(): Theme {
  return storedTheme() ?? (media()?.matches ? "dark" : "light");
}

export function applyTheme(): Theme {
  const t = currentTheme();
  document.documentElement.dataset.theme = t;
  return t;
}

/** The toggle: remember the other theme, and apply it. */
export function toggleTheme(): Theme {
  localStorage.setItem(THEME_KEY, currentTheme() === "dark" ? "light" : "dark");
  return applyTheme();
}

/** Follow the system's setting while the operator has not chosen; returns the unsubscribe. */
export function followSystem(onChange: (t: Theme) => void): () => void {
  const m = media();
  if (!m) return () => {};
  const on = () => onChange(applyTheme());
  m.addEventListener("change", on);
  return () => m.removeEventListener("change", on);
}
