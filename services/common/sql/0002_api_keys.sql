-- Per-account API keys. Only a SHA-256 of the key's secret is stored: the secret is shown once,
-- when the key is created. The secret has 256 bits of entropy, so a fast hash is enough (a slow
-- password hash protects guessable secrets, which these are not).
CREATE TABLE api_keys (
    key_id      text        PRIMARY KEY,
    account_id  text        NOT NULL,
    secret_hash text        NOT NULL,
    label       text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE INDEX api_keys_account ON api_keys (account_id);
