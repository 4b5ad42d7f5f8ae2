#!/usr/bin/env bash
# Single-node Apache Kafka broker in KRaft mode (broker and controller in one JVM), for
# development and tests. No Docker: the broker's jars come from Maven Central (infra/kafka/pom.xml)
# and run from $CACHE_DIR/kafka-<version>/libs. See docs/kafka.md.
#
#   scripts/kafka.sh start     start the broker, or reuse the running one; waits until it serves
#   scripts/kafka.sh stop      stop the broker started by start
#   scripts/kafka.sh status    exit 0 when the broker answers Kafka requests
#   scripts/kafka.sh version   print the pinned Kafka version
#   scripts/kafka.sh password NAME   print the dev password of principal NAME (.state only)
#   scripts/kafka.sh prepare   fetch the jars and generate the credentials, start nothing
#                              (scripts/kafka_cluster.sh uses both)
#
# The broker requires SASL/SCRAM-SHA-256 and authorises with ACLs (docs/kafka.md). The principals'
# dev passwords are generated once into $STATE_DIR/kafka/credentials (mode 600, never committed)
# and created as SCRAM users when the data directory is formatted; the service principals' ACLs
# are (re)applied after every start by services/common/kafka_admin.py.
#
# External mode: when KAFKA_BOOTSTRAP_SERVERS is set, start/status only wait for / check that
# server and nothing is started or stopped here.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KAFKA_INFRA="$ROOT_DIR/infra/kafka"
KAFKA_POM="$KAFKA_INFRA/pom.xml"
# The version is pinned once, in the POM; reading it here keeps the script and the jars in step.
KAFKA_VERSION="$(sed -n 's:.*<kafka\.version>\(.*\)</kafka\.version>.*:\1:p' "$KAFKA_POM" | head -n 1)"
[[ -n $KAFKA_VERSION ]] || die "no <kafka.version> in $KAFKA_POM"
KAFKA_LIBS="$CACHE_DIR/kafka-$KAFKA_VERSION/libs"
KAFKA_STATE="$STATE_DIR/kafka"
KAFKA_DATA="$KAFKA_STATE/data"
KAFKA_CONFIG="$KAFKA_STATE/server.properties"
KAFKA_CLUSTER_ID_FILE="$KAFKA_STATE/cluster.id"
KAFKA_FORMATTED_BY="$KAFKA_STATE/formatted-by"
# format_stamp: what the data directory's format holds: the Kafka version and the SCRAM users of
# the credentials file (by hash). A directory formatted otherwise (by another version, before
# authentication, or for other passwords) is reformatted.
format_stamp() { echo "$KAFKA_VERSION+scram:$(sha256sum "$KAFKA_CREDENTIALS" | cut -c1-16)"; }
KAFKA_PIDFILE="$RUN_DIR/kafka.pid"
KAFKA_LOCK="$RUN_DIR/kafka.lock"
KAFKA_LOG="$LOG_DIR/kafka.log"
KAFKA_OUT="$LOG_DIR/kafka.out"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-120}"
# Kafka's own default is -Xmx1g -Xms1g; a smaller initial heap leaves room for the other
# services on a 2-core, shared machine.
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}"
PYTHON="${PYTHON:-python3}"
LOCAL_BOOTSTRAP="127.0.0.1:$KAFKA_PORT"

# The principals of the local broker (docs/kafka.md). The admin is a super user (scripts, tests);
# the services' ACLs are in services/common/kafka_admin.py; `controller` is the broker itself.
PRINCIPALS=(mailctl-admin mailctl-api mailctl-dispatcher mailctl-delivery mailctl-projections controller)
KAFKA_ADMIN_USER=mailctl-admin

