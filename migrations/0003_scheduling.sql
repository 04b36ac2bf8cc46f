-- Scheduling and job control: blocked dependents, concurrency limits, requeue, recurring schedules,
-- and a cluster-wide distribution switch. Plain PostgreSQL, as 0001.

-- A job whose prerequisite failed or was cancelled is 'blocked', with the reason.
ALTER TABLE jobs DROP CONSTRAINT IF EXISTS jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check
    CHECK (status IN ('scheduled', 'active', 'paused', 'completed', 'cancelled', 'blocked'));
ALTER TABLE jobs ADD COLUMN blocked_reason text;
-- At most this many of the job's assignments occupy phones at once (null: no limit).
ALTER TABLE jobs ADD COLUMN max_parallel integer CHECK (max_parallel IS NULL OR max_parallel > 0);
-- When the job was opened for distribution: the start of its queue wait.
ALTER TABLE jobs ADD COLUMN activated_at timestamptz;
UPDATE jobs SET activated_at = created_at WHERE status <> 'scheduled';

-- Requeue: an ended assignment that was requeued is 'superseded'; it no longer holds its phone's
-- "one run per phone per job" place, so the same phone may run the job again.
-- A failed assignment whose slot another phone took over is 'retried' (not a dead letter).
ALTER TABLE assignments ADD COLUMN superseded boolean NOT NULL DEFAULT false;
ALTER TABLE assignments ADD COLUMN retried boolean NOT NULL DEFAULT false;
ALTER TABLE assignments DROP CONSTRAINT IF EXISTS assignments_job_id_device_id_key;
CREATE UNIQUE INDEX assignments_job_device_key ON assignments (job_id, device_id) WHERE NOT superseded;
CREATE INDEX assignments_finished_idx ON assignments (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX assignments_started_idx ON assignments (started_at) WHERE started_at IS NOT NULL;

CREATE TABLE schedules (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    template        jsonb NOT NULL,
    cron            text,
    timezone        text NOT NULL DEFAULT 'UTC',
    interval_sec    integer CHECK (interval_sec IS NULL OR interval_sec > 0),
    misfire_policy  text NOT NULL DEFAULT 'run_once' CHECK (misfire_policy IN ('skip', 'run_once')),
    enabled         boolean NOT NULL DEFAULT true,
    next_run_at     timestamptz,
    last_run_at     timestamptz,
    last_job_id     bigint,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((cron IS NULL) <> (interval_sec IS NULL))
);
CREATE INDEX schedules_due_idx ON schedules (next_run_at) WHERE enabled;

-- Each firing creates one job linked to its schedule; the unique key makes a firing happen once,
-- however many server processes reach it.
ALTER TABLE jobs ADD COLUMN schedule_id bigint REFERENCES schedules (id) ON DELETE SET NULL;
ALTER TABLE jobs ADD COLUMN scheduled_for timestamptz;
CREATE UNIQUE INDEX jobs_schedule_firing_key ON jobs (schedule_id, scheduled_for)
    WHERE schedule_id IS NOT NULL AND scheduled_for IS NOT NULL;

-- One row: is distribution running? Stopped means no new assignments on any node.
CREATE TABLE scheduler_state (
    id          integer PRIMARY KEY CHECK (id = 1),
    running     boolean NOT NULL DEFAULT true,
    changed_at  timestamptz NOT NULL DEFAULT now(),
    changed_by  text
);
INSERT INTO scheduler_state (id, running) VALUES (1, true) ON CONFLICT (id) DO NOTHING;
