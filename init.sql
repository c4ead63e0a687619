-- Schema and seed rows. Idempotent: applying it again changes nothing.

CREATE TABLE IF NOT EXISTS users (
    id          BIGSERIAL PRIMARY KEY,
    name        VARCHAR(100) NOT NULL,
    email       VARCHAR(100) NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One account per address, whatever its letter case.
CREATE UNIQUE INDEX IF NOT EXISTS users_email_key ON users (lower(email));

INSERT INTO users (name, email)
VALUES ('Alice', 'alice@example.com'),
       ('Bob', 'bob@example.com'),
       ('Charlie', 'charlie@example.com')
ON CONFLICT DO NOTHING;
