-- Schema and seed rows. Idempotent: applying it again changes nothing.

CREATE TABLE IF NOT EXISTS users (
    id          BIGSERIAL PRIMARY KEY,
    name        VARCHAR(100) NOT NULL,
    email       VARCHAR(100) NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One account per address, whatever its letter case.
CREATE UNIQUE INDEX IF NOT EXISTS users_email_key ON users (lower(email));

-- Seed rows, each added only while its email is free (no sequence value is
-- spent when init.sql runs again).
INSERT INTO users (name, email)
SELECT seed.name, seed.email
FROM (VALUES ('Alice', 'alice@example.com'),
             ('Bob', 'bob@example.com'),
             ('Charlie', 'charlie@example.com')) AS seed (name, email)
WHERE NOT EXISTS (
    SELECT 1
    FROM users
    WHERE lower(users.email) = seed.email
)
ON CONFLICT DO NOTHING;
