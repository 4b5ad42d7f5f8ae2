#!/usr/bin/env bash
# PostgreSQL 15 for the project: start | stop | status | restart-immediate | stop-immediate.
#
# start: with DATABASE_URL set, starts nothing and only waits for that server to answer
# (external mode). Otherwise installs postgresql-15 with apt when missing, creates a cluster once
# in $STATE_DIR/postgres/data, runs it as the `postgres` user (the server refuses root) on
# 127.0.0.1:$PG_PORT only, with its socket inside the state dir, and creates the role and
# database mailctl (password mailctl, scram over TCP) once. A healthy running server is reused.
#
# Placement: the postgres user must be able to reach the data dir. When the repo sits where it
# cannot (a clone under /root, mode 700), or the socket path would be too long for a Unix socket,
# the cluster lives in ~postgres/mailctl/<hash of the state dir> and $STATE_DIR/postgres is a
# symlink to it.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PG_MAJOR=15
PG_BIN="${PG_BIN:-/usr/lib/postgresql/$PG_MAJOR/bin}"
PG_LINK="$STATE_DIR/postgres"
PG_LOG="$LOG_DIR/postgres.log"
DB_NAME=mailctl
DB_USER=mailctl
DB_PASSWORD=mailctl
# A Unix socket path is limited to 107 bytes (sun_path); keep a margin.
SOCKET_PATH_MAX=100

if [[ $EUID -eq 0 ]]; then
  # cd /: the postgres user may not be allowed into the current directory.
  as_pg() { (cd / && runuser -u postgres -- "$@"); }
else
  as_pg() { (cd / && "$@"); }
fi

pg_home() { getent passwd postgres | cut -d: -f6; }
relocated_base() {
  local hash
  hash=$(printf '%s' "$STATE_DIR" | sha256sum | cut -c1-16)
  echo "$(pg_home)/mailctl/$hash"
}

# Sets PG_BASE (holding data/ and run/), PG_DATA and PG_SOCK without creating anything.
locate() {
  if [[ -L $PG_LINK ]]; then
    PG_BASE=$(readlink -f "$PG_LINK")
  else
    PG_BASE=$PG_LINK
  fi
  PG_DATA="$PG_BASE/data"
  PG_SOCK="$PG_BASE/run"
}

