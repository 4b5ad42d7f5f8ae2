-- Audiences and previews for operators (issue 16; docs/api.md "Audiences", docs/ui.md).

-- The contact's merge attributes (ASCII JSON, NULL when none), so that a preview renders the
-- mail for a contact with the data delivery uses. Rows written before this have NULL.
ALTER TABLE view_recipients ADD COLUMN attributes text;

-- The addresses an account may send test sends to (normalized: stripped, lower-cased).
CREATE TABLE test_addresses (
    account_id  text        NOT NULL,
    address     text        NOT NULL,
    added_at    timestamptz NOT NULL DEFAULT now(),
    added_by    text        NOT NULL,
    PRIMARY KEY (account_id, address)
);

-- One CSV import (or removal by CSV) into a message's audience: its progress and summary.
-- A chunk of the file is one AddRecipients / RemoveRecipients command whose Idempotency-Key is
-- derived from (import_id, chunk number): uploading the same file again under the same import id
-- resumes it, and chunks already applied answer their first outcome without being applied again.
CREATE TABLE audience_imports (
    import_id     uuid        PRIMARY KEY,
    account_id    text        NOT NULL,
    message_id    uuid        NOT NULL,
    kind          text        NOT NULL CHECK (kind IN ('add', 'remove')),
    state         text        NOT NULL CHECK (state IN ('running', 'done', 'partial')),
    file_name     text,
    started_by    text        NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    total_bytes   bigint,
    bytes_read    bigint      NOT NULL DEFAULT 0,
    rows_read     bigint      NOT NULL DEFAULT 0,
    chunks_done   integer     NOT NULL DEFAULT 0,
    error         text
);

CREATE INDEX audience_imports_message ON audience_imports (account_id, message_id, started_at);

-- The answer of each chunk of an import (counts per outcome, as the API's `audience.counts`):
-- the summary is their sum, so a chunk answered twice (a resumed import) counts once.
CREATE TABLE audience_import_chunks (
    import_id   uuid    NOT NULL REFERENCES audience_imports (import_id) ON DELETE CASCADE,
    chunk       integer NOT NULL,
    first_line  bigint  NOT NULL,
    last_line   bigint  NOT NULL,
    counts      jsonb   NOT NULL,
    PRIMARY KEY (import_id, chunk)
);

-- The rows an import did not apply, with their line numbers and reasons (downloadable): invalid
-- rows, and contacts the core refused or found duplicated.
CREATE TABLE audience_import_problems (
    import_id   uuid    NOT NULL REFERENCES audience_imports (import_id) ON DELETE CASCADE,
    line        bigint  NOT NULL,
    kind        text    NOT NULL,
    contact_id  text,
    reason      text    NOT NULL,
    PRIMARY KEY (import_id, line, kind)
);
