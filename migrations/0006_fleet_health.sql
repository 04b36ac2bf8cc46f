-- Fleet health: what the agent's probe found, quarantine, recovery, the policy that decides them, and each
-- phone's append-only event timeline. Plain PostgreSQL, as 0001 (runs on Supabase unchanged).

-- Two new states: quarantined (policy or operator; leaves only by a release or a passed self-test) and
-- recovering (the agent's recovery ladder runs on it). Neither gets work: only idle phones do.
ALTER TABLE devices DROP CONSTRAINT devices_state_check;
ALTER TABLE devices ADD CONSTRAINT devices_state_check
    CHECK (state IN ('idle', 'busy', 'paused', 'offline', 'unhealthy', 'quarantined', 'recovering'));

ALTER TABLE devices
    ADD COLUMN health jsonb,                          -- the probe's last facts, as the agent reported them
    ADD COLUMN broken text[] NOT NULL DEFAULT '{}',   -- one reason per threshold broken
    ADD COLUMN unhealthy_since timestamptz,           -- set while not healthy (connected): the policy's clock
    ADD COLUMN quarantined_at timestamptz,
    ADD COLUMN quarantine_reason text,
    ADD COLUMN quarantined_by text,
    ADD COLUMN selftest_at timestamptz,               -- the last self-test asked of a quarantined phone
    ADD COLUMN released_at timestamptz,               -- the policy judges only what happened since
    ADD COLUMN recovering text;                       -- the recovery rung the agent runs now, if any

CREATE INDEX devices_quarantined_idx ON devices (quarantined_at) WHERE quarantined_at IS NOT NULL;
CREATE INDEX devices_unhealthy_idx ON devices (unhealthy_since) WHERE unhealthy_since IS NOT NULL;

-- Every change in a phone's life, with who or what caused it. Append-only: the trigger refuses any update
-- or delete, so nothing in the API (or a bug) can rewrite a phone's history.
CREATE TABLE device_events (
    id          bigserial PRIMARY KEY,
    device_id   bigint NOT NULL REFERENCES devices(id),
    kind        text NOT NULL,
    actor       text NOT NULL,
    reason      text,
    data        jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX device_events_device_idx ON device_events (device_id, id);
CREATE INDEX device_events_disconnects_idx ON device_events (device_id, created_at) WHERE kind = 'disconnected';

CREATE FUNCTION device_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'device_events is append-only';
END $$;
CREATE TRIGGER device_events_append_only BEFORE UPDATE OR DELETE ON device_events
    FOR EACH ROW EXECUTE FUNCTION device_events_append_only();

-- The fleet's health thresholds and quarantine policy: one row; what it holds overrides the defaults
-- (protocol.models.FleetPolicy), so a default changed in a release reaches fleets that never edited it.
CREATE TABLE fleet_policy (
    id          integer PRIMARY KEY CHECK (id = 1),
    policy      jsonb NOT NULL DEFAULT '{}',
    changed_at  timestamptz NOT NULL DEFAULT now(),
    changed_by  text
);
INSERT INTO fleet_policy (id) VALUES (1);

-- A phone's last runs, newest first (its reliability record and the failure streak).
CREATE INDEX assignments_device_finished_idx ON assignments (device_id, finished_at DESC) WHERE finished_at IS NOT NULL;
