-- Supabase Auth users as phonefleet people: a person is matched by their Supabase user id (the JWT's sub), or
-- on their first Supabase sign-in by the email an admin gave them; one without either is made at that first
-- sign-in. Their role and teams stay phonefleet's own. Plain PostgreSQL (applies on Supabase as a non-superuser).
ALTER TABLE people ADD COLUMN supabase_sub text UNIQUE;
ALTER TABLE people ADD COLUMN email text;
CREATE UNIQUE INDEX people_email_key ON people (lower(email)) WHERE email IS NOT NULL;
