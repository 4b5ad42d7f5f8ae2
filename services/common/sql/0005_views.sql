-- The read views (services/projections, docs/projections.md). Every row is a function of the
-- committed event history: the projection worker writes them, with its Kafka offsets, in one
-- transaction per batch; `python -m services.projections.cli rebuild` builds the same tables in a
-- fresh schema and compares. No column holds a wall-clock reading of the worker.

-- One row per message: the Email Sent, Scheduled and Drafts lists and their hover details.
CREATE TABLE view_messages (
    message_id                uuid        PRIMARY KEY,
    account_id                text        NOT NULL,
    status                    text        NOT NULL,
    name                      text        NOT NULL,
    subject                   text        NOT NULL,
    from_address              text        NOT NULL,
    from_name                 text,
    mode                      text        NOT NULL,
    send_at                   timestamptz,
    send_at_local             timestamp,
    send_now                  boolean,
    default_time_zone         text,
    throttle_batch_size       integer,
    throttle_interval_seconds integer,
    end_at                    timestamptz,
    missed_zone_policy        text        NOT NULL,
    release_rate              integer     NOT NULL,
    copied_from               uuid,
    created_at                timestamptz NOT NULL,
    created_by                jsonb       NOT NULL,
    started_at                timestamptz,
    paused_at                 timestamptz,
    paused_by                 jsonb,
    pause_reason              text,
    canceled_at               timestamptz,
    canceled_by               jsonb,
    cancel_reason             text,
    sent_at                   timestamptz,
    audience                  integer     NOT NULL,
    pending                   integer     NOT NULL,
    released                  integer     NOT NULL,
    delivered                 integer     NOT NULL,
    failed                    integer     NOT NULL,
    skipped                   integer     NOT NULL,
    removed                   integer     NOT NULL,
    excluded                  integer     NOT NULL,
    "unknown"                 integer     NOT NULL,
    current_batch             integer,
    batch_remaining           integer,
    next_batch_at             timestamptz,
    zones_pending             text[],
    zones_done                text[],
    last_sequence             integer     NOT NULL,
    updated_at                timestamptz NOT NULL
);

-- The lists page by (sort time, message id) within one account and status set.
CREATE INDEX view_messages_list ON view_messages (account_id, status, updated_at DESC, message_id);

-- One row per contact of a message. Filtering by state walks the primary key of one message
-- (no index on state): state changes are then HOT updates that touch no index, which is what
-- keeps the send path cheap (docs/projections.md, measured figures).
CREATE TABLE view_recipients (
    message_id  uuid        NOT NULL,
    contact_id  text        NOT NULL,
    email       text        NOT NULL,
    time_zone   text,
    state       text        NOT NULL,
    reason      text,
    batch       integer,
    added_at    timestamptz NOT NULL,
    released_at timestamptz,
    state_at    timestamptz NOT NULL,
    sequence    integer     NOT NULL,
    PRIMARY KEY (message_id, contact_id)
) WITH (fillfactor = 60);

-- One row per event: the audit trail, in order, with who caused it.
CREATE TABLE view_history (
    message_id       uuid        NOT NULL,
    sequence         integer     NOT NULL,
    event_id         uuid        NOT NULL,
    type             text        NOT NULL,
    occurred_at      timestamptz NOT NULL,
    actor_kind       text        NOT NULL,
    actor_account_id text        NOT NULL,
    actor_user_id    text,
    actor_service    text,
    causation_id     uuid        NOT NULL,
    correlation_id   uuid        NOT NULL,
    detail           jsonb       NOT NULL,
    PRIMARY KEY (message_id, sequence)
);

-- Where each projection consumer stands in each partition: written in the same transaction as
-- the rows of the batch it read, and only if it still reads `next_offset` as the worker
-- expected (a second worker that advanced it meanwhile makes the batch roll back).
CREATE TABLE projection_offsets (
    consumer    text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    next_offset bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, topic, partition)
);

-- Records of the events topic the projection could not decode or fold, with the error: written
-- in the batch's transaction, so they are neither lost nor counted twice; processing goes on.
CREATE TABLE projection_dead_letters (
    consumer   text        NOT NULL,
    topic      text        NOT NULL,
    partition  integer     NOT NULL,
    "offset"   bigint      NOT NULL,
    key        bytea,
    value      bytea,
    error      text        NOT NULL,
    PRIMARY KEY (consumer, topic, partition, "offset")
);
