-- Schema and seed rows. Idempotent: applying it again changes nothing.

CREATE TABLE IF NOT EXISTS users (
    id          BIGSERIAL PRIMARY KEY,
    name        VARCHAR(100) NOT NULL,
    email       VARCHAR(100) NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Accounts (POST /api/user/register) are users with a password; no API
-- ever returns this column.
ALTER TABLE users ADD COLUMN IF NOT EXISTS password_hash TEXT;

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

-- Phone -> address book. The key is the number in RFC 3966 form
-- (tel:+44-7911-123456), so two spellings of one number are one row.
CREATE TABLE IF NOT EXISTS customer_addresses (
    phone       VARCHAR(64) PRIMARY KEY,
    address     VARCHAR(255) NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS incidents (
    id          BIGSERIAL PRIMARY KEY,
    message     VARCHAR(1000) NOT NULL,
    status      VARCHAR(16) NOT NULL CHECK (status IN ('new', 'completed', 'failed')),
    source      VARCHAR(16) NOT NULL CHECK (source IN ('operator', 'monitoring', 'partner')),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Lists are newest first, optionally filtered by status, source or both.
CREATE INDEX IF NOT EXISTS incidents_newest ON incidents (created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS incidents_status_newest ON incidents (status, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS incidents_source_newest ON incidents (source, created_at DESC, id DESC);

CREATE TABLE IF NOT EXISTS orders (
    id            UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    -- RESTRICT: deleting a user with orders is refused (409), nothing is lost.
    user_id       BIGINT NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    items         JSONB NOT NULL,
    total_price   NUMERIC(14, 2) NOT NULL CHECK (total_price >= 0),
    status        VARCHAR(16) NOT NULL DEFAULT 'PENDING'
                  CHECK (status IN ('PENDING', 'PAID', 'SHIPPED', 'CANCELED')),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    processed_at  TIMESTAMPTZ
);

CREATE INDEX IF NOT EXISTS orders_user_newest ON orders (user_id, created_at DESC, id DESC);
-- The worker's recovery sweep looks for orders it has not processed yet.
CREATE INDEX IF NOT EXISTS orders_unprocessed ON orders (created_at) WHERE processed_at IS NULL;
