# Shared helpers for the project's scripts. Source it; do not run it.
# Every script keeps its state under $STATE_DIR (git ignores it) and its log in $STATE_DIR/logs.
set -euo pipefail

ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE_DIR="${STATE_DIR:-$ROOT_DIR/.state}"
CACHE_DIR="${MAILCTL_CACHE_DIR:-$HOME/.cache/mailctl}"   # survives clones: Maven artifacts, wheels
LOG_DIR="$STATE_DIR/logs"
RUN_DIR="$STATE_DIR/run"
mkdir -p "$STATE_DIR" "$LOG_DIR" "$RUN_DIR" "$CACHE_DIR"

# Project ports (loopback only). Override with the variables below.
KAFKA_PORT="${KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-19093}"
PG_PORT="${PG_PORT:-15432}"
SMTP_PORT="${SMTP_PORT:-10025}"
SMTP_SINK_HTTP_PORT="${SMTP_SINK_HTTP_PORT:-18025}"

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "error: $*"; exit 1; }

now_ms() { date +%s%3N; }

# elapsed_since START_MS -> "1.234s"
elapsed_since() {
  local start=$1 end
  end=$(now_ms)
  awk -v d=$((end - start)) 'BEGIN { printf "%.3fs", d / 1000 }'
}

# wait_until TIMEOUT_SECONDS DESCRIPTION CMD...: polls CMD every 0.2 s until it succeeds.
wait_until() {
  local timeout=$1 what=$2; shift 2
  local deadline=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    if (( $(date +%s) >= deadline )); then
      log "timed out after ${timeout}s waiting for $what"
      return 1
    fi
    sleep 0.2
  done
}

# port_open HOST PORT: true when something accepts TCP connections there.
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# pid_alive PIDFILE: true when the pidfile names a running process.
pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# stop_pidfile NAME PIDFILE: TERM, wait up to 20 s, then KILL.
stop_pidfile() {
  local name=$1 pidfile=$2 pid
  if ! pid_alive "$pidfile"; then rm -f "$pidfile"; log "$name: not running"; return 0; fi
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  rm -f "$pidfile"
  log "$name: stopped"
}
