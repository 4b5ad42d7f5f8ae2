-- Idempotency of API commands: one row per (account, Idempotency-Key), written before the command
-- is published. The command id is derived from the key, so a retry publishes the same command
-- and the processor answers it with its first result; the response is stored once known, and a
-- retry with the same request gets it back. A request without a key gets a row too, under
-- 'auto:<command id>', so its outcome can be fetched at /v1/commands/{command_id}.
CREATE TABLE idempotency_keys (
    account_id      text        NOT NULL,
    idempotency_key text        NOT NULL,
    fingerprint     text        NOT NULL,
    command_id      uuid        NOT NULL UNIQUE,
    message_id      uuid        NOT NULL,
    response_status integer,
    response_body   jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    answered_at     timestamptz,
    PRIMARY KEY (account_id, idempotency_key)
);

-- Account settings the commands need: the time zone of contacts that have none.
CREATE TABLE accounts (
    account_id        text PRIMARY KEY,
    default_time_zone text NOT NULL DEFAULT 'UTC'
);