# ensure_credentials: one random password per principal, generated once.
ensure_credentials() {
  local name missing=0
  mkdir -p "$KAFKA_STATE"
  for name in "${PRINCIPALS[@]}"; do
    grep -q "^$name " "$KAFKA_CREDENTIALS" 2>/dev/null || missing=1
  done
  (( missing )) || return 0
  (
    umask 077
    for name in "${PRINCIPALS[@]}"; do
      grep "^$name " "$KAFKA_CREDENTIALS" 2>/dev/null ||
        echo "$name $(head -c 18 /dev/urandom | base64 | tr '+/' '-_')"
    done >"$KAFKA_CREDENTIALS.tmp"
    mv "$KAFKA_CREDENTIALS.tmp" "$KAFKA_CREDENTIALS"
  )
}

password() { kafka_password "$1"; }

# probe and the ACL step talk to the local broker as its admin; in external mode they use
# whatever KAFKA_SECURITY_PROTOCOL / KAFKA_USERNAME / KAFKA_PASSWORD the environment sets.
probe() {
  if [[ -n ${KAFKA_BOOTSTRAP_SERVERS:-} ]]; then
    "$PYTHON" "$KAFKA_INFRA/probe.py" "$@"
  else
    KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT KAFKA_SASL_MECHANISM=SCRAM-SHA-256 \
      KAFKA_USERNAME=$KAFKA_ADMIN_USER KAFKA_PASSWORD="$(password $KAFKA_ADMIN_USER)" \
      "$PYTHON" "$KAFKA_INFRA/probe.py" "$@"
  fi
}

# apply_acls: the service principals' ACLs for the default topic prefix (idempotent). Skipped
# when the ACLs of this very definition (by hash of kafka_admin.py) were applied to this data
# directory already; a format removes the stamp.
KAFKA_ACLS_STAMP="$KAFKA_STATE/acls-applied"
apply_acls() {
  local venv_python="$ROOT_DIR/.venv/bin/python" stamp
  stamp=$(sha256sum "$ROOT_DIR/services/common/kafka_admin.py" | cut -d' ' -f1)
  [[ $(cat "$KAFKA_ACLS_STAMP" 2>/dev/null) == "$stamp" ]] && return 0
  [[ -x $venv_python ]] || die "no $venv_python to apply the ACLs with (run scripts/venv.sh)"
  (
    cd "$ROOT_DIR"
    KAFKA_BOOTSTRAP_SERVERS=$LOCAL_BOOTSTRAP KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT \
      KAFKA_SASL_MECHANISM=SCRAM-SHA-256 KAFKA_USERNAME=$KAFKA_ADMIN_USER \
      KAFKA_PASSWORD="$(password $KAFKA_ADMIN_USER)" PYTHONPATH="$ROOT_DIR" \
      "$venv_python" -m services.common.kafka_admin apply-service-acls
  ) >>"$KAFKA_OUT" 2>&1 || { tail -n 20 "$KAFKA_OUT" >&2; die "applying the ACLs failed, see $KAFKA_OUT"; }
  echo "$stamp" >"$KAFKA_ACLS_STAMP"
  log "service ACLs applied"
}

# Serialises start/stop: two callers (make targets, engineers) starting at once must not launch
# two brokers on one data directory.
take_lock() {
  exec 9>"$KAFKA_LOCK"
  flock -w "$KAFKA_START_TIMEOUT" 9 || die "another kafka.sh holds $KAFKA_LOCK"
}

# our_kafka_pid: the pid from the pidfile, only when it is alive AND is our broker; a pid reused
# by an unrelated process after a reboot or crash must not be taken for (or killed as) Kafka.
our_kafka_pid() {
  local pid
  pid_alive "$KAFKA_PIDFILE" || return 1
  pid=$(cat "$KAFKA_PIDFILE")
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "kafka.Kafka $KAFKA_CONFIG" || return 1
  echo "$pid"
}

# Called when our_kafka_pid failed: whatever the pidfile names is not our broker.
drop_stale_pidfile() {
  local pid
  [[ -f $KAFKA_PIDFILE ]] || return 0
  pid=$(cat "$KAFKA_PIDFILE")
  if pid_running "$pid"; then
    log "removing stale pidfile: pid $pid is alive but is not this broker (pid reused); left alone"
  else
    log "removing stale pidfile: pid $pid is not running"
  fi
  rm -f "$KAFKA_PIDFILE"
}

