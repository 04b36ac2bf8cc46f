import { useEffect, useState } from "preact/hooks";
import type { Api, ApiError } from "../api";
import type { PersonalToken, PersonalTokenCreated } from "../generated/protocol";

/** Who is signed in, their own password, and their personal API tokens (for the CLI and scripts). */
export function AccountPage({ api }: { api: Api }) {
  const { name, role, person } = api.session;
  return (
    <section aria-labelledby="account-title">
      <div class="page-head">
        <h1 id="account-title">Account</h1>
      </div>
      <p data-testid="account-who">Signed in as <strong>{name}</strong>, role <strong>{role}</strong>
        {role === "viewer" ? ": you can see everything and change nothing."
          : role === "operator" ? ": you can run jobs and pause and control phones."
          : ": you can also manage agents, people, tokens, policies and distribution."}</p>
      {person ? (
        <div class="two-cols">
          <PersonalTokens api={api} />
          <PasswordForm api={api} />
        </div>
      ) : <p class="muted">A shared admin token has no personal tokens or password.</p>}
    </section>
  );
}

function PersonalTokens({ api }: { api: Api }) {
  const [items, setItems] = useState<PersonalToken[] | null>(null);
  const [name, setName] = useState("");
  const [created, setCreated] = useState<PersonalTokenCreated | null>(null);
  const [error, setError] = useState<string | null>(null);

  const load = () => api.tokens().then(setItems, (e: ApiError) => setError(e.message));
  useEffect(() => void load(), []);

  async function create(e: Event) {
    e.preventDefault();
    setError(null);
    try {
      setCreated(await api.createToken(name.trim()));
      setName("");
      await load();
    } catch (err) {
      setError((err as ApiError).message);
    }
  }

  async function revoke(t: PersonalToken) {
    setError(null);
    try {
      await api.revokeToken(t.id);
      if (created?.token.id === t.id) setCreated(null);
      await load();
    } catch (err) {
      setError((err as ApiError).message);
    }
  }

  return (
    <div aria-labelledby="tokens-title">
      <h2 id="tokens-title">Personal tokens</h2>
      <p class="muted small-text">For the CLI and scripts (<code>Authorization: Bearer …</code>); each acts with your
        role and stops working when revoked or when you are disabled.</p>
      <form onSubmit={create} class="toolbar">
        <label for="token-name" class="sr-only">Token name</label>
        <input id="token-name" placeholder="name, e.g. laptop" value={name} required pattern="[A-Za-z0-9][A-Za-z0-9_.\-]*"
          onInput={(e) => setName((e.target as HTMLInputElement).value)} />
        <button type="submit" data-testid="create-token">Create token</button>
      </form>
      {created && (
        <div class="callout callout-info" role="status" data-testid="new-token">
          Token <strong>{created.token.name}</strong>, shown once: copy it now.
          <div class="mono" data-testid="new-token-secret">{created.secret}</div>
        </div>
      )}
      {error && <p class="field-error" role="alert">{error}</p>}
      {items && items.length === 0 && <p class="muted">No tokens yet.</p>}
      {items && items.length > 0 && (
        <div class="table-wrap">
          <table data-testid="tokens">
            <thead><tr><th>Name</th><th>Created</th><th>Last used</th><th /></tr></thead>
            <tbody>
              {items.map((t) => (
                <tr key={t.id} data-testid="token-row">
                  <td>{t.name}</td>
                  <td>{new Date(t.created_at).toLocaleString()}</td>
                  <td>{t.last_used_at ? new Date(t.last_used_at).toLocaleString() : "never"}</td>
                  <td><button type="button" class="ghost" onClick={() => void revoke(t)}>Revoke</button></td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </div>
  );
}

function PasswordForm({ api }: { api: Api }) {
  const [current, setCurrent] = useState("");
  const [next, setNext] = useState("");
  const [message, setMessage] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);

  async function submit(e: Event) {
    e.preventDefault();
    setMessage(null);
    setError(null);
    try {
      await api.changePassword(current, next);
      setCurrent("");
      setNext("");
      setMessage("Password changed; your other sessions were signed out.");
    } catch (err) {
      setError((err as ApiError).message);
    }
  }

  return (
    <form onSubmit={submit} aria-labelledby="password-title">
      <h2 id="password-title">Change password</h2>
      <label for="current-password">Current password</label>
      <input id="current-password" type="password" autocomplete="current-password" value={current} required
        onInput={(e) => setCurrent((e.target as HTMLInputElement).value)} />
      <label for="new-password">New password (10 characters or more)</label>
      <input id="new-password" type="password" autocomplete="new-password" value={next} required minLength={10}
        onInput={(e) => setNext((e.target as HTMLInputElement).value)} />
      {error && <p class="field-error" role="alert">{error}</p>}
      {message && <p class="notice" role="status">{message}</p>}
      <button type="submit">Change password</button>
    </form>
  );
}
