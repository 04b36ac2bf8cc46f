-- Token lifecycle: agent tokens can be revoked (no token) or rotated (a new one); admin tokens are
-- named, unique by name, and revocable. Plain PostgreSQL, as 0001 (applies on Supabase as a non-superuser).

-- A revoked agent has no token; UNIQUE still holds (NULLs are distinct).
ALTER TABLE agents ALTER COLUMN token_hash DROP NOT NULL;
-- When its token was last revoked or rotated (null: never).
ALTER TABLE agents ADD COLUMN token_changed_at timestamptz;
-- Set by a revoke or rotate: the lease rescuer treats the agent as gone past its grace at its next run
-- (phones offline, open work lost), whatever its last heartbeat; a hello with a new token clears it.
ALTER TABLE agents ADD COLUMN retire_pending boolean NOT NULL DEFAULT false;
CREATE INDEX agents_retire_pending_idx ON agents (id) WHERE retire_pending;

-- Admin token names become unique. Older data dirs may hold several 'initial' rows (one per lost
-- admin_token file): later duplicates get their id appended. 'env' names the environment's token.
UPDATE admin_tokens t SET name = t.name || '-' || t.id
WHERE t.name = 'env' OR EXISTS (SELECT 1 FROM admin_tokens o WHERE o.name = t.name AND o.id < t.id);
ALTER TABLE admin_tokens ADD CONSTRAINT admin_tokens_name_key UNIQUE (name);
-- Updated at most once a minute per token, so a busy dashboard does not write on every request.
ALTER TABLE admin_tokens ADD COLUMN last_used_at timestamptz;
