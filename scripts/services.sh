#!/usr/bin/env bash
# The service processes: start | stop | status | start-second KIND | stop-second KIND.
# start: launches commands, dispatcher, delivery and projections in the background with
# $PYTHON (default .venv/bin/python), pidfiles in $RUN_DIR, logs in $LOG_DIR/<name>.log, and waits
# until each /health answers 200 (which needs Kafka, Postgres and the SMTP sink: scripts/up.sh).
# A running, healthy process is reused. The SMTP sink has its own script (scripts/smtp_sink.sh).
# start-second dispatcher|delivery: a second process of that kind beside the first (its own
# static group member id `<kind>-2`, pidfile and log `<kind>-2`, health port
# DISPATCHER2_HEALTH_PORT / DELIVERY2_HEALTH_PORT, default the first's + 20): the group shares
# the partitions between the two (the fault matrix's zombie and rebalance rows,
# docs/reliability.md). stop-second KIND stops it; `stop` stops it too.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PYTHON="${PYTHON:-$ROOT_DIR/.venv/bin/python}"
COMMANDS_PORT="${COMMANDS_PORT:-8080}"
DISPATCHER_HEALTH_PORT="${DISPATCHER_HEALTH_PORT:-8081}"
DELIVERY_HEALTH_PORT="${DELIVERY_HEALTH_PORT:-8082}"
PROJECTIONS_HEALTH_PORT="${PROJECTIONS_HEALTH_PORT:-8083}"
DISPATCHER2_HEALTH_PORT="${DISPATCHER2_HEALTH_PORT:-$((DISPATCHER_HEALTH_PORT + 20))}"
DELIVERY2_HEALTH_PORT="${DELIVERY2_HEALTH_PORT:-$((DELIVERY_HEALTH_PORT + 20))}"
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
    # The dispatcher's snapshots and contact files (docs/scale.md): a restarted dispatcher folds
    # only what follows its newest snapshot. A second dispatcher on this host finds a partition's
    # directory locked and folds from the log.
    export DISPATCHER_STATE_DIR="${DISPATCHER_STATE_DIR:-$STATE_DIR/dispatcher}"
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

# second_entry KIND: the name|module|port|principal of the second process of KIND.
second_entry() {
  case $1 in
    dispatcher) echo "dispatcher-2|services.dispatcher|$DISPATCHER2_HEALTH_PORT|mailctl-dispatcher" ;;
    delivery) echo "delivery-2|services.delivery|$DELIVERY2_HEALTH_PORT|mailctl-delivery" ;;
    *) die "no second process of '$1' (dispatcher or delivery)" ;;
  esac
}

start_second() {
  local kind=$1 name module port principal
  IFS='|' read -r name module port principal <<<"$(second_entry "$kind")"
  (
    # The second process's own member id and health port; everything else as the first's.
    if [[ $kind == dispatcher ]]; then
      DISPATCHER_HEALTH_PORT=$port DISPATCHER_INSTANCE_ID=dispatcher-2
    else
      DELIVERY_HEALTH_PORT=$port DELIVERY_INSTANCE_ID=delivery-2
    fi
    launch "$name" "$module" "$port" "$principal"
  )
  if wait_until "$HEALTH_TIMEOUT" "$name health" http_ok "$(health_url "$port")"; then
    log "$name: healthy at $(health_url "$port")"
  else
    tail -n 10 "$LOG_DIR/$name.log" >&2 || true
    die "$name is not healthy"
  fi
}

stop_second() {
  local name
  IFS='|' read -r name _ <<<"$(second_entry "$1")"
  stop_pidfile "$name" "$(pidfile "$name")"
}

stop() {
  local entry name module port kind
  for entry in "${SERVICES[@]}"; do
    IFS='|' read -r name module port _ <<<"$entry"
    stop_pidfile "$name" "$(pidfile "$name")"
  done
  for kind in dispatcher delivery; do
    [[ -f $(pidfile "$kind-2") ]] && stop_second "$kind"
  done
  return 0
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
  start-second) [[ -n ${2:-} ]] || die "usage: $0 start-second dispatcher|delivery"; start_second "$2" ;;
  stop-second) [[ -n ${2:-} ]] || die "usage: $0 stop-second dispatcher|delivery"; stop_second "$2" ;;
  *) echo "usage: $0 start|stop|status|start-second KIND|stop-second KIND" >&2; exit 2 ;;
esac
