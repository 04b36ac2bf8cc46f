-- Fault accounting: a slot's attempts are linked, a run cut short by an agent crash is said so, and a
-- job chooses what an interrupted run means. Plain PostgreSQL, as 0001.

-- The attempts of one slot: a retry points at the slot's first attempt (NULL on a first attempt,
-- whose own id names the slot). A late result for an attempt the server declared lost settles its
-- slot once, whatever became of the retry made meanwhile. Partial index: first attempts, the
-- fan-out's hot path, are not indexed.
ALTER TABLE assignments ADD COLUMN slot_id bigint;
CREATE INDEX assignments_slot_idx ON assignments (slot_id) WHERE slot_id IS NOT NULL;

-- A run the agent had started when it crashed is a failure with error_code 'interrupted', retried per
-- max_retries ('fail', the default), or run again from its first step on the same phone ('rerun'),
-- counted here so no run happens twice without a record of both.
ALTER TABLE jobs ADD COLUMN on_interrupt text NOT NULL DEFAULT 'fail' CHECK (on_interrupt IN ('fail', 'rerun'));
ALTER TABLE assignments ADD COLUMN reruns integer NOT NULL DEFAULT 0 CHECK (reruns >= 0);

-- One phone, one driver: an agent may not claim a phone another connected agent drives (two agents on
-- one adb server both see every phone). The claim checks connected phones by serial.
CREATE INDEX devices_connected_serial_idx ON devices (serial) WHERE connected;

-- Jobs waiting for phones that are not there: an open slot, and no connected phone they may run on
-- ('starved'). A fill pass skips them at the index, so a backlog of thousands costs it nothing; a phone
-- that connects, comes back or is let go un-starves the jobs it could serve, and the maintenance sweep
-- re-checks the backlog in bounded batches.
ALTER TABLE jobs ADD COLUMN starved boolean NOT NULL DEFAULT false;
CREATE INDEX jobs_open_idx ON jobs (priority DESC, created_at, id) WHERE status = 'active' AND NOT starved;
CREATE INDEX jobs_starved_idx ON jobs (id) WHERE status = 'active' AND starved;
