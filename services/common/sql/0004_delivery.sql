-- Delivery (docs/delivery.md). The ledger gains what the worker needs to be the only one that
-- hands a send to SMTP, to retry transient refusals, and to report every outcome exactly once:
--   topic, partition  the sends-topic partition the send came from (whose owner may touch it)
--   epoch             the owner epoch that claimed it (delivery_owners), so a zombie is fenced
--   deferred          a transient (4xx) refusal or a failure before DATA: the mail was NOT
--                     accepted, so it is safe to try again at next_attempt_at (payload keeps the
--                     send record for that)
--   reported          the outcome has been published as a RecordDeliveryOutcomes command
ALTER TABLE delivery_ledger
    DROP CONSTRAINT delivery_ledger_state_check,
    ADD CONSTRAINT delivery_ledger_state_check
        CHECK (state IN ('claimed', 'deferred', 'delivered', 'failed', 'unknown')),
    ADD COLUMN account_id      text    NOT NULL DEFAULT '',
    ADD COLUMN topic           text    NOT NULL DEFAULT '',
    ADD COLUMN partition       integer NOT NULL DEFAULT 0,
    ADD COLUMN epoch           bigint  NOT NULL DEFAULT 0,
    ADD COLUMN attempts        integer NOT NULL DEFAULT 0,
    ADD COLUMN next_attempt_at timestamptz,
    ADD COLUMN payload         text,
    ADD COLUMN reported        boolean NOT NULL DEFAULT false;

-- What a new owner of a partition marks unknown, what the retry loop picks up, what the reporter
-- publishes: each a small subset of the ledger, found without scanning it.
CREATE INDEX delivery_ledger_claimed ON delivery_ledger (topic, partition)
    WHERE state = 'claimed';
CREATE INDEX delivery_ledger_deferred ON delivery_ledger (topic, partition, next_attempt_at)
    WHERE state = 'deferred';
CREATE INDEX delivery_ledger_unreported ON delivery_ledger (topic, partition)
    WHERE NOT reported AND state IN ('delivered', 'failed', 'unknown');

-- One row per sends-topic partition: its current owner and epoch. A worker that takes a
-- partition bumps the epoch; every claim and outcome is written only while the writer's epoch
-- is current (checked under FOR SHARE of this row), so a paused process that wakes up after its
-- partition moved touches nothing.
CREATE TABLE delivery_owners (
    topic     text        NOT NULL,
    partition integer     NOT NULL,
    epoch     bigint      NOT NULL,
    owner     text        NOT NULL,
    taken_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);

-- The content of each message being delivered (from the MailContent records of the sends
-- topic): written once, read when a send is rendered, kept for retries after a restart.
CREATE TABLE delivery_content (
    message_id text        PRIMARY KEY,
    account_id text        NOT NULL,
    content    text        NOT NULL,
    stored_at  timestamptz NOT NULL DEFAULT now()
);
