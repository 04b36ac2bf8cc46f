-- Supabase Realtime: where the supabase_realtime publication exists (every Supabase project has it), jobs,
-- assignments and devices join it, so Supabase clients can subscribe to their changes. On plain PostgreSQL
-- (no such publication) this changes nothing. Idempotent and lock-free when there is nothing to do:
-- `phonefleet-server supabase realtime` runs this same file again, for a publication created after this
-- migration ran (a server start only warns of it).
--
-- Replica identity: Realtime sends the new row of an INSERT or UPDATE whatever the identity, and its
-- filters (column=eq.value) apply to that new row; the identity decides only what an UPDATE or DELETE
-- carries of the OLD row. jobs (a few writes per job) get FULL, so a subscriber sees which status a job
-- left and the whole job it deleted. assignments and devices are the claim's hot path (thousands of rows
-- per claim; 0011 keeps their updates HOT): FULL would write every old row into the WAL again, for all of
-- them, with no subscriber needing it, so they keep DEFAULT (the primary key): a delete says which row.
-- (With RLS on, Realtime sends only the primary key of an old row anyway.)
DO $$
DECLARE
    missing text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'supabase_realtime') THEN
        RETURN;
    END IF;
    IF (SELECT puballtables FROM pg_publication WHERE pubname = 'supabase_realtime') THEN
        RETURN;  -- FOR ALL TABLES: ours are in it already
    END IF;
    FOR missing IN
        SELECT t FROM unnest(ARRAY['jobs', 'assignments', 'devices']) AS t
        WHERE NOT EXISTS (SELECT 1 FROM pg_publication_tables p
                          WHERE p.pubname = 'supabase_realtime' AND p.schemaname = current_schema() AND p.tablename = t)
    LOOP
        BEGIN
            EXECUTE format('ALTER PUBLICATION supabase_realtime ADD TABLE %I', missing);
        EXCEPTION WHEN insufficient_privilege THEN
            -- The publication belongs to another role (Supabase's is the postgres role's, which runs the
            -- migrations, so there this does not happen): say so, and leave the migration applicable.
            RAISE WARNING 'phonefleet: cannot add % to publication supabase_realtime (not its owner); '
                          'run as its owner: ALTER PUBLICATION supabase_realtime ADD TABLE %', missing, missing;
        END;
    END LOOP;
    IF (SELECT relreplident FROM pg_class WHERE oid = 'jobs'::regclass) <> 'f' THEN
        ALTER TABLE jobs REPLICA IDENTITY FULL;  -- only when not yet: it locks the table
    END IF;
END
$$;