fetch_libs() {
  local stamp tmp
  # The stamp is the POM's hash, so editing the POM (version, logging) fetches again.
  stamp=$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)
  if [[ -f $KAFKA_LIBS/.complete && $(cat "$KAFKA_LIBS/.complete") == "$stamp" ]]; then
    return 0
  fi
  command -v mvn >/dev/null || die "mvn not found: it fetches the Kafka jars from Maven Central"
  log "fetching Kafka $KAFKA_VERSION jars into $KAFKA_LIBS (once)"
  # Fetch into a scratch directory and rename, so an interrupted fetch is never mistaken for a
  # complete one.
  tmp="$KAFKA_LIBS.partial.$$"
  rm -rf "$tmp"
  # Debian's Maven 3.8 prints bare colour-reset codes even in batch mode; strip them.
  mvn -B -q -f "$KAFKA_POM" dependency:copy-dependencies -Dkafka.libs.dir="$tmp" 2>&1 |
    sed -e 's/\x1b\[[0-9;]*m//g' -e '/^$/d' >&2 ||
    { rm -rf "$tmp"; die "mvn could not fetch the Kafka jars"; }
  [[ -f $tmp/kafka_2.13-$KAFKA_VERSION.jar ]] || { rm -rf "$tmp"; die "kafka_2.13 jar missing"; }
  echo "$stamp" >"$tmp/.complete"
  rm -rf "$KAFKA_LIBS"
  mv "$tmp" "$KAFKA_LIBS"
}

