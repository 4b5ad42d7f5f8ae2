#!/usr/bin/env bash
# The SMTP sink (services/smtp_sink): start | stop | status.
# start: with SMTP_HOST set, starts nothing and waits for that SMTP server to answer (external
# mode). Otherwise starts the sink (SMTP on 127.0.0.1:$SMTP_PORT, HTTP API on
# 127.0.0.1:$SMTP_SINK_HTTP_PORT, mails kept in $STATE_DIR/smtp_sink/), or reuses a healthy one.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PYTHON="${PYTHON:-$ROOT_DIR/.venv/bin/python}"
PIDFILE="$RUN_DIR/smtp_sink.pid"
LOGFILE="$LOG_DIR/smtp_sink.log"
API="http://127.0.0.1:$SMTP_SINK_HTTP_PORT"

healthy() { http_ok "$API/health"; }

start() {
  local t0
  t0=$(now_ms)
  if [[ -n ${SMTP_HOST:-} ]]; then
    log "SMTP_HOST is set: using $SMTP_HOST:$SMTP_PORT, starting no sink"
    wait_until 60 "SMTP at $SMTP_HOST:$SMTP_PORT" port_open "$SMTP_HOST" "$SMTP_PORT" \
      || die "nothing answers at $SMTP_HOST:$SMTP_PORT"
    log "SMTP server answers after $(elapsed_since "$t0")"
    return 0
  fi
  if pid_alive "$PIDFILE"; then
    # Running: healthy now, or about to be (another start may have just launched it).
    if wait_until 20 "the running SMTP sink" healthy; then
      log "SMTP sink already running and healthy: reused ($(elapsed_since "$t0"))"
      log "SMTP sink: smtp 127.0.0.1:$SMTP_PORT, mail received: $API/messages"
      return 0
    fi
    log "SMTP sink (pid $(cat "$PIDFILE")) is not healthy: restarting it"
    stop_pidfile smtp_sink "$PIDFILE"
  fi
  for port in "$SMTP_PORT" "$SMTP_SINK_HTTP_PORT"; do
    port_open 127.0.0.1 "$port" && die "port $port is taken by another process"
  done
  [[ -x $PYTHON ]] || die "no Python at $PYTHON (run scripts/venv.sh or set PYTHON)"
  mkdir -p "$STATE_DIR/smtp_sink"
  (
    cd "$ROOT_DIR" || exit 1
    export PYTHONPATH="$ROOT_DIR${PYTHONPATH:+:$PYTHONPATH}" SMTP_PORT SMTP_SINK_HTTP_PORT
    export SMTP_SINK_DB="$STATE_DIR/smtp_sink/sink.sqlite3"
    start_detached "$PIDFILE" "$LOGFILE" "$PYTHON" -m services.smtp_sink
  )
  if ! wait_until 30 "the SMTP sink's health" healthy; then
    tail -n 20 "$LOGFILE" >&2 || true
    die "the SMTP sink did not become healthy: see $LOGFILE"
  fi
  log "SMTP sink ready in $(elapsed_since "$t0"): smtp 127.0.0.1:$SMTP_PORT," \
    "mail received: $API/messages"
}

stop() {
  if [[ -n ${SMTP_HOST:-} ]]; then log "SMTP_HOST is set: nothing of ours to stop"; return 0; fi
  stop_pidfile smtp_sink "$PIDFILE"
}

status() {
  if [[ -n ${SMTP_HOST:-} ]]; then
    if port_open "$SMTP_HOST" "$SMTP_PORT"; then log "SMTP (external): answering"; return 0; fi
    log "SMTP (external): not answering"; return 1
  fi
  if pid_alive "$PIDFILE" && healthy; then
    log "SMTP sink: running (pid $(cat "$PIDFILE")), smtp 127.0.0.1:$SMTP_PORT, api $API"
    return 0
  fi
  log "SMTP sink: not running"
  return 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
