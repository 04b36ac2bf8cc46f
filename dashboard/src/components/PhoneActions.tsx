import { useState } from "preact/hooks";
import type { Api, ApiError } from "../api";
import { recoverText, RUNGS } from "../fleetHealth";
import type { Store } from "../store";
import type { DeviceDetail, RecoveryRung } from "../types";
import { describedBy, Dialog, FieldError } from "./Dialog";

type Asking = { kind: "quarantine" } | { kind: "recover"; rung: RecoveryRung } | null;

/**
 * What an operator does to one phone: release it from quarantine, quarantine it (with a reason), or run one rung
 * of the recovery ladder; the last two are confirmed first. The server's answer (or complaint) is shown.
 */
export function PhoneActions({ api, store, device: d, onChanged }:
  { api: Api; store: Store; device: DeviceDetail; onChanged: (d: DeviceDetail | null) => void }) {
  const [asking, setAsking] = useState<Asking>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);

  async function release() {
    setBusy(true);
    setError(null);
    setNotice(null);
    try {
      const next = await api.releaseDevice(d.id);
      store.putDevice(next);
      onChanged(next);
      setNotice(`${d.serial} released: it is ${next.state} now.`);
    } catch (e) {
      setError(`Release ${d.serial}: ${(e as ApiError).message}`);
    } finally {
      setBusy(false);
    }
  }

  const recovering = d.state === "recovering";
  if (!api.can("operator")) return null;
  return (
    <div class="phone-actions" data-testid="phone-actions">
      <div class="actions left" role="group" aria-label="Quarantine">
        {d.state === "quarantined" ? (
          <button type="button" disabled={busy} onClick={release} data-testid="release">
            {busy ? "Releasing…" : "Release"}</button>
        ) : (
          <button type="button" class="danger" onClick={() => setAsking({ kind: "quarantine" })}
            data-testid="quarantine">Quarantine…</button>
        )}
      </div>
      <div class="actions left" role="group" aria-label="Recovery">
        <span class="muted">Recovery:</span>
        {RUNGS.map((r) => (
          <button key={r.rung} type="button" class="ghost" disabled={recovering}
            title={recovering ? `A rung runs on it now (${d.recovering ?? "?"})` : `${r.label}: ${r.effect}`}
            onClick={() => setAsking({ kind: "recover", rung: r.rung })} data-testid={`recover-${r.rung}`}>
            {r.label}…</button>
        ))}
      </div>
      {error && <p class="field-error" role="alert" data-testid="action-error">{error}</p>}
      {notice && <p class="notice" role="status" data-testid="action-notice">{notice}</p>}
      {asking?.kind === "quarantine" && (
        <QuarantineDialog api={api} store={store} device={d} onClose={() => setAsking(null)} onDone={(next) => {
          setAsking(null);
          setError(null);
          onChanged(next);
          setNotice(`${d.serial} quarantined: it takes no work until released.`);
        }} />
      )}
      {asking?.kind === "recover" && (
        <RecoverDialog api={api} device={d} rung={asking.rung} onClose={() => setAsking(null)} onDone={(text) => {
          setAsking(null);
          setError(null);
          setNotice(text);
        }} />
      )}
    </div>
  );
}

function QuarantineDialog({ api, store, device: d, onClose, onDone }: {
  api: Api; store: Store; device: DeviceDetail; onClose: () => void; onDone: (d: DeviceDetail) => void;
}) {
  const [reason, setReason] = useState("");
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [busy, setBusy] = useState(false);

  async function submit(e: Event) {
    e.preventDefault();
    if (!reason.trim()) {
      setErrors({ reason: "Say why: the reason stays in the phone's timeline." });
      return;
    }
    setBusy(true);
    try {
      const next = await api.quarantineDevice(d.id, reason.trim());
      store.putDevice(next);
      onDone(next);
    } catch (err) {
      const ae = err as ApiError;
      const field = ae.details.find((x) => x.field === "reason");
      setErrors(field ? { reason: field.message } : { "": ae.message });
    } finally {
      setBusy(false);
    }
  }

  return (
    <Dialog titleId="quarantine-title" testId="quarantine-dialog" onClose={onClose}>
      <form onSubmit={submit} noValidate>
        <h2 id="quarantine-title">Quarantine {d.serial}?</h2>
        <p>It takes no work until released; its work not yet started goes back to its jobs.</p>
        <label for="quarantine-reason">Reason</label>
        <input id="quarantine-reason" value={reason} maxLength={500} placeholder="cracked screen, sent for repair…"
          data-testid="quarantine-reason" onInput={(e) => setReason((e.target as HTMLInputElement).value)}
          {...describedBy(errors, "reason")} />
        <FieldError id="reason" message={errors.reason} />
        {errors[""] && <p class="field-error" role="alert" data-testid="dialog-error">{errors[""]}</p>}
        <div class="dialog-actions">
          <button type="button" class="ghost" onClick={onClose}>Cancel</button>
          <button type="submit" class="danger" disabled={busy} data-testid="confirm-quarantine">
            {busy ? "Quarantining…" : "Quarantine"}</button>
        </div>
      </form>
    </Dialog>
  );
}

function RecoverDialog({ api, device: d, rung, onClose, onDone }: {
  api: Api; device: DeviceDetail; rung: RecoveryRung; onClose: () => void; onDone: (text: string) => void;
}) {
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const step = RUNGS.find((r) => r.rung === rung)!;

  async function run() {
    setBusy(true);
    setError(null);
    try {
      onDone(recoverText(await api.recoverDevice(d.id, rung)));
    } catch (e) {
      setError((e as ApiError).message);
    } finally {
      setBusy(false);
    }
  }

  return (
    <Dialog titleId="recover-title" testId="recover-dialog" onClose={onClose}>
      <h2 id="recover-title">{step.label} {d.serial}?</h2>
      <p data-testid="recover-effect">This {step.effect}.</p>
      {d.state === "busy" && <p class="field-error">It is running a job now.</p>}
      {error && <p class="field-error" role="alert" data-testid="dialog-error">{error}</p>}
      <div class="dialog-actions">
        <button type="button" class="ghost" onClick={onClose}>Cancel</button>
        <button type="button" class="danger" disabled={busy} onClick={run} data-testid="confirm-recover">
          {busy ? "Asking…" : step.label}</button>
      </div>
    </Dialog>
  );
}
