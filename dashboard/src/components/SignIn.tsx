import { useState } from "preact/hooks";
import { signIn } from "../api";
import type { SessionInfo } from "../generated/protocol";

export function SignIn({ onSignedIn, notice }: { onSignedIn: (session: SessionInfo) => void; notice: string | null }) {
  const [name, setName] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(e: Event) {
    e.preventDefault();
    if (!name.trim() || !password) {
      setError("Enter your name and password.");
      return;
    }
    setBusy(true);
    const answer = await signIn(name.trim(), password);
    setBusy(false);
    if (typeof answer === "string") setError(answer);
    else onSignedIn(answer);
  }

  return (
    <main class="signin">
      <form onSubmit={submit} aria-labelledby="signin-title">
        <h1 id="signin-title">phonefleet</h1>
        <p>Sign in with your name and password (an admin adds people with <code>phonefleet-server users add</code>).</p>
        {notice && <p class="notice" role="status">{notice}</p>}
        <label for="name">Name</label>
        <input id="name" name="username" autocomplete="username" value={name} autofocus
          onInput={(e) => setName((e.target as HTMLInputElement).value)} />
        <label for="password">Password</label>
        <input
          id="password"
          name="password"
          type="password"
          autocomplete="current-password"
          value={password}
          onInput={(e) => setPassword((e.target as HTMLInputElement).value)}
          aria-invalid={error ? "true" : undefined}
          aria-describedby={error ? "signin-error" : undefined}
        />
        {error && <p id="signin-error" class="field-error" role="alert" data-testid="signin-error">{error}</p>}
        <button type="submit" disabled={busy}>{busy ? "Signing in…" : "Sign in"}</button>
      </form>
    </main>
  );
}
