import type { ComponentChildren } from "preact";
import { useLayoutEffect, useRef } from "preact/hooks";

/**
 * A modal dialog: focus moves inside at once (and back to the opener on close), Tab stays inside,
 * Escape and a click on the backdrop close it.
 */
export function Dialog({ titleId, testId, onClose, children }:
  { titleId: string; testId: string; onClose: () => void; children: ComponentChildren }) {
  const dialog = useRef<HTMLDivElement>(null);
  const opener = useRef<Element | null>(document.activeElement);

  // a layout effect, so focus is inside the dialog (and Escape closes it) before the next key press
  useLayoutEffect(() => {
    const first = dialog.current?.querySelector<HTMLElement>("select, input, textarea")
      ?? dialog.current?.querySelector<HTMLElement>("button"); // a confirmation: its first button (Cancel)
    first?.focus();
    const prev = opener.current;
    return () => (prev as HTMLElement | null)?.focus?.();
  }, []);

  function onKey(e: KeyboardEvent) {
    if (e.key === "Escape") {
      e.stopPropagation();
      onClose();
    }
    if (e.key === "Tab" && dialog.current) {
      const focusable = dialog.current.querySelectorAll<HTMLElement>("input, select, textarea, button, summary");
      const first = focusable[0];
      const last = focusable[focusable.length - 1];
      if (e.shiftKey && document.activeElement === first) {
        e.preventDefault();
        last.focus();
      } else if (!e.shiftKey && document.activeElement === last) {
        e.preventDefault();
        first.focus();
      }
    }
  }

  return (
    <div class="overlay" onClick={(e) => e.target === e.currentTarget && onClose()}>
      <div class="dialog" role="dialog" aria-modal="true" aria-labelledby={titleId} ref={dialog}
        onKeyDown={onKey} data-testid={testId}>
        {children}
      </div>
    </div>
  );
}

/** A server complaint beside its field; `key` is the form's field key. */
export function FieldError({ id, message }: { id: string; message?: string }) {
  return message ? <p id={`err-${id}`} class="field-error" role="alert" data-testid={`error-${id}`}>{message}</p> : null;
}

/** Props that tie an input to its error, when it has one. */
export function describedBy(errors: Record<string, string>, key: string):
  { "aria-invalid"?: boolean; "aria-describedby"?: string } {
  return errors[key] ? { "aria-invalid": true, "aria-describedby": `err-${key}` } : {};
}

/** An onInput for a <form>: editing a field clears the server's complaint about it, and the general one. */
export function clearOnInput(errors: Record<string, string>, setErrors: (e: Record<string, string>) => void) {
  return (e: Event) => {
    const key = (e.target as HTMLElement).getAttribute("aria-describedby")?.replace(/^err-/, "");
    if ((key && key in errors) || "" in errors) {
      const next = { ...errors };
      if (key) delete next[key];
      delete next[""];
      setErrors(next);
    }
  };
}

/** After a refused submit: the first wrong field in the form takes the focus, scrolled to the middle of the dialog
 * so its label and its message show with it (a plain focus scrolls only the field itself into view). */
export function focusFirstWrong(form: HTMLFormElement) {
  requestAnimationFrame(() => {
    const field = form.querySelector<HTMLElement>("[aria-invalid=true]");
    field?.focus({ preventScroll: true });
    field?.scrollIntoView({ block: "center" });
  });
}
