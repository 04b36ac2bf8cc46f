-- Supabase Row Level Security: where Supabase's API roles exist (anon, authenticated; service_role beside them),
-- a Supabase client (PostgREST, Realtime) reads phonefleet's tables only as the signed-in person may:
--   * anon reads nothing: every phonefleet table has RLS on, anon holds no privilege on any of them;
--   * authenticated only SELECTs (never INSERT, UPDATE or DELETE: changes go through phonefleet's API, which
--     audits them), and only the rows of the teams of the enabled person whose supabase_sub is the JWT's sub
--     (request.jwt.claims, as PostgREST and Realtime set it): teams, team_members, agents, devices, jobs,
--     assignments and their steps, artifacts and events, schedules; fellow team members' names and roles. A
--     person with the role admin reads every team's; a disabled person, or a user no person matches, nothing;
--     admins alone read the audit trail;
--   * secrets are no Supabase client's: people's password hash, email and Supabase id, sessions, personal and
--     admin tokens, agents' token hashes, sign-in attempts (table or column privileges withheld);
--   * service_role (BYPASSRLS in Supabase) keeps what Supabase granted it: it is the project's own key.
-- Supabase grants anon and authenticated everything on every new table (default privileges), so this revokes
-- all of it first and grants back only the SELECTs above.
-- phonefleet's own connection owns the tables and RLS is not FORCEd, so the server reads and writes as before.
-- Where the roles do not exist (plain PostgreSQL, the embedded one) this changes nothing. Idempotent, and it
-- takes no table lock once done: a database whose roles were made after this ran gets it at the server's next
-- start, or from `phonefleet-server supabase rls` (both run this same file again). A table added by a later
-- migration must get the same treatment there (a test fails for any table left without RLS).
DO $$
DECLARE
    schema_name text := current_schema();
    tbl text;
    expr text;
    seq regclass;
    cols text;
    ours text[] := ARRAY['admin_tokens', 'agent_job_pauses', 'agents', 'artifacts', 'assignment_steps', 'assignments',
                         'audit_events', 'device_events', 'devices', 'fleet_policy', 'job_events', 'jobs', 'people',
                         'person_sessions', 'person_tokens', 'scheduler_state', 'schedules', 'schema_migrations',
                         'sign_in_attempts', 'team_members', 'teams'];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon')
            OR NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        RETURN;
    END IF;

    -- Who the JWT is: SECURITY DEFINER, so they read people and team_members, which the caller cannot. An empty
    -- setting ('' once a transaction that set it ended) is no claims; request.jwt.claim.sub is PostgREST's older
    -- spelling.
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION phonefleet_rls_person() RETURNS bigint
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = %I, pg_temp AS $body$
            SELECT p.id FROM people p
            WHERE p.disabled_at IS NULL AND p.supabase_sub = coalesce(
                nullif(current_setting('request.jwt.claim.sub', true), ''),
                nullif(current_setting('request.jwt.claims', true), '')::json ->> 'sub')
        $body$ $f$, schema_name);
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION phonefleet_rls_admin() RETURNS boolean
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = %I, pg_temp AS $body$
            SELECT EXISTS (SELECT 1 FROM people WHERE id = phonefleet_rls_person() AND role = 'admin')
        $body$ $f$, schema_name);
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION phonefleet_rls_teams() RETURNS SETOF bigint
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = %I, pg_temp AS $body$
            SELECT t.id FROM teams t WHERE phonefleet_rls_admin()
            UNION
            SELECT m.team_id FROM team_members m WHERE m.person_id = phonefleet_rls_person()
        $body$ $f$, schema_name);
    REVOKE ALL ON FUNCTION phonefleet_rls_person(), phonefleet_rls_admin(), phonefleet_rls_teams() FROM PUBLIC;
    REVOKE ALL ON FUNCTION phonefleet_rls_person(), phonefleet_rls_admin(), phonefleet_rls_teams() FROM anon;
    GRANT EXECUTE ON FUNCTION phonefleet_rls_person(), phonefleet_rls_admin(), phonefleet_rls_teams() TO authenticated;

    FOREACH tbl IN ARRAY ours LOOP
        CONTINUE WHEN to_regclass(format('%I.%I', schema_name, tbl)) IS NULL;
        IF NOT (SELECT relrowsecurity FROM pg_class WHERE oid = format('%I.%I', schema_name, tbl)::regclass) THEN
            EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', tbl);  -- only when not yet: it locks the table
        END IF;
        EXECUTE format('REVOKE ALL ON TABLE %I FROM anon, authenticated', tbl);  -- column privileges go with it
        FOR seq IN
            SELECT d.objid::regclass FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
            WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
              AND d.refobjid = format('%I.%I', schema_name, tbl)::regclass
        LOOP
            EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM anon, authenticated', seq);
        END LOOP;
    END LOOP;

    -- Each readable table's rows: those of the caller's teams, directly or through the row they belong to (whose
    -- own policy applies inside the EXISTS, as the caller). The functions are wrapped in SELECT so they run once
    -- per query, not once per row.
    FOR tbl, expr IN
        SELECT * FROM (VALUES
            ('teams', 'id IN (SELECT phonefleet_rls_teams())'),
            ('team_members', 'team_id IN (SELECT phonefleet_rls_teams())'),
            ('agents', 'team_id IN (SELECT phonefleet_rls_teams())'),
            ('jobs', 'team_id IN (SELECT phonefleet_rls_teams())'),
            ('schedules', 'team_id IN (SELECT phonefleet_rls_teams())'),
            ('devices', 'EXISTS (SELECT 1 FROM agents a WHERE a.id = devices.agent_id)'),
            ('agent_job_pauses', 'EXISTS (SELECT 1 FROM agents a WHERE a.id = agent_job_pauses.agent_id)'),
            ('device_events', 'EXISTS (SELECT 1 FROM devices d WHERE d.id = device_events.device_id)'),
            ('assignments', 'EXISTS (SELECT 1 FROM jobs j WHERE j.id = assignments.job_id)'),
            ('job_events', 'EXISTS (SELECT 1 FROM jobs j WHERE j.id = job_events.job_id)'),
            ('assignment_steps', 'EXISTS (SELECT 1 FROM assignments a WHERE a.id = assignment_steps.assignment_id)'),
            ('artifacts', 'EXISTS (SELECT 1 FROM assignments a WHERE a.id = artifacts.assignment_id)'),
            ('people', 'id = (SELECT phonefleet_rls_person()) OR (SELECT phonefleet_rls_admin())'
                       ' OR EXISTS (SELECT 1 FROM team_members m WHERE m.person_id = people.id)'),
            ('audit_events', '(SELECT phonefleet_rls_admin())'),
            ('fleet_policy', '(SELECT phonefleet_rls_person()) IS NOT NULL'),
            ('scheduler_state', '(SELECT phonefleet_rls_person()) IS NOT NULL')
        ) AS readable (tbl, expr)
    LOOP
        CONTINUE WHEN to_regclass(format('%I.%I', schema_name, tbl)) IS NULL;
        IF NOT EXISTS (SELECT 1 FROM pg_policies
                       WHERE schemaname = schema_name AND tablename = tbl AND policyname = 'phonefleet_read') THEN
            EXECUTE format('CREATE POLICY phonefleet_read ON %I AS PERMISSIVE FOR SELECT TO authenticated USING (%s)',
                           tbl, expr);
        END IF;
        IF tbl IN ('agents', 'people') THEN
            SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO cols FROM pg_attribute
            WHERE attrelid = format('%I.%I', schema_name, tbl)::regclass AND attnum > 0 AND NOT attisdropped
              AND attname NOT IN ('token_hash', 'password_hash', 'email', 'supabase_sub');
            EXECUTE format('GRANT SELECT (%s) ON TABLE %I TO authenticated', cols, tbl);
        ELSE
            EXECUTE format('GRANT SELECT ON TABLE %I TO authenticated', tbl);
        END IF;
    END LOOP;
END
$$;
