import { describe, expect, it } from "vitest";
import { BUTTONS, gesture, keyInput, sessionText, toPhone } from "./screen";

const phone = { width: 1080, height: 2400 };
const shown = { width: 360, height: 800 };

describe("the live screen", () => {
  it("maps a point on the scaled picture to the phone's own pixels", () => {
    expect(toPhone({ x: 180, y: 400 }, shown, phone)).toEqual({ x: 540, y: 1200 });
    expect(toPhone({ x: 0, y: 0 }, shown, phone)).toEqual({ x: 0, y: 0 });
    expect(toPhone({ x: 360, y: 800 }, shown, phone)).toEqual({ x: 1079, y: 2399 }); // the far edge stays on
    expect(toPhone({ x: -5, y: 900 }, shown, phone)).toEqual({ x: 0, y: 2399 });
    expect(toPhone({ x: 10, y: 10 }, { width: 0, height: 0 }, phone)).toEqual({ x: 0, y: 0 });
  });
  it("maps a rotated (landscape) picture by its own size", () => {
    expect(toPhone({ x: 400, y: 90 }, { width: 800, height: 360 }, { width: 2400, height: 1080 }))
      .toEqual({ x: 1200, y: 270 });
  });
  it("calls a short press a tap and a drag a swipe, with a bounded duration", () => {
    expect(gesture({ x: 180, y: 400 }, { x: 183, y: 402 }, 120, shown, phone)).toEqual({ type: "tap", x: 540, y: 1200 });
    expect(gesture({ x: 100, y: 700 }, { x: 100, y: 100 }, 250, shown, phone))
      .toEqual({ type: "swipe", x1: 300, y1: 2100, x2: 300, y2: 300, duration_ms: 250 });
    expect(gesture({ x: 0, y: 0 }, { x: 100, y: 0 }, 5, shown, phone)).toMatchObject({ duration_ms: 50 });
    expect(gesture({ x: 0, y: 0 }, { x: 100, y: 0 }, 60_000, shown, phone)).toMatchObject({ duration_ms: 3000 });
  });
  it("turns named keys into key events and printable ones into text", () => {
    expect(keyInput({ key: "Enter" })).toEqual({ type: "keyevent", key: "ENTER" });
    expect(keyInput({ key: "Backspace" })).toEqual({ type: "keyevent", key: "DEL" });
    expect(keyInput({ key: "a" })).toEqual({ type: "text", text: "a" });
    expect(keyInput({ key: "é" })).toEqual({ type: "text", text: "é" });
    expect(keyInput({ key: "Shift" })).toBeNull();
    expect(keyInput({ key: "c", ctrlKey: true })).toBeNull();
  });
  it("has the buttons the operator expects", () => {
    expect(BUTTONS.map((b) => b.label)).toEqual(["Back", "Home", "Recents", "Rotate", "Wake"]);
    expect(BUTTONS.find((b) => b.label === "Recents")?.input).toEqual({ type: "keyevent", key: "APP_SWITCH" });
  });
  it("says who controls and who watches", () => {
    expect(sessionText({ watchers: 2, you_control: true, controller: "ana" })).toBe("You control this phone · 2 watching");
    expect(sessionText({ watchers: 1, controller: "ana" })).toBe("Controlled by ana · 1 watching");
    expect(sessionText({ watchers: 0 })).toBe("Nobody controls this phone · 0 watching");
  });
});
