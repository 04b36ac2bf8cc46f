import { useState } from "preact/hooks";
import { checkToken } from "../api";

export function SignIn({ onSignedIn, notice }: { onSignedIn: (token: string) => void; notice: string | null }) {
  const [token, setToken] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(e: Event) {
    e.preventDefault();
    const t = token.trim();
    if (!t) {
      setError("Enter the admin token.");
      return;
    }
    setBusy(true);
    const problem = await checkToken(t);
    setBusy(false);
    if (problem) setError(problem);
    else onSignedIn(t);
  }

  return (
    <main class="signin">
      <form onSubmit={submit} aria-labelledby="signin-title">
        <h1 id="signin-title">phonefleet</h1>
        <p>Sign in with an admin token (<code>pfadm_…</code>, printed by the server at start-up).</p>
        {notice && <p class="notice" role="status">{notice}</p>}
        <label for="token">Admin token</label>
        <input
          id="token"
          name="token"
          type="password"
          autocomplete="current-password"
          value={token}
          onInput={(e) => setToken((e.target as HTMLInputElement).value)}
          aria-invalid={error ? "true" : undefined}
          aria-describedby={error ? "token-error" : undefined}
          autofocus
        />
        {error && <p id="token-error" class="field-error" role="alert" data-testid="signin-error">{error}</p>}
        <button type="submit" disabled={busy}>{busy ? "Checking…" : "Sign in"}</button>
      </form>
    </main>
  );
}