render_config() {
  mkdir -p "$KAFKA_STATE"
  (umask 077; sed -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" \
    -e "s|@KAFKA_CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" \
    -e "s|@KAFKA_DATA_DIR@|$KAFKA_DATA|g" \
    -e "s|@KAFKA_ADMIN_USER@|$KAFKA_ADMIN_USER|g" \
    -e "s|@KAFKA_ADMIN_PASSWORD@|$(password $KAFKA_ADMIN_USER)|g" \
    -e "s|@KAFKA_CONTROLLER_PASSWORD@|$(password controller)|g" \
    "$KAFKA_INFRA/server.properties.template" >"$KAFKA_CONFIG.tmp")
  mv "$KAFKA_CONFIG.tmp" "$KAFKA_CONFIG"
}

# Kafka's Uuid format: 16 random bytes, URL-safe base64 without padding. Kafka's own generator
# avoids a leading '-' so the id never looks like a command-line option; so do we.
new_cluster_id() {
  local id
  while :; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    [[ $id == -* ]] || break
  done
  echo "$id"
}

meta_value() { sed -n "s/^$1=//p" "$KAFKA_DATA/meta.properties" 2>/dev/null | head -n 1; }

java_opts() {
  # shellcheck disable=SC2206  # KAFKA_HEAP_OPTS is a list of JVM flags, split on purpose
  JAVA_OPTS=($KAFKA_HEAP_OPTS
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
    # A broker that ran out of memory is in an undefined state; dying lets status notice.
    -XX:+ExitOnOutOfMemoryError
    -Djava.awt.headless=true
    "-Dkafka.logs.dir=$LOG_DIR"
    "-Dlog4j2.configurationFile=$KAFKA_INFRA/log4j2.xml")
}

# Formats the data directory once. Reformats (losing the dev broker's data) only when it cannot
# be used as is: formatted for another cluster id, by another Kafka version (a newer metadata log
# cannot be read by an older broker), or half-formatted by an interrupted run.
ensure_formatted() {
  local cluster_id="" reason="" found
  [[ -f $KAFKA_CLUSTER_ID_FILE ]] && cluster_id=$(cat "$KAFKA_CLUSTER_ID_FILE")
  if [[ -f $KAFKA_DATA/meta.properties ]]; then
    found=$(meta_value cluster.id)
    if [[ -z $cluster_id ]]; then
      # Our record of the id was lost but the data is intact: adopt it rather than wipe it.
      cluster_id=$found
      echo "$cluster_id" >"$KAFKA_CLUSTER_ID_FILE"
    fi
    if [[ $found != "$cluster_id" ]]; then
      reason="data dir belongs to cluster '$found', expected '$cluster_id'"
    elif [[ $(meta_value node.id) != 1 ]]; then
      reason="data dir belongs to node $(meta_value node.id), expected 1"
    elif [[ $(cat "$KAFKA_FORMATTED_BY" 2>/dev/null) != "$(format_stamp)" ]]; then
      reason="data dir formatted as $(cat "$KAFKA_FORMATTED_BY" 2>/dev/null || echo '?'), needed is $(format_stamp) (Kafka version, SCRAM users)"
    else
      return 0
    fi
  elif [[ -d $KAFKA_DATA ]] && [[ -n $(ls -A "$KAFKA_DATA") ]]; then
    reason="data dir has no meta.properties (interrupted format?)"
  fi
  if [[ -n $reason ]]; then
    log "reformatting $KAFKA_DATA: $reason"
    rm -rf "$KAFKA_DATA"
  fi
  [[ -n $cluster_id ]] || { cluster_id=$(new_cluster_id); echo "$cluster_id" >"$KAFKA_CLUSTER_ID_FILE"; }
  rm -f "$KAFKA_FORMATTED_BY" "$KAFKA_ACLS_STAMP"
  java_opts
  log "formatting $KAFKA_DATA (cluster $cluster_id)"
  # The SCRAM users go into the metadata log at format time: the broker's own inter-broker
  # login (the admin) must exist before the broker can start.
  local scram=() name
  for name in "${PRINCIPALS[@]}"; do
    [[ $name == controller ]] && continue  # PLAIN, on the controller listener only
    scram+=(--add-scram "SCRAM-SHA-256=[name=$name,password=$(password "$name")]")
  done
  java "${JAVA_OPTS[@]}" -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool \
    format --cluster-id "$cluster_id" --config "$KAFKA_CONFIG" "${scram[@]}" >>"$KAFKA_OUT" 2>&1 ||
    { tail -n 20 "$KAFKA_OUT" >&2; die "formatting failed, see $KAFKA_OUT"; }
  echo "$(format_stamp)" >"$KAFKA_FORMATTED_BY"
}

# wait_ready PID: until the broker answers Kafka requests; fails fast when the JVM exits.
wait_ready() {
  local pid=$1 deadline=$(($(date +%s) + KAFKA_START_TIMEOUT))
  until probe "$LOCAL_BOOTSTRAP" --timeout 2 >/dev/null 2>&1; do
    if ! pid_running "$pid"; then
      rm -f "$KAFKA_PIDFILE"
      tail -n 30 "$KAFKA_OUT" "$KAFKA_LOG" >&2 2>/dev/null || true
      die "the broker exited during start-up, see $KAFKA_LOG and $KAFKA_OUT"
    fi
    if (($(date +%s) >= deadline)); then
      log "not ready after ${KAFKA_START_TIMEOUT}s, see $KAFKA_LOG"
      return 1
    fi
    sleep 0.2
  done
}

start_external() {
  local t0
  t0=$(now_ms)
  log "external mode: waiting for $KAFKA_BOOTSTRAP_SERVERS (nothing is started)"
  wait_until "$KAFKA_START_TIMEOUT" "Kafka at $KAFKA_BOOTSTRAP_SERVERS" \
    probe "$KAFKA_BOOTSTRAP_SERVERS" --timeout 2 || die "Kafka at $KAFKA_BOOTSTRAP_SERVERS does not answer"
  log "external Kafka at $KAFKA_BOOTSTRAP_SERVERS ready in $(elapsed_since "$t0")"
}

cmd_start() {
  local t0 pid port
  [[ -n ${KAFKA_BOOTSTRAP_SERVERS:-} ]] && { start_external; return; }
  t0=$(now_ms)
  take_lock
  if pid=$(our_kafka_pid); then
    if probe "$LOCAL_BOOTSTRAP" --timeout 2 >/dev/null 2>&1; then
      apply_acls  # a checkout with other ACLs than the running broker has
      log "reusing running Kafka $KAFKA_VERSION (pid $pid) at $LOCAL_BOOTSTRAP, checked in $(elapsed_since "$t0")"
      return 0
    fi
    # Still starting (another caller launched it) or wedged: give it the start-up timeout.
    log "Kafka (pid $pid) is running but not answering yet; waiting"
    if wait_ready "$pid"; then
      apply_acls
      log "Kafka $KAFKA_VERSION (pid $pid) ready at $LOCAL_BOOTSTRAP in $(elapsed_since "$t0")"
      return 0
    fi
    log "Kafka (pid $pid) never became ready; restarting it"
    stop_pidfile kafka "$KAFKA_PIDFILE"
  else
    drop_stale_pidfile
  fi
  for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
    if port_open 127.0.0.1 "$port"; then
      die "port $port is taken by a process this script did not start (see: ss -ltnp 'sport = :$port'); stop it, or set KAFKA_BOOTSTRAP_SERVERS to use it"
    fi
  done
  fetch_libs
  ensure_credentials
  render_config
  ensure_formatted
  java_opts
  # setsid + nohup: the broker outlives the shell that started it and does not get the Ctrl-C
  # meant for a foreground command in that terminal. fd 9 (the lock) must not be inherited, or
  # the broker would hold the lock for its whole life.
  setsid nohup java "${JAVA_OPTS[@]}" -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_CONFIG" \
    </dev/null >>"$KAFKA_OUT" 2>&1 9>&- &
  pid=$!
  echo "$pid" >"$KAFKA_PIDFILE"
  log "Kafka $KAFKA_VERSION starting (pid $pid), log $KAFKA_LOG"
  wait_ready "$pid" || die "Kafka did not become ready; the broker is left running for inspection (scripts/kafka.sh stop)"
  apply_acls
  log "Kafka $KAFKA_VERSION ready at $LOCAL_BOOTSTRAP in $(elapsed_since "$t0")"
}

cmd_stop() {
  [[ -n ${KAFKA_BOOTSTRAP_SERVERS:-} ]] && { log "external mode: nothing to stop"; return 0; }
  take_lock
  if our_kafka_pid >/dev/null; then
    stop_pidfile kafka "$KAFKA_PIDFILE"
  else
    drop_stale_pidfile
    log "kafka: not running"
  fi
}

cmd_status() {
  local pid info
  if [[ -n ${KAFKA_BOOTSTRAP_SERVERS:-} ]]; then
    info=$(probe "$KAFKA_BOOTSTRAP_SERVERS" --timeout 2 2>&1) || { echo "kafka: external $KAFKA_BOOTSTRAP_SERVERS not answering: $info"; return 1; }
    echo "kafka: external $KAFKA_BOOTSTRAP_SERVERS up ($info)"
    return 0
  fi
  if ! pid=$(our_kafka_pid); then
    if port_open 127.0.0.1 "$KAFKA_PORT"; then
      echo "kafka: not running from $STATE_DIR, but something else listens on port $KAFKA_PORT"
    else
      echo "kafka: not running"
    fi
    return 1
  fi
  info=$(probe "$LOCAL_BOOTSTRAP" --timeout 2 2>&1) || { echo "kafka: pid $pid running but not answering: $info"; return 1; }
  echo "kafka: $KAFKA_VERSION up at $LOCAL_BOOTSTRAP, pid $pid ($info), log $KAFKA_LOG"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  version) echo "$KAFKA_VERSION" ;;
  prepare) fetch_libs; ensure_credentials ;;
  password) [[ -n ${2:-} ]] || die "usage: $0 password NAME"; password "$2" ;;
  *) echo "usage: $0 start|stop|status|version|prepare|password NAME" >&2; exit 2 ;;
esac
