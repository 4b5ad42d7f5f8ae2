#!/usr/bin/env bash
# The service processes: start | stop | status.
# start: launches commands, dispatcher, delivery and projections in the background with
# $PYTHON (default .venv/bin/python), pidfiles in $RUN_DIR, logs in $LOG_DIR/<name>.log, and waits
# until each /health answers 200 (which needs Kafka, Postgres and the SMTP sink: scripts/up.sh).
# A running, healthy process is reused. The SMTP sink has its own script (scripts/smtp_sink.sh).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PYTHON="${PYTHON:-$ROOT_DIR/.venv/bin/python}"
COMMANDS_PORT="${COMMANDS_PORT:-8080}"
DISPATCHER_HEALTH_PORT="${DISPATCHER_HEALTH_PORT:-8081}"
DELIVERY_HEALTH_PORT="${DELIVERY_HEALTH_PORT:-8082}"
PROJECTIONS_HEALTH_PORT="${PROJECTIONS_HEALTH_PORT:-8083}"
HEALTH_TIMEOUT="${SERVICES_HEALTH_TIMEOUT:-90}"

# name|python module|port|Kafka principal (services/common/kafka_admin.py: each service logs in
# as its own, with only its ACLs); start order (all start at once, then each is waited for).
SERVICES=(
  "projections|services.projections|$PROJECTIONS_HEALTH_PORT|mailctl-projections"
  "commands|services.commands|$COMMANDS_PORT|mailctl-api"
  "dispatcher|services.dispatcher|$DISPATCHER_HEALTH_PORT|mailctl-dispatcher"
  "delivery|services.delivery|$DELIVERY_HEALTH_PORT|mailctl-delivery"
)

pidfile() { echo "$RUN_DIR/$1.pid"; }
health_url() { echo "http://127.0.0.1:$1/health"; }

launch() {
  local name=$1 module=$2 port=$3 principal=$4
  if pid_alive "$(pidfile "$name")"; then
    return 0  # running: its health is checked with the others below
  fi
  port_open 127.0.0.1 "$port" && die "$name: port $port is taken by another process"
  (
    cd "$ROOT_DIR" || exit 1
    export PYTHONPATH="$ROOT_DIR${PYTHONPATH:+:$PYTHONPATH}"
    export COMMANDS_PORT DISPATCHER_HEALTH_PORT DELIVERY_HEALTH_PORT PROJECTIONS_HEALTH_PORT
    # Static group membership (docs/delivery.md): a restarted process gets its partitions back at
    # once. One process of each kind here, so one id each.
    export DISPATCHER_INSTANCE_ID="${DISPATCHER_INSTANCE_ID:-dispatcher-1}"
    export DELIVERY_INSTANCE_ID="${DELIVERY_INSTANCE_ID:-delivery-1}"
    export PROJECTIONS_INSTANCE_ID="${PROJECTIONS_INSTANCE_ID:-projections-1}"
    MAILCTL_KAFKA_PRINCIPAL=$principal export_server_env
    start_detached "$(pidfile "$name")" "$LOG_DIR/$name.log" "$PYTHON" -m "$module"
  )
  log "$name: started (pid $(cat "$(pidfile "$name")"), log $LOG_DIR/$name.log)"
}

start() {
  local t0 entry name module port principal failed=0
  t0=$(now_ms)
  [[ -x $PYTHON ]] || die "no Python at $PYTHON (run scripts/venv.sh or set PYTHON)"
  for entry in "${SERVICES[@]}"; do
    IFS='|' read -r name module port principal <<<"$entry"
    launch "$name" "$module" "$port" "$principal"
  done
  for entry in "${SERVICES[@]}"; do
    IFS='|' read -r name module port _ <<<"$entry"
    if wait_until "$HEALTH_TIMEOUT" "$name health" http_ok "$(health_url "$port")"; then
      log "$name: healthy at $(health_url "$port")"
    elif ! pid_alive "$(pidfile "$name")"; then
      log "$name: exited; last lines of $LOG_DIR/$name.log:"; tail -n 10 "$LOG_DIR/$name.log" >&2
      failed=1
    else
      log "$name: running but not healthy: $(health_url "$port") (log $LOG_DIR/$name.log)"
      failed=1
    fi
  done
  (( failed == 0 )) || die "some services are not healthy"
  log "services ready in $(elapsed_since "$t0")"
}

stop() {
  local entry name module port
  for entry in "${SERVICES[@]}"; do
    IFS='|' read -r name module port _ <<<"$entry"
    stop_pidfile "$name" "$(pidfile "$name")"
  done
}

status() {
  local entry name module port rc=0
  for entry in "${SERVICES[@]}"; do
    IFS='|' read -r name module port _ <<<"$entry"
    if ! pid_alive "$(pidfile "$name")"; then
      log "$name: not running"; rc=1
    elif http_ok "$(health_url "$port")"; then
      log "$name: healthy (pid $(cat "$(pidfile "$name")")) $(health_url "$port")"
    else
      log "$name: running (pid $(cat "$(pidfile "$name")")) but not healthy $(health_url "$port")"
      rc=1
    fi
  done
  return $rc
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
