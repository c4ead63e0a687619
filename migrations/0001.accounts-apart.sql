-- Sign-in accounts apart from the public users, which anyone may change.
-- Before, an account was a users row with a password_hash: each moves to
-- accounts under the same id, so its orders keep pointing at it.

CREATE TABLE accounts (
    id             BIGSERIAL PRIMARY KEY,
    name           VARCHAR(100) NOT NULL,
    email          VARCHAR(100) NOT NULL,
    password_hash  TEXT NOT NULL,
    token_version  INTEGER NOT NULL DEFAULT 0,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX accounts_email_key ON accounts (lower(email));

INSERT INTO accounts (id, name, email, password_hash, created_at)
SELECT id, name, email, password_hash, created_at FROM users WHERE password_hash IS NOT NULL;

SELECT setval(pg_get_serial_sequence('accounts', 'id'), (SELECT coalesce(max(id), 0) + 1 FROM accounts), false);

ALTER TABLE orders DROP CONSTRAINT orders_user_id_fkey;
ALTER TABLE orders ADD CONSTRAINT orders_user_id_fkey
    FOREIGN KEY (user_id) REFERENCES accounts (id) ON DELETE CASCADE;

DELETE FROM users WHERE password_hash IS NOT NULL;
ALTER TABLE users DROP COLUMN password_hash;
