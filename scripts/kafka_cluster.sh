#!/usr/bin/env bash
# A three-broker Apache Kafka cluster in KRaft mode on loopback ports, for the fault matrix's
# cluster rows and for trying the services on more than one broker (docs/kafka.md, "A
# three-broker cluster"; docs/reliability.md).
#
#   scripts/kafka_cluster.sh start     start the three nodes (or reuse them); waits until the
#                                      cluster serves with all three brokers registered
#   scripts/kafka_cluster.sh stop      stop them
#   scripts/kafka_cluster.sh status    exit 0 when the cluster answers with three brokers
#   scripts/kafka_cluster.sh bootstrap print the bootstrap list (host:port,host:port,host:port)
#   scripts/kafka_cluster.sh kill N    SIGKILL node N (1..3); `start` brings it back
#   scripts/kafka_cluster.sh stop-node N  stop node N cleanly (a controlled shutdown moves the
#                                      leaders of its partitions to the other brokers; after
#                                      `start` the preferred leaders move back within 5 s)
#
# Each node is broker and controller (a three-voter quorum), with the one-node broker's
# authentication (SASL/SCRAM-SHA-256 for clients and between brokers, the same principals and
# dev passwords: scripts/kafka.sh), and replication for exactly once under the loss of a
# broker: default.replication.factor=3, min.insync.replicas=2, and the same for the
# transaction state log and the offsets topic. Ports: node N's client port is
# KAFKA_CLUSTER_BASE_PORT + 100 * (N - 1) (default KAFKA_PORT + 100), its controller port that + 1.
# State in $STATE_DIR/kafka-cluster/nodeN; the jars and credentials of scripts/kafka.sh.
#
# The services run on it by configuration only:
#   export KAFKA_BOOTSTRAP_SERVERS=$(scripts/kafka_cluster.sh bootstrap)
#   export KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT KAFKA_SASL_MECHANISM=SCRAM-SHA-256
#   export KAFKA_USERNAME=mailctl-admin KAFKA_PASSWORD=$(scripts/kafka.sh password mailctl-admin)
#   export KAFKA_REPLICATION_FACTOR=3
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KAFKA_INFRA="$ROOT_DIR/infra/kafka"
KAFKA_VERSION="$(sed -n 's:.*<kafka\.version>\(.*\)</kafka\.version>.*:\1:p' "$KAFKA_INFRA/pom.xml" | head -n 1)"
KAFKA_LIBS="$CACHE_DIR/kafka-$KAFKA_VERSION/libs"
CLUSTER_STATE="$STATE_DIR/kafka-cluster"
CLUSTER_ID_FILE="$CLUSTER_STATE/cluster.id"
BASE_PORT="${KAFKA_CLUSTER_BASE_PORT:-$((KAFKA_PORT + 100))}"
NODES=(1 2 3)
HEAP="${KAFKA_CLUSTER_HEAP_OPTS:--Xms128m -Xmx512m}"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-180}"
ADMIN=mailctl-admin
PYTHON="${PYTHON:-python3}"

client_port() { echo $((BASE_PORT + 100 * ($1 - 1))); }
controller_port() { echo $(($(client_port "$1") + 1)); }
node_dir() { echo "$CLUSTER_STATE/node$1"; }
node_config() { echo "$(node_dir "$1")/server.properties"; }
node_pidfile() { echo "$RUN_DIR/kafka-node$1.pid"; }
node_log() { echo "$LOG_DIR/kafka-node$1.out"; }
bootstrap() {
  local n out=()
  for n in "${NODES[@]}"; do out+=("127.0.0.1:$(client_port "$n")"); done
  local IFS=,; echo "${out[*]}"
}
voters() {
  local n out=()
  for n in "${NODES[@]}"; do out+=("$n@127.0.0.1:$(controller_port "$n")"); done
  local IFS=,; echo "${out[*]}"
}

probe() {
  KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT KAFKA_SASL_MECHANISM=SCRAM-SHA-256 \
    KAFKA_USERNAME=$ADMIN KAFKA_PASSWORD="$(kafka_password $ADMIN)" \
    "$PYTHON" "$KAFKA_INFRA/probe.py" "$@"
}
# three_brokers HOST:PORT: the cluster answers there with all three brokers registered.
three_brokers() { probe "$1" --timeout 2 2>/dev/null | grep -q 'brokers=3'; }

our_pid() {
  local n=$1 pid
  pid_alive "$(node_pidfile "$n")" || return 1
  pid=$(cat "$(node_pidfile "$n")")
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "kafka.Kafka $(node_config "$n")" || return 1
  echo "$pid"
}

# render N: the one-node template with this node's id, ports, quorum and replication.
render() {
  local n=$1 dir config
  dir=$(node_dir "$n"); config=$(node_config "$n")
  mkdir -p "$dir"
  (umask 077; sed -e "s|@KAFKA_PORT@|$(client_port "$n")|g" \
    -e "s|@KAFKA_CONTROLLER_PORT@|$(controller_port "$n")|g" \
    -e "s|@KAFKA_DATA_DIR@|$dir/data|g" \
    -e "s|@KAFKA_ADMIN_USER@|$ADMIN|g" \
    -e "s|@KAFKA_ADMIN_PASSWORD@|$(kafka_password $ADMIN)|g" \
    -e "s|@KAFKA_CONTROLLER_PASSWORD@|$(kafka_password controller)|g" \
    -e "s|^node.id=.*|node.id=$n|" \
    -e "s|^controller.quorum.voters=.*|controller.quorum.voters=$(voters)|" \
    -e "s|^offsets.topic.replication.factor=.*|offsets.topic.replication.factor=3|" \
    -e "s|^transaction.state.log.replication.factor=.*|transaction.state.log.replication.factor=3|" \
    -e "s|^transaction.state.log.min.isr=.*|transaction.state.log.min.isr=2|" \
    -e "s|^share.coordinator.state.topic.replication.factor=.*|share.coordinator.state.topic.replication.factor=3|" \
    -e "s|^share.coordinator.state.topic.min.isr=.*|share.coordinator.state.topic.min.isr=2|" \
    -e "s|^default.replication.factor=.*|default.replication.factor=3|" \
    -e "s|^min.insync.replicas=.*|min.insync.replicas=2|" \
    "$KAFKA_INFRA/server.properties.template" >"$config.tmp"
    # A restarted broker gets the leadership of its preferred partitions back soon (the
    # default check runs every 5 minutes).
    printf '\n# scripts/kafka_cluster.sh\nleader.imbalance.check.interval.seconds=5\n' >>"$config.tmp")
  mv "$config.tmp" "$config"
}

