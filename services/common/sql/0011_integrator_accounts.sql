-- Which accounts an integrating service (a Kafka principal with an intake topic of its own) may
-- act for: the intake relay forwards a command only for an account granted here
-- (core/trust.py, docs/integrators.md). Managed with `python -m services.commands.integrators`.
CREATE TABLE integrator_accounts (
    principal  text        NOT NULL,
    account_id text        NOT NULL,
    granted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal, account_id)
);
