#!/usr/bin/env bash
# Printed at the end of `make run`: where everything is.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# External-SMTP mode (SMTP_HOST named by the environment, scripts/smtp_sink.sh started no sink):
# decided before export_server_env fills in the sink's address.
if [[ -n ${SMTP_HOST:-} ]]; then
  smtp_lines="  SMTP (external, no sink)  ${SMTP_HOST}:${SMTP_PORT}"
else
  smtp_lines="  SMTP sink (SMTP)          127.0.0.1:${SMTP_PORT}
  SMTP sink (received mail) http://127.0.0.1:${SMTP_SINK_HTTP_PORT}/messages"
fi
# The key and the operator go to the database the services use (not the default port's).
export_server_env
# The dev account's key: created once, kept in .state/dev-api-key, the same on every run.
key=$("${PYTHON:-$ROOT_DIR/.venv/bin/python}" -m services.commands.apikeys dev-key --account dev)
# The dev account's operator for the web UI: kept in .state/dev-operator, the same on every run.
read -r op_email op_password < <("${PYTHON:-$ROOT_DIR/.venv/bin/python}" -m services.web.operators dev-operator --account dev)
cat <<TXT

mailctl is running. Stop it with: make down

  web UI (operators)        http://127.0.0.1:${COMMANDS_PORT:-8080}/ui
  REST API (OpenAPI docs)   http://127.0.0.1:${COMMANDS_PORT:-8080}/docs
  commands health           http://127.0.0.1:${COMMANDS_PORT:-8080}/health
  dispatcher health         http://127.0.0.1:${DISPATCHER_HEALTH_PORT:-8081}/health
  delivery worker health    http://127.0.0.1:${DELIVERY_HEALTH_PORT:-8082}/health
  projections health        http://127.0.0.1:${PROJECTIONS_HEALTH_PORT:-8083}/health
$smtp_lines
  Kafka                     ${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:$KAFKA_PORT}
  Postgres                  ${DATABASE_URL:-postgresql://mailctl:mailctl@127.0.0.1:$PG_PORT/mailctl}
  logs                      $LOG_DIR/

  dev API key (account "dev"):
    $key
  dev operator for the web UI (account "dev"):
    email    $op_email
    password $op_password
  try: curl -H "Authorization: Bearer $key" http://127.0.0.1:${COMMANDS_PORT:-8080}/v1/whoami
TXT
