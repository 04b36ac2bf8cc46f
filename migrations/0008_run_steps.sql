-- Run evidence (issue 12): each run's step timeline, and the crashes and ANRs its logcat showed.
-- Plain PostgreSQL, as 0001 (runs on Supabase unchanged).

-- One row per plan step a run reached, as its agent recorded it; written with the run's result, in the
-- same transaction. A late result (LATE_RESULT_RULE) replaces them. Steps never reached have no row.
CREATE TABLE assignment_steps (
    assignment_id bigint NOT NULL REFERENCES assignments(id) ON DELETE CASCADE,
    step_index    integer NOT NULL CHECK (step_index >= 0),
    type          text NOT NULL,
    name          text,
    started_at    timestamptz,
    finished_at   timestamptz,
    outcome       text NOT NULL CHECK (outcome IN ('completed', 'failed', 'timed_out', 'cancelled', 'not_run')),
    exit_code     integer,
    output_tail   text,          -- the last 8 KiB of what the step's commands printed
    error         text,
    PRIMARY KEY (assignment_id, step_index)
);

ALTER TABLE assignments ADD COLUMN crashes jsonb NOT NULL DEFAULT '[]';
