-- The claim marks thousands of phones busy and inserts their assignments in one statement. Two costs
-- in it bought nothing:
--
-- 1. devices_idle_idx: its predicate (state = 'idle') names the column every claim and release changes,
--    so none of those updates could be HOT: each wrote a new row version on another page and an entry
--    in every index of devices (3 per phone claimed). No query ordered by it (the claim orders by
--    idle_since NULLS FIRST, which it does not serve); it only found idle phones among all of them,
--    which a scan of the small devices table does too. Without it, a claim or release changes no
--    indexed column. Half of each page is kept free so the new row versions fit beside the old ones.
--    (Existing pages keep their fill until rewritten; VACUUM FULL devices applies it at once.)
DROP INDEX IF EXISTS devices_idle_idx;
ALTER TABLE devices SET (fillfactor = 50);

-- 2. assignments_job_id_fkey: PostgreSQL checks a foreign key row by row, one lookup and row lock of
--    the job per assignment inserted (a third of the claim at 10,000 phones). Every insert into
--    assignments names the job whose row it holds locked (the claim locks it FOR UPDATE), as 0002
--    says of the device and agent keys. What the key gave besides, deleting a job deletes its
--    assignments (and theirs, which cascade from assignments), a statement trigger keeps.
ALTER TABLE assignments DROP CONSTRAINT IF EXISTS assignments_job_id_fkey;

CREATE FUNCTION jobs_delete_assignments() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM assignments a USING deleted_jobs g WHERE a.job_id = g.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_delete_assignments AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS deleted_jobs FOR EACH STATEMENT EXECUTE FUNCTION jobs_delete_assignments();
