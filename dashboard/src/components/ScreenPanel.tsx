import { useEffect, useRef, useState } from "preact/hooks";
import { io, type Socket } from "socket.io-client";
import type { Api } from "../api";
import { BUTTONS, gesture, keyInput, sessionText, type InputCommand, type Point } from "../screen";
import { EVENTS, type FrameMeta, type ScreenSession } from "../types";

interface Ack {
  ok: boolean;
  data?: ScreenSession;
  error?: { code: string; message: string };
}

/** The widest picture asked for: frames are scaled down to it by the agent. */
const MAX_WIDTH = 480;

/**
 * A phone's live screen: opened on demand (the phone streams only while someone watches), with remote control.
 * It has its own /dashboard socket, so closing the panel or the page ends watching and gives control back.
 * Each frame is acknowledged once shown: the server sends the next only then (latest frame wins).
 */
export function ScreenPanel({ api, deviceId }: { api: Api; deviceId: number }) {
  const [open, setOpen] = useState(false);
  return (
    <section aria-labelledby="screen-title" class="screen-panel" data-testid="screen-panel">
      <div class="title-line">
        <h2 id="screen-title">Screen</h2>
        <button type="button" data-testid="screen-toggle" onClick={() => setOpen(!open)}>
          {open ? "Close screen" : "Open screen"}
        </button>
      </div>
      {open && <LiveScreen api={api} deviceId={deviceId} />}
    </section>
  );
}

function LiveScreen({ api, deviceId }: { api: Api; deviceId: number }) {
  const [session, setSession] = useState<ScreenSession | null>(null);
  const [meta, setMeta] = useState<FrameMeta | null>(null);
  const [src, setSrc] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [text, setText] = useState("");
  const socket = useRef<Socket | null>(null);
  const pendingAck = useRef<(() => void) | null>(null);
  const down = useRef<{ p: Point; t: number } | null>(null);
  const img = useRef<HTMLImageElement | null>(null);

  useEffect(() => {
    const s = io(EVENTS.DASHBOARD_NAMESPACE, { transports: ["websocket", "polling"] });
    socket.current = s;
    let url: string | null = null;
    s.on("connect", () => {
      s.emit(EVENTS.SCREEN_WATCH, { device_id: deviceId, max_width: MAX_WIDTH }, (ack: Ack) => {
        if (ack.ok && ack.data) {
          setSession(ack.data);
          setError(null);
        } else setError(ack.error?.message ?? "cannot watch this phone");
      });
    });
    s.on("connect_error", () => setError("no live connection to the server"));
    s.on(EVENTS.SCREEN_FRAME, (m: FrameMeta, data: ArrayBuffer, ack?: () => void) => {
      if (m.device_id !== deviceId) return ack?.();
      const next = URL.createObjectURL(new Blob([data], { type: m.format === "png" ? "image/png" : "image/jpeg" }));
      if (url) URL.revokeObjectURL(url);
      url = next;
      pendingAck.current?.(); // a frame replaced before it showed: its ack goes now
      pendingAck.current = ack ?? null;
      setMeta(m);
      setSrc(next);
    });
    s.on(EVENTS.SCREEN_SESSION, (next: ScreenSession) => {
      if (next.device_id === deviceId) setSession(next);
    });
    return () => {
      s.emit(EVENTS.SCREEN_UNWATCH, { device_id: deviceId });
      s.removeAllListeners();
      s.disconnect();
      socket.current = null;
      if (url) URL.revokeObjectURL(url);
    };
  }, [api, deviceId]);

  const shown = () => {
    const r = img.current?.getBoundingClientRect();
    return r ? { width: r.width, height: r.height, left: r.left, top: r.top } : null;
  };

  function send(input: InputCommand) {
    socket.current?.emit(EVENTS.SCREEN_INPUT, { device_id: deviceId, input }, (ack: Ack) => {
      setError(ack.ok ? null : ack.error?.message ?? "the input failed");
    });
  }

  function control(take: boolean) {
    socket.current?.emit(EVENTS.SCREEN_CONTROL, { device_id: deviceId, take }, (ack: Ack) => {
      if (ack.ok && ack.data) {
        setSession(ack.data);
        setError(null);
      } else setError(ack.error?.message ?? "cannot take control");
    });
  }

  const controlling = Boolean(session?.you_control);
  const point = (e: PointerEvent): Point | null => {
    const r = shown();
    return r ? { x: e.clientX - r.left, y: e.clientY - r.top } : null;
  };

  return (
    <div class="screen-live">
      {error && <p class="field-error" role="alert">{error}</p>}
      <p class="muted" data-testid="screen-session">{session ? sessionText(session) : "Connecting…"}</p>
      <div class="screen-controls">
        {controlling
          ? <button type="button" data-testid="screen-release" onClick={() => control(false)}>Release control</button>
          : api.can("operator") && <button type="button" data-testid="screen-take" onClick={() => control(true)}
              disabled={Boolean(session?.controller)}>Take control</button>}
        {BUTTONS.map((b) => (
          <button type="button" key={b.label} disabled={!controlling} data-testid={`screen-${b.label.toLowerCase()}`}
            onClick={() => send(b.input)}>{b.label}</button>
        ))}
      </div>
      {src && meta ? (
        <img ref={img} src={src} alt={`Screen of ${meta.serial}`} data-testid="screen-image" data-seq={meta.seq}
          width={meta.width} height={meta.height} tabIndex={0} draggable={false}
          class={controlling ? "screen-image controlling" : "screen-image"}
          onLoad={() => { pendingAck.current?.(); pendingAck.current = null; }}
          onError={() => { pendingAck.current?.(); pendingAck.current = null; }}
          onPointerDown={(e) => {
            const p = point(e);
            if (p && controlling) {
              down.current = { p, t: performance.now() };
              e.preventDefault();
            }
          }}
          onPointerUp={(e) => {
            const start = down.current;
            down.current = null;
            const p = point(e);
            const r = shown();
            if (!start || !p || !r || !meta || !controlling) return;
            send(gesture(start.p, p, performance.now() - start.t, r,
              { width: meta.phone_width, height: meta.phone_height }));
          }}
          onKeyDown={(e) => {
            const input = controlling ? keyInput(e) : null;
            if (input) {
              e.preventDefault();
              send(input);
            }
          }} />
      ) : <p class="muted" data-testid="screen-waiting">Waiting for the first picture…</p>}
      {controlling && (
        <form class="screen-text" onSubmit={(e) => {
          e.preventDefault();
          if (text) send({ type: "text", text });
          setText("");
        }}>
          <input type="text" aria-label="Text to type on the phone" value={text} maxLength={1000}
            onInput={(e) => setText((e.target as HTMLInputElement).value)} />
          <button type="submit">Type</button>
        </form>
      )}
    </div>
  );
}
