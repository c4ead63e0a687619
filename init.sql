-- The schema and seed rows of a fresh database: migrate.py gives it to an
-- empty one, and brings a database of an earlier release to the same schema
-- with migrations/. Idempotent: applying it again changes nothing.

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

-- Lists are newest first (id descending: ids grow with every insert),
-- optionally filtered by status, source or both: one index per filter, so the
-- first page costs the same at a thousand rows or a million.
DROP INDEX IF EXISTS incidents_newest;
DROP INDEX IF EXISTS incidents_status_newest;
DROP INDEX IF EXISTS incidents_source_newest;
CREATE INDEX IF NOT EXISTS incidents_status_id ON incidents (status, id DESC);
CREATE INDEX IF NOT EXISTS incidents_source_id ON incidents (source, id DESC);
CREATE INDEX IF NOT EXISTS incidents_status_source_id ON incidents (status, source, id DESC);

-- Sign-in accounts (/api/user): apart from the public users above, which
-- anyone may change. No API ever returns password_hash.
CREATE TABLE IF NOT EXISTS accounts (
    id             BIGSERIAL PRIMARY KEY,
    name           VARCHAR(100) NOT NULL,
    email          VARCHAR(100) NOT NULL,
    password_hash  TEXT NOT NULL,
    -- Raised by every change of email or password. A token carries the
    -- version it was issued under and is refused once it differs.
    token_version  INTEGER NOT NULL DEFAULT 0,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX IF NOT EXISTS accounts_email_key ON accounts (lower(email));

CREATE TABLE IF NOT EXISTS orders (
    id            UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    -- The account that placed it (the API says user_id); an account deleted
    -- by its owner takes its orders with it.
    user_id       BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
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

-- The first answer to each POST sent with an Idempotency-Key
-- (infra/idempotency.py), so that a retry gets it again instead of a second
-- write. Each row is written in the transaction of the write it answers: the
-- two are kept, or lost, together. Keys are unique per scope: an account
-- ('account 7') or, for anonymous routes, the route ('POST /users'). The
-- fingerprint is an HMAC of the request, so a retry with another body is told
-- apart. The worker purges rows older than IDEMPOTENCY_KEY_TTL.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    fingerprint  BYTEA NOT NULL,
    status       SMALLINT NOT NULL,
    headers      JSONB NOT NULL,
    body         TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);

CREATE INDEX IF NOT EXISTS idempotency_keys_created_at ON idempotency_keys (created_at);

-- Row counts kept by triggers, so a list's total costs one indexed lookup
-- instead of count(*) over the whole table. Statement-level triggers with
-- transition tables: a bulk insert updates each counter once.
CREATE TABLE IF NOT EXISTS row_counts (
    name  TEXT PRIMARY KEY,
    n     BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS incident_counts (
    status  VARCHAR(16) NOT NULL,
    source  VARCHAR(16) NOT NULL,
    n       BIGINT NOT NULL,
    PRIMARY KEY (status, source)
);

CREATE OR REPLACE FUNCTION count_users() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE row_counts SET n = n + (SELECT count(*) FROM changed_rows) WHERE name = 'users';
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE row_counts SET n = n - (SELECT count(*) FROM changed_rows) WHERE name = 'users';
    ELSE  -- TRUNCATE
        UPDATE row_counts SET n = 0 WHERE name = 'users';
    END IF;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE TRIGGER users_counted_insert AFTER INSERT ON users
    REFERENCING NEW TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION count_users();
CREATE OR REPLACE TRIGGER users_counted_delete AFTER DELETE ON users
    REFERENCING OLD TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION count_users();
CREATE OR REPLACE TRIGGER users_counted_truncate AFTER TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION count_users();

-- Adds the rows of `added` and subtracts those of `removed`, per (status, source).
CREATE OR REPLACE FUNCTION count_incidents() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM incident_counts;
        RETURN NULL;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO incident_counts (status, source, n)
        SELECT status, source, count(*) FROM added GROUP BY status, source
        ON CONFLICT (status, source) DO UPDATE SET n = incident_counts.n + EXCLUDED.n;
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        UPDATE incident_counts AS c
        SET n = c.n - r.n
        FROM (SELECT status, source, count(*) AS n FROM removed GROUP BY status, source) AS r
        WHERE c.status = r.status AND c.source = r.source;
    END IF;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE TRIGGER incidents_counted_insert AFTER INSERT ON incidents
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION count_incidents();
CREATE OR REPLACE TRIGGER incidents_counted_update AFTER UPDATE ON incidents
    REFERENCING OLD TABLE AS removed NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION count_incidents();
CREATE OR REPLACE TRIGGER incidents_counted_delete AFTER DELETE ON incidents
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION count_incidents();
CREATE OR REPLACE TRIGGER incidents_counted_truncate AFTER TRUNCATE ON incidents
    FOR EACH STATEMENT EXECUTE FUNCTION count_incidents();

-- First run on a database that already has rows: start the counters from them.
INSERT INTO row_counts (name, n)
SELECT 'users', count(*) FROM users
ON CONFLICT (name) DO NOTHING;

INSERT INTO incident_counts (status, source, n)
SELECT status, source, count(*) FROM incidents
WHERE NOT EXISTS (SELECT 1 FROM incident_counts)
GROUP BY status, source
ON CONFLICT (status, source) DO NOTHING;

-- Changes of cached tables, for the cache relay (cache/relay.py), which applies them
-- to both cache levels and deletes them. Triggers note them inside the writing
-- transaction, so a change is noted exactly when it commits, whoever makes it:
-- the API, the worker, psql or a migration. The key is the row's primary key
-- as text, which is the cached item's id (cache/resources.py).
CREATE TABLE IF NOT EXISTS cache_changes (
    id          BIGSERIAL PRIMARY KEY,
    table_name  TEXT NOT NULL,
    row_key     TEXT NOT NULL,
    noted_at    TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);

-- Notes the keys a statement changed. A session that sets api.report_changes
-- (the app's, infra/db.py) is also told them at once, as a notice, so the request
-- that wrote can invalidate L2 before it answers (cache/changes.py).
CREATE OR REPLACE FUNCTION note_cache_changes() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    key_column CONSTANT TEXT := TG_ARGV[0];
    keys TEXT[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(to_jsonb(r) ->> key_column) INTO keys FROM new_rows AS r;
    ELSIF TG_OP = 'UPDATE' THEN
        SELECT array_agg(DISTINCT k) INTO keys
        FROM (SELECT to_jsonb(r) ->> key_column FROM old_rows AS r
              UNION ALL
              SELECT to_jsonb(r) ->> key_column FROM new_rows AS r) AS changed (k);
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(to_jsonb(r) ->> key_column) INTO keys FROM old_rows AS r;
    ELSE  -- TRUNCATE, before it runs: the rows it removes are still there
        EXECUTE format('SELECT array_agg(%I::text) FROM %I.%I', key_column, TG_TABLE_SCHEMA, TG_TABLE_NAME)
        INTO keys;
    END IF;
    IF keys IS NULL THEN
        RETURN NULL;
    END IF;
    INSERT INTO cache_changes (table_name, row_key)
    SELECT TG_TABLE_NAME, unnest(keys);
    IF current_setting('api.report_changes', true) = 'on' THEN
        RAISE NOTICE 'cache changes %', json_build_object('table', TG_TABLE_NAME, 'keys', keys);
    END IF;
    RETURN NULL;
END;
$$;

-- The cached tables and their keys. Transition tables allow one event per
-- trigger, hence one statement trigger per event and table.
DO $$
DECLARE
    cached RECORD;
    event RECORD;
BEGIN
    FOR cached IN
        SELECT * FROM (VALUES ('users', 'id'),
                              ('customer_addresses', 'phone'),
                              ('incidents', 'id'),
                              ('orders', 'id')) AS t (table_name, key_column)
    LOOP
        FOR event IN
            SELECT * FROM (VALUES ('insert', 'AFTER INSERT', 'REFERENCING NEW TABLE AS new_rows'),
                                  ('update', 'AFTER UPDATE', 'REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows'),
                                  ('delete', 'AFTER DELETE', 'REFERENCING OLD TABLE AS old_rows'),
                                  -- before: the rows it removes are still there to note
                                  ('truncate', 'BEFORE TRUNCATE', '')) AS e (name, timing, transition)
        LOOP
            EXECUTE format('CREATE OR REPLACE TRIGGER %I %s ON %I %s '
                           'FOR EACH STATEMENT EXECUTE FUNCTION note_cache_changes(%L)',
                           cached.table_name || '_noted_' || event.name, event.timing, cached.table_name,
                           event.transition, cached.key_column);
        END LOOP;
    END LOOP;
END;
$$;
