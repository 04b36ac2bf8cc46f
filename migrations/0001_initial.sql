-- phonefleet initial schema. Plain PostgreSQL (13+), no extensions and no superuser-only
-- features, so the same file applies to a Supabase project.

CREATE TABLE agents (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 100),
    token_hash    text NOT NULL UNIQUE,
    hostname      text,
    version       text,
    status        text NOT NULL DEFAULT 'offline' CHECK (status IN ('online', 'offline', 'paused')),
    paused        boolean NOT NULL DEFAULT false,
    max_running   integer CHECK (max_running IS NULL OR max_running > 0),
    last_seen_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE admin_tokens (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL,
    token_hash  text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE devices (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent_id         bigint NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    serial           text NOT NULL,
    model            text,
    android_version  text,
    tags             text[] NOT NULL DEFAULT '{}',
    battery          integer,
    screen_on        boolean,
    health_reason    text,
    state            text NOT NULL DEFAULT 'offline'
                     CHECK (state IN ('idle', 'busy', 'paused', 'offline', 'unhealthy')),
    paused_by        text CHECK (paused_by IN ('agent', 'server')),
    connected        boolean NOT NULL DEFAULT false,
    healthy          boolean NOT NULL DEFAULT true,
    idle_since       timestamptz,
    last_seen_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (agent_id, serial)
);
CREATE INDEX devices_idle_idx ON devices (idle_since, id) WHERE state = 'idle';

CREATE TABLE jobs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    title            text NOT NULL,
    plan             jsonb NOT NULL,
    target_type      text NOT NULL CHECK (target_type IN ('all_devices', 'percentage', 'device_count')),
    target_value     integer,
    target_count     integer CHECK (target_count IS NULL OR target_count >= 0),
    filters          jsonb NOT NULL DEFAULT '{}',
    priority         integer NOT NULL DEFAULT 0,
    status           text NOT NULL
                     CHECK (status IN ('scheduled', 'active', 'paused', 'completed', 'cancelled')),
    timeout_sec      integer NOT NULL,
    max_retries      integer NOT NULL DEFAULT 0,
    run_at           timestamptz,
    depends_on       bigint[] NOT NULL DEFAULT '{}',
    assigned_count   integer NOT NULL DEFAULT 0,
    completed_count  integer NOT NULL DEFAULT 0,
    failed_count     integer NOT NULL DEFAULT 0,
    retry_pending    integer NOT NULL DEFAULT 0,
    allow_shell      boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    CHECK (assigned_count >= 0 AND completed_count >= 0 AND failed_count >= 0 AND retry_pending >= 0)
);
CREATE INDEX jobs_fillable_idx ON jobs (priority DESC, created_at, id) WHERE status = 'active';
CREATE INDEX jobs_status_idx ON jobs (status, id);

CREATE TABLE assignments (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id       bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    device_id    bigint NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    agent_id     bigint NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'delivered', 'running', 'paused', 'completed',
                                   'failed', 'cancelled', 'timed_out')),
    attempt      integer NOT NULL DEFAULT 1,
    lease_until  timestamptz,
    progress     real NOT NULL DEFAULT 0,
    step_index   integer,
    result       jsonb,
    error        text,
    error_code   text,
    retry_at     timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    finished_at  timestamptz,
    UNIQUE (job_id, device_id)
);
CREATE INDEX assignments_open_agent_idx ON assignments (agent_id, id)
    WHERE status IN ('pending', 'delivered', 'running', 'paused');
CREATE INDEX assignments_open_device_idx ON assignments (device_id)
    WHERE status IN ('pending', 'delivered', 'running');
CREATE INDEX assignments_job_status_idx ON assignments (job_id, status);
CREATE INDEX assignments_lease_idx ON assignments (lease_until) WHERE status = 'running';
CREATE INDEX assignments_retry_idx ON assignments (retry_at) WHERE retry_at IS NOT NULL;
CREATE INDEX assignments_status_idx ON assignments (status, id);

-- An agent's operator may stop one job on that agent's phones only.
CREATE TABLE agent_job_pauses (
    agent_id    bigint NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    job_id      bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, job_id)
);

CREATE TABLE job_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      bigint REFERENCES jobs (id) ON DELETE CASCADE,
    kind        text NOT NULL,
    actor       text NOT NULL,
    data        jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_events_job_idx ON job_events (job_id, id);