java_opts() {
  # shellcheck disable=SC2206  # a list of JVM flags, split on purpose
  JAVA_OPTS=($HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError
    -Djava.awt.headless=true "-Dkafka.logs.dir=$LOG_DIR/kafka-node$1"
    "-Dlog4j2.configurationFile=$KAFKA_INFRA/log4j2.xml")
}

# format N: once per data dir, with the cluster's id and the SCRAM users.
format() {
  local n=$1 dir name scram=()
  dir=$(node_dir "$n")
  [[ -f $dir/data/meta.properties ]] && return 0
  for name in mailctl-admin mailctl-api mailctl-dispatcher mailctl-delivery mailctl-projections; do
    scram+=(--add-scram "SCRAM-SHA-256=[name=$name,password=$(kafka_password "$name")]")
  done
  java_opts "$n"
  java "${JAVA_OPTS[@]}" -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool format \
    --cluster-id "$(cat "$CLUSTER_ID_FILE")" --config "$(node_config "$n")" "${scram[@]}" \
    >>"$(node_log "$n")" 2>&1 || { tail -n 20 "$(node_log "$n")" >&2; die "formatting node $n failed"; }
}

start_node() {
  local n=$1 port
  our_pid "$n" >/dev/null && return 0
  for port in "$(client_port "$n")" "$(controller_port "$n")"; do
    port_open 127.0.0.1 "$port" && die "port $port is taken by a process this script did not start"
  done
  render "$n"
  format "$n"
  java_opts "$n"
  mkdir -p "$LOG_DIR/kafka-node$n"
  setsid nohup java "${JAVA_OPTS[@]}" -cp "$KAFKA_LIBS/*" kafka.Kafka "$(node_config "$n")" \
    </dev/null >>"$(node_log "$n")" 2>&1 &
  echo $! >"$(node_pidfile "$n")"
  log "node $n starting (pid $!) at 127.0.0.1:$(client_port "$n")"
}

cmd_start() {
  local t0 n
  t0=$(now_ms)
  bash "$ROOT_DIR/scripts/kafka.sh" prepare
  mkdir -p "$CLUSTER_STATE"
  [[ -f $CLUSTER_ID_FILE ]] || head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' | sed 's/^-/A/' >"$CLUSTER_ID_FILE"
  for n in "${NODES[@]}"; do start_node "$n"; done
  for n in "${NODES[@]}"; do
    wait_until "$START_TIMEOUT" "node $n with three brokers" three_brokers "127.0.0.1:$(client_port "$n")" \
      || die "the cluster is not ready; see $(node_log "$n") and $LOG_DIR/kafka-node$n/"
  done
  (
    cd "$ROOT_DIR"
    KAFKA_BOOTSTRAP_SERVERS=$(bootstrap) KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT \
      KAFKA_SASL_MECHANISM=SCRAM-SHA-256 KAFKA_USERNAME=$ADMIN \
      KAFKA_PASSWORD="$(kafka_password $ADMIN)" PYTHONPATH="$ROOT_DIR" \
      "$ROOT_DIR/.venv/bin/python" -m services.common.kafka_admin apply-service-acls
  ) >>"$LOG_DIR/kafka-cluster.out" 2>&1 || die "applying the ACLs failed, see $LOG_DIR/kafka-cluster.out"
  log "three-broker cluster ready at $(bootstrap) in $(elapsed_since "$t0")"
}

cmd_stop() {
  local n
  for n in "${NODES[@]}"; do stop_pidfile "kafka node $n" "$(node_pidfile "$n")"; done
}

cmd_status() {
  local n rc=0
  for n in "${NODES[@]}"; do
    if our_pid "$n" >/dev/null; then echo "node $n: running at 127.0.0.1:$(client_port "$n")"
    else echo "node $n: not running"; rc=1; fi
  done
  three_brokers "$(bootstrap | cut -d, -f1)" || rc=1
  return $rc
}

cmd_kill() {
  local n=${1:-} pid
  [[ $n =~ ^[123]$ ]] || die "usage: $0 kill 1|2|3"
  pid=$(our_pid "$n") || die "node $n is not running"
  kill -9 "$pid"
  log "node $n: SIGKILLed (pid $pid)"
}

cmd_stop_node() {
  local n=${1:-}
  [[ $n =~ ^[123]$ ]] || die "usage: $0 stop-node 1|2|3"
  stop_pidfile "kafka node $n" "$(node_pidfile "$n")"
}

case "${1:-}" in
  start) cmd_start ;;
  stop-node) cmd_stop_node "${2:-}" ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  bootstrap) bootstrap ;;
  kill) cmd_kill "${2:-}" ;;
  *) echo "usage: $0 start|stop|status|bootstrap|kill N|stop-node N" >&2; exit 2 ;;
esac
