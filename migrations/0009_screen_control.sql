-- Remote control of a phone's screen: an operator controlling a phone pauses it (paused_by 'control'), with
-- the reason shown beside the state ("in use by <who>"). Plain PostgreSQL (runs on Supabase unchanged).
ALTER TABLE devices DROP CONSTRAINT IF EXISTS devices_paused_by_check;
ALTER TABLE devices ADD CONSTRAINT devices_paused_by_check CHECK (paused_by IN ('agent', 'server', 'control'));
ALTER TABLE devices ADD COLUMN pause_reason text;
