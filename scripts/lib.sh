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
  local deadline=$(( $(now_ms) + timeout * 1000 ))
  until "$@" >/dev/null 2>&1; do
    if (( $(now_ms) >= deadline )); then
      log "timed out after ${timeout}s waiting for $what"
      return 1
    fi
    sleep 0.2
  done
}

# port_open HOST PORT: true when something accepts TCP connections there.
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# pid_running PID: true when PID is a process that still runs (or is stopped), not one that has
# exited and waits to be reaped: `kill -0` succeeds on a zombie, so right after a SIGKILL a
# restart would skip the relaunch. The state is the field after the command name in
# /proc/PID/task/*/stat (Z zombie, X dead), of any thread; without /proc, ps gives it.
pid_running() {
  local pid=$1 stat state
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -d /proc/$pid/task ]]; then
    # Every thread: a multi-threaded process (a JVM) shows its main thread as a zombie while
    # the others still exit and hold its sockets; it runs until the last one is gone.
    local task
    for task in /proc/"$pid"/task/*/stat; do
      stat=$(<"$task") 2>/dev/null || continue
      state=${stat##*) }; state=${state%% *}
      [[ -n $state && $state != Z* && $state != X* ]] && return 0
    done
    return 1
  else
    state=$(ps -o stat= -p "$pid" 2>/dev/null) || return 1
    state=${state# }
  fi
  [[ -n $state && $state != Z* && $state != X* ]]
}

# pid_alive PIDFILE: true when the pidfile names a running process (pid_running).
pid_alive() { [[ -f $1 ]] && pid_running "$(cat "$1")"; }

# stop_pidfile NAME PIDFILE: TERM, wait up to 20 s, then KILL.
stop_pidfile() {
  local name=$1 pidfile=$2 pid
  if ! pid_alive "$pidfile"; then rm -f "$pidfile"; log "$name: not running"; return 0; fi
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do pid_running "$pid" || break; sleep 0.2; done
  pid_running "$pid" && kill -9 "$pid" 2>/dev/null || true
  rm -f "$pidfile"
  log "$name: stopped"
}

# http_ok URL: true when a GET of URL (plain http://host:port/path) answers 200 within 5 s.
# Pure bash, so the scripts need neither curl nor the venv to check a health endpoint.
http_ok() {
  local rest=${1#http://} hostport path
  hostport=${rest%%/*}
  path=${rest#"$hostport"}; path=/${path#/}
  (
    exec 3<>"/dev/tcp/${hostport%:*}/${hostport##*:}" || exit 1
    printf 'GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n' "$path" "$hostport" >&3
    read -r -t 5 _ code _ <&3 && [[ $code == 200 ]]
  ) 2>/dev/null
}

# start_detached PIDFILE LOGFILE CMD...: runs CMD in the background in its own session (so the
# terminal's Ctrl-C or the end of the calling shell does not reach it), appending its output to
# LOGFILE, and writes its pid to PIDFILE.
start_detached() {
  local pidfile=$1 logfile=$2; shift 2
  setsid "$@" >>"$logfile" 2>&1 </dev/null &
  echo $! >"$pidfile"
}

# kafka_password NAME: the dev password of a principal of the broker the scripts run, generated
# once by scripts/kafka.sh into $STATE_DIR/kafka/credentials (mode 600, ignored by git).
KAFKA_CREDENTIALS="$STATE_DIR/kafka/credentials"
kafka_password() {
  sed -n "s/^$1 //p" "$KAFKA_CREDENTIALS" 2>/dev/null | head -n 1
}

# export_server_env: the servers' addresses for the processes about to run (services, tests,
# benchmarks): the ones the scripts started, unless the environment names others (external mode).
# Call it only after the start scripts ran: they read these variables to choose external mode.
#
# The broker the scripts run requires SASL/SCRAM (docs/kafka.md): its clients log in as the admin
# principal (a super user: tests, benchmarks, CLIs), or as MAILCTL_KAFKA_PRINCIPAL when set
# (scripts/services.sh gives each service its own). A Kafka named by the environment is used
# with whatever KAFKA_SECURITY_PROTOCOL / KAFKA_USERNAME / KAFKA_PASSWORD the environment sets
# (PLAINTEXT when none). MAILCTL_LOCAL_KAFKA remembers the choice across nested calls.
export_server_env() {
  if [[ -z ${KAFKA_BOOTSTRAP_SERVERS:-} || ${MAILCTL_LOCAL_KAFKA:-} == 1 ]]; then
    export MAILCTL_LOCAL_KAFKA=1
    export KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT KAFKA_SASL_MECHANISM=SCRAM-SHA-256
    export KAFKA_USERNAME="${MAILCTL_KAFKA_PRINCIPAL:-mailctl-admin}"
    KAFKA_PASSWORD="$(kafka_password "$KAFKA_USERNAME")"
    export KAFKA_PASSWORD
  fi
  export KAFKA_BOOTSTRAP_SERVERS="${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:$KAFKA_PORT}"
  export DATABASE_URL="${DATABASE_URL:-postgresql://mailctl:mailctl@127.0.0.1:$PG_PORT/mailctl}"
  export SMTP_HOST="${SMTP_HOST:-127.0.0.1}" SMTP_PORT
  export SMTP_SINK_URL="${SMTP_SINK_URL:-http://127.0.0.1:$SMTP_SINK_HTTP_PORT}"
}
