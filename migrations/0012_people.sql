-- People with roles, their dashboard sessions and personal API tokens, and sign-in attempt counts.
-- Plain PostgreSQL, as 0001 (applies on Supabase as a non-superuser).

-- A person signs in with a name and a password (argon2id hash); their role is the least they need:
-- viewer reads, operator also runs jobs and phones, admin also manages agents, people and policies.
CREATE TABLE people (
    id                  bigserial PRIMARY KEY,
    name                text NOT NULL UNIQUE,
    password_hash       text NOT NULL,
    role                text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    disabled_at         timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    password_changed_at timestamptz NOT NULL DEFAULT now()
);

-- A signed-in browser: the cookie's secret is kept only as its SHA-256, with the session's CSRF token.
-- A session ends on sign-out, when its person is disabled, or once expires_at passes (pushed on use).
CREATE TABLE person_sessions (
    id           bigserial PRIMARY KEY,
    person_id    bigint NOT NULL REFERENCES people (id) ON DELETE CASCADE,
    token_hash   text NOT NULL UNIQUE,
    csrf_token   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX person_sessions_person_idx ON person_sessions (person_id);

-- Personal API tokens for the CLI and scripts: named per person, shown once, revocable; they act with
-- their owner's role as it stands, and stop working while the owner is disabled.
CREATE TABLE person_tokens (
    id           bigserial PRIMARY KEY,
    person_id    bigint NOT NULL REFERENCES people (id) ON DELETE CASCADE,
    name         text NOT NULL,
    token_hash   text NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    UNIQUE (person_id, name)
);

-- Failed sign-ins counted per account ('name:<name>') and per address ('addr:<ip>') over a window,
-- here rather than in memory so the limit holds across every server node.
CREATE TABLE sign_in_attempts (
    key          text PRIMARY KEY,
    failures     integer NOT NULL DEFAULT 0,
    window_start timestamptz NOT NULL DEFAULT now()
);
