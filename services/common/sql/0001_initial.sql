-- The bookkeeping of the migration runner (services/common/migrations.py): one row per applied
-- file, written in the same transaction as the file's statements.
CREATE TABLE schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- The delivery ledger: one row per send, claimed by the delivery worker BEFORE it hands the mail
-- to SMTP. send_id is deterministic (message id + contact id), so the primary key is what makes
-- a second copy impossible, whatever Kafka redelivers or replays.
--   claimed    the worker owns the send and may be talking to SMTP right now
--   delivered  the SMTP server accepted the mail
--   failed     the SMTP server refused it for good (reason in detail)
--   unknown    a claim whose outcome was lost (crash between SMTP and this row): never retried
--              automatically, listed for reconciliation
CREATE TABLE delivery_ledger (
    send_id     text        PRIMARY KEY,
    message_id  text        NOT NULL,
    contact_id  text        NOT NULL,
    state       text        NOT NULL
        CHECK (state IN ('claimed', 'delivered', 'failed', 'unknown')),
    detail      text,
    claimed_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (message_id, contact_id)
);

-- Per-message counts and the reconciliation list ("which sends of this message are unknown").
CREATE INDEX delivery_ledger_message_state ON delivery_ledger (message_id, state);