# postgres_can_use BASE: the postgres user can write BASE and the socket path fits.
postgres_can_use() {
  local base=$1 socket="$1/run/.s.PGSQL.$PG_PORT"
  (( ${#socket} <= SOCKET_PATH_MAX )) || return 1
  [[ $EUID -ne 0 ]] && return 0
  runuser -u postgres -- test -d "$base" -a -w "$base" -a -x "$base" 2>/dev/null
}

# Decides where the cluster lives (once per state dir) and creates the folders.
place() {
  if [[ ! -L $PG_LINK && ! -d $PG_LINK ]]; then
    local relocated
    relocated=$(relocated_base)
    if [[ $EUID -eq 0 && -d $relocated ]]; then
      # A cluster for this state dir exists but the symlink to it is gone: the state dir was
      # deleted (make clean). Its data goes too, as it would have in place.
      stop_cluster "$relocated/data" || true
      rm -rf "$relocated"
      log "discarded the cluster of a previous $STATE_DIR in $relocated"
    fi
    mkdir -p "$PG_LINK"
    [[ $EUID -eq 0 ]] && chown postgres:postgres "$PG_LINK"
    if ! postgres_can_use "$PG_LINK"; then
      [[ $EUID -eq 0 ]] || die "cannot use $PG_LINK (socket path too long)"
      rmdir "$PG_LINK"
      install -d -m 755 "$(dirname "$relocated")"
      install -d -o postgres -g postgres -m 700 "$relocated"
      ln -s "$relocated" "$PG_LINK"
      log "the postgres user cannot use $STATE_DIR: cluster kept in $relocated," \
        "symlinked from $PG_LINK"
    fi
  fi
  locate
  if [[ $EUID -eq 0 ]]; then
    install -d -o postgres -g postgres -m 700 "$PG_SOCK"
  else
    install -d -m 700 "$PG_SOCK"
  fi
}

ensure_installed() {
  [[ -x $PG_BIN/pg_ctl ]] && return 0
  [[ $EUID -eq 0 ]] || die "PostgreSQL $PG_MAJOR is not installed; install postgresql-$PG_MAJOR"
  log "installing postgresql-$PG_MAJOR with apt (log: $PG_LOG)"
  {
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      "postgresql-$PG_MAJOR"
  } >>"$PG_LOG" 2>&1 || die "apt could not install postgresql-$PG_MAJOR: see $PG_LOG"
  [[ -x $PG_BIN/pg_ctl ]] || die "postgresql-$PG_MAJOR installed but $PG_BIN/pg_ctl is missing"
}

init_cluster() {
  [[ -f $PG_DATA/PG_VERSION ]] && return 0
  log "creating the cluster in $PG_DATA"
  # Local socket: trust, since the socket dir is 0700 and owned by postgres. TCP: passwords.
  as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -E UTF8 --locale=C \
    --auth-local=trust --auth-host=scram-sha-256 >>"$PG_LOG" 2>&1 \
    || die "initdb failed: see $PG_LOG"
  echo "include_if_exists = 'mailctl.conf'" | as_pg tee -a "$PG_DATA/postgresql.conf" >/dev/null
}

# Written at every start, so a changed PG_PORT (or a moved state dir) takes effect.
write_config() {
  as_pg tee "$PG_DATA/mailctl.conf" >/dev/null <<CONF
# Written by scripts/postgres.sh at each start; edits here are lost.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
unix_socket_permissions = 0700
max_connections = 200
log_line_prefix = '%m [%p] %q%u@%d '
log_timezone = 'UTC'
timezone = 'UTC'
CONF
}

cluster_running() { [[ -f $1/PG_VERSION ]] && as_pg "$PG_BIN/pg_ctl" status -D "$1" >/dev/null 2>&1; }
stop_cluster() {
  cluster_running "$1" || return 0
  as_pg "$PG_BIN/pg_ctl" stop -D "$1" -m fast -w -t 60 >>"$PG_LOG" 2>&1
}

tcp_ready() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; }
login_works() {
  PGPASSWORD=$DB_PASSWORD PGCONNECT_TIMEOUT=5 "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" \
    -U "$DB_USER" -d "$DB_NAME" -qAtc 'SELECT 1' 2>/dev/null | grep -qx 1
}
psql_admin() {
  as_pg "$PG_BIN/psql" -h "$PG_SOCK" -p "$PG_PORT" -U postgres -d postgres \
    -v ON_ERROR_STOP=1 -qAt "$@"
}

ensure_database() {
  if [[ $(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER'") != 1 ]]; then
    psql_admin -c "CREATE ROLE $DB_USER LOGIN PASSWORD '$DB_PASSWORD'"
    log "created role $DB_USER"
  fi
  if [[ $(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'") != 1 ]]; then
    psql_admin -c "CREATE DATABASE $DB_NAME OWNER $DB_USER"
    log "created database $DB_NAME"
  fi
}

url() { echo "postgresql://$DB_USER:$DB_PASSWORD@127.0.0.1:$PG_PORT/$DB_NAME"; }

external_ready() {
  if [[ -x $PG_BIN/pg_isready ]]; then
    "$PG_BIN/pg_isready" -q -d "$DATABASE_URL"
  else
    # No client tools here: settle for the port answering.
    local rest=${DATABASE_URL#*://}; rest=${rest#*@}; rest=${rest%%/*}
    port_open "${rest%:*}" "$([[ $rest == *:* ]] && echo "${rest##*:}" || echo 5432)"
  fi
}

start() {
  local t0
  t0=$(now_ms)
  if [[ -n ${DATABASE_URL:-} ]]; then
    log "DATABASE_URL is set: using that server, starting none"
    wait_until 60 "the Postgres server of DATABASE_URL" external_ready \
      || die "the server of DATABASE_URL does not answer"
    log "postgres (external) answers after $(elapsed_since "$t0")"
    return 0
  fi
  ensure_installed
  place
  init_cluster
  if cluster_running "$PG_DATA" && tcp_ready && login_works; then
    log "postgres already running and healthy: reused ($(elapsed_since "$t0"))"
    log "postgres: $(url)"
    return 0
  fi
  write_config
  if cluster_running "$PG_DATA"; then
    # Running but not answering as configured (e.g. PG_PORT changed): restart with the config.
    log "postgres running but not answering on 127.0.0.1:$PG_PORT: restarting it"
    as_pg "$PG_BIN/pg_ctl" restart -D "$PG_DATA" -m fast -w -t 60 >>"$PG_LOG" 2>&1 \
      || die "postgres did not restart: see $PG_LOG"
  else
    port_open 127.0.0.1 "$PG_PORT" && die "port $PG_PORT is taken by another process"
    # The log is opened here (as root) and inherited: the postgres user may not be able to open
    # a file in the repo's folder itself.
    as_pg "$PG_BIN/pg_ctl" start -D "$PG_DATA" -w -t 60 >>"$PG_LOG" 2>&1 \
      || die "postgres did not start: see $PG_LOG"
  fi
  wait_until 30 "postgres on 127.0.0.1:$PG_PORT" tcp_ready || die "postgres does not answer"
  ensure_database
  login_works || die "cannot log in as $DB_USER over TCP: see $PG_LOG"
  log "postgres ready in $(elapsed_since "$t0"): $(url) (data: $PG_DATA)"
}

# restart-immediate: what a crash of the server looks like to its clients: `pg_ctl restart -m
# immediate` ends every backend at once without a checkpoint (the server recovers from its WAL
# on the way up), then waits until it answers again. The fault matrix's Postgres row
# (docs/reliability.md); a running cluster of ours only.
restart_immediate() {
  local t0
  t0=$(now_ms)
  [[ -n ${DATABASE_URL:-} ]] && die "DATABASE_URL is set: not our server to restart"
  locate
  cluster_running "$PG_DATA" || die "postgres is not running"
  as_pg "$PG_BIN/pg_ctl" restart -D "$PG_DATA" -m immediate -w -t 60 >>"$PG_LOG" 2>&1 \
    || die "postgres did not restart: see $PG_LOG"
  wait_until 30 "postgres on 127.0.0.1:$PG_PORT" login_works || die "postgres does not answer"
  log "postgres restarted (immediate) in $(elapsed_since "$t0")"
}

# stop-immediate: the server gone at once (no checkpoint, clients cut off), for the fault
# matrix's "Postgres unreachable" row; `start` brings it back.
stop_immediate() {
  [[ -n ${DATABASE_URL:-} ]] && die "DATABASE_URL is set: not our server to stop"
  locate
  cluster_running "$PG_DATA" || { log "postgres: not running"; return 0; }
  as_pg "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m immediate -w -t 60 >>"$PG_LOG" 2>&1 \
    || die "postgres did not stop: see $PG_LOG"
  log "postgres: stopped (immediate)"
}

stop() {
  if [[ -n ${DATABASE_URL:-} ]]; then log "DATABASE_URL is set: nothing of ours to stop"; return 0; fi
  locate
  if ! cluster_running "$PG_DATA"; then log "postgres: not running"; return 0; fi
  stop_cluster "$PG_DATA" || die "postgres did not stop: see $PG_LOG"
  log "postgres: stopped"
}

status() {
  if [[ -n ${DATABASE_URL:-} ]]; then
    if external_ready; then log "postgres (external): answering"; return 0; fi
    log "postgres (external): not answering"; return 1
  fi
  locate
  if cluster_running "$PG_DATA" && tcp_ready; then
    log "postgres: running on 127.0.0.1:$PG_PORT (data: $PG_DATA)"
    return 0
  fi
  log "postgres: not running"
  return 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  stop-immediate) stop_immediate ;;
  restart-immediate) restart_immediate ;;
  status) status ;;
  *) echo "usage: $0 start|stop|stop-immediate|restart-immediate|status" >&2; exit 2 ;;
esac
