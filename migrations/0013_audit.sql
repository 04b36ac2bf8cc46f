-- The audit trail: every change made by a person, token, agent or the CLI, with who, when, what, and the
-- fields that changed (before and after). Append-only, enforced here rather than in the application:
-- triggers refuse UPDATE, DELETE and TRUNCATE, so neither the API, a bug nor a careless psql session can
-- rewrite it. Plain PostgreSQL, owned by the migrating role (fine as Supabase's non-superuser postgres).
CREATE TABLE audit_events (
    id           bigserial PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    actor_kind   text NOT NULL CHECK (actor_kind IN ('person', 'token', 'agent', 'cli', 'system')),
    actor_id     text,                -- the person's, token's or agent's id; null for env token, cli, system
    actor_name   text NOT NULL,
    team_id      bigint,              -- the team the object belongs to, once teams exist
    action       text NOT NULL,       -- object kind and verb: job.pause, agent.token.rotate, ...
    object_kind  text NOT NULL,
    object_id    text,                -- null for singletons (the fleet policy, the scheduler switch)
    before       jsonb,               -- only the fields that changed, as they were; null for a creation
    after        jsonb,               -- ... and as they became; null for a deletion
    via          text NOT NULL DEFAULT 'system' CHECK (via IN ('rest', 'socket', 'cli', 'system')),
    address      text                 -- the caller's address, when it came over the network
);
CREATE INDEX audit_events_at_idx ON audit_events (at);
CREATE INDEX audit_events_actor_idx ON audit_events (actor_name, id);
CREATE INDEX audit_events_object_idx ON audit_events (object_kind, object_id, id);
CREATE INDEX audit_events_action_idx ON audit_events (action, id);
CREATE INDEX audit_events_team_idx ON audit_events (team_id, id) WHERE team_id IS NOT NULL;

CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_events_no_change BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();
