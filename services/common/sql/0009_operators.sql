-- Operators of the web UI (services/web, docs/ui.md): people who sign in with an email address
-- and a password. Each belongs to one account. Only an argon2id hash of the password is stored.
-- failed_signins / locked_until: repeated failed sign-ins lock the operator out for a while.
CREATE TABLE operators (
    user_id        text        PRIMARY KEY,
    account_id     text        NOT NULL,
    email          text        NOT NULL,
    display_name   text        NOT NULL,
    password_hash  text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    disabled_at    timestamptz,
    failed_signins integer     NOT NULL DEFAULT 0,
    locked_until   timestamptz
);

CREATE UNIQUE INDEX operators_email ON operators (lower(email));
CREATE INDEX operators_account ON operators (account_id);

-- Server-side sessions: the cookie holds a random token, only its SHA-256 is stored (like the
-- API keys). Each session has its own CSRF token and an expiry; sign-out deletes the row.
CREATE TABLE operator_sessions (
    token_hash  text        PRIMARY KEY,
    user_id     text        NOT NULL REFERENCES operators (user_id) ON DELETE CASCADE,
    csrf_token  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);

CREATE INDEX operator_sessions_user ON operator_sessions (user_id);

-- The history view names the person: the actor's display name as the event recorded it.
ALTER TABLE view_history ADD COLUMN actor_display_name text;
