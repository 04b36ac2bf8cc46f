import { useEffect, useState } from "preact/hooks";
import { currentTheme, followSystem, toggleTheme } from "../theme";

/** The top bar's light/dark switch; the choice is remembered, and until one is made the system's is followed. */
export function ThemeToggle() {
  const [theme, setTheme] = useState(currentTheme);
  useEffect(() => followSystem(setTheme), []);
  const dark = theme === "dark";
  return (
    <button type="button" class="ghost theme-toggle" aria-pressed={dark} data-testid="theme-toggle"
      title={dark ? "Switch to the light theme" : "Switch to the dark theme"} onClick={() => setTheme(toggleTheme())}>
      <span aria-hidden="true">{dark ? "☀" : "☾"}</span><span class="sr-only">Dark theme</span>
    </button>
  );
}
