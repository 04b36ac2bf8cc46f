// The live screen's logic: where a click on the scaled picture lands on the phone, which gesture a pointer made,
// which input a key press is. Pure functions (the panel only wires them to the socket).
import type { KeyeventInput, RotateInput, SwipeInput, TapInput, TextInput } from "./types";

export type InputCommand = TapInput | SwipeInput | TextInput | KeyeventInput | RotateInput;

export interface Size {
  width: number;
  height: number;
}

export interface Point {
  x: number;
  y: number;
}

/** A pointer that moved less than this (in the picture's pixels as shown) is a tap, not a swipe. */
export const TAP_SLOP_PX = 8;
export const MIN_SWIPE_MS = 50;
export const MAX_SWIPE_MS = 3000;

/** A point on the picture as shown (CSS pixels from its top-left corner) in the phone's own pixels, clamped. */
export function toPhone(p: Point, shown: Size, phone: Size): Point {
  if (shown.width <= 0 || shown.height <= 0) return { x: 0, y: 0 };
  const clamp = (v: number, max: number) => Math.min(max - 1, Math.max(0, Math.round(v)));
  return {
    x: clamp((p.x * phone.width) / shown.width, phone.width),
    y: clamp((p.y * phone.height) / shown.height, phone.height),
  };
}

/** What a pointer pressed at `down` and released at `up` after `ms` did: a tap or a swipe, in phone pixels. */
export function gesture(down: Point, up: Point, ms: number, shown: Size, phone: Size): TapInput | SwipeInput {
  const start = toPhone(down, shown, phone);
  if (Math.hypot(up.x - down.x, up.y - down.y) < TAP_SLOP_PX) return { type: "tap", x: start.x, y: start.y };
  const end = toPhone(up, shown, phone);
  const duration = Math.min(MAX_SWIPE_MS, Math.max(MIN_SWIPE_MS, Math.round(ms)));
  return { type: "swipe", x1: start.x, y1: start.y, x2: end.x, y2: end.y, duration_ms: duration };
}

const KEYS: Record<string, string> = {
  Enter: "ENTER", Backspace: "DEL", Delete: "FORWARD_DEL", Tab: "TAB", Escape: "BACK", ArrowUp: "DPAD_UP",
  ArrowDown: "DPAD_DOWN", ArrowLeft: "DPAD_LEFT", ArrowRight: "DPAD_RIGHT", Home: "MOVE_HOME", End: "MOVE_END",
  PageUp: "PAGE_UP", PageDown: "PAGE_DOWN",
};

/** A key pressed on the focused picture: a key event for named keys, text for a printable one, else nothing. */
export function keyInput(e: { key: string; ctrlKey?: boolean; metaKey?: boolean; altKey?: boolean }): InputCommand | null {
  if (e.ctrlKey || e.metaKey || e.altKey) return null;
  const named = KEYS[e.key];
  if (named) return { type: "keyevent", key: named };
  if ([...e.key].length === 1) return { type: "text", text: e.key };
  return null;
}

/** The buttons under the picture, each one input. */
export const BUTTONS: { label: string; input: InputCommand }[] = [
  { label: "Back", input: { type: "keyevent", key: "BACK" } },
  { label: "Home", input: { type: "keyevent", key: "HOME" } },
  { label: "Recents", input: { type: "keyevent", key: "APP_SWITCH" } },
  { label: "Rotate", input: { type: "rotate" } },
  { label: "Wake", input: { type: "keyevent", key: "WAKEUP" } },
];

/** The line that says who controls the phone and who watches it. */
export function sessionText(s: { controller?: string | null; you_control?: boolean; watchers: number }): string {
  const control = s.you_control ? "You control this phone" : s.controller ? `Controlled by ${s.controller}`
    : "Nobody controls this phone";
  return `${control} · ${s.watchers} watching`;
}
