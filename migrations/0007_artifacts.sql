-- A run's files (screenshots, logcat spans, pulled files): what the agent said it made (with the run's result)
-- and whether its verified bytes arrived. Plain PostgreSQL, as 0001 (runs on Supabase unchanged).
CREATE TABLE artifacts (
    id              bigserial PRIMARY KEY,
    assignment_id   bigint NOT NULL REFERENCES assignments(id) ON DELETE CASCADE,
    device_id       bigint,                               -- the run's phone, for its gallery
    name            text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('screenshot', 'logcat', 'file')),
    bytes           bigint NOT NULL CHECK (bytes >= 0),
    sha256          text NOT NULL,
    step_index      integer,
    taken_at        timestamptz,
    status          text NOT NULL DEFAULT 'uploading' CHECK (status IN ('uploading', 'stored', 'deleted')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    stored_at       timestamptz,
    deleted_at      timestamptz,
    deleted_reason  text,
    UNIQUE (assignment_id, name)                          -- also the index for listing a run's artifacts
);
CREATE INDEX artifacts_device_idx ON artifacts (device_id, kind, id);
-- Retention: the oldest kept artifacts first (by age, and by total size).
CREATE INDEX artifacts_retention_idx ON artifacts (created_at, id) WHERE status <> 'deleted';
