import { Dialog } from "./Dialog";

/**
 * Asks once before a destructive action, saying what it will do. Cancel (the first button, focused) keeps
 * everything as it is; the danger button does it.
 */
export function Confirm({ title, message, action, onConfirm, onClose }: {
  title: string; message: string; action: string; onConfirm: () => void; onClose: () => void;
}) {
  return (
    <Dialog titleId="confirm-title" testId="confirm-dialog" onClose={onClose}>
      <h2 id="confirm-title">{title}</h2>
      <p data-testid="confirm-message">{message}</p>
      <div class="dialog-actions">
        <button type="button" class="ghost" onClick={onClose} data-testid="confirm-keep">Keep it</button>
        <button type="button" class="danger-solid" onClick={() => { onClose(); onConfirm(); }}
          data-testid="confirm">{action}</button>
      </div>
    </Dialog>
  );
}
