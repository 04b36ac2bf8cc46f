-- The fan-out hot path inserts thousands of assignments per job; PostgreSQL checks each foreign key
-- row by row (about 6 ms per 1,000 rows each). The distributor only ever inserts device and agent ids
-- it has just read and locked, and the application never deletes devices or agents, so these two
-- checks buy nothing but time. The job_id key stays: deleting a job cascades to its assignments.
ALTER TABLE assignments DROP CONSTRAINT IF EXISTS assignments_device_id_fkey;
ALTER TABLE assignments DROP CONSTRAINT IF EXISTS assignments_agent_id_fkey;
