#!/usr/bin/env bash
# Starts (or reuses) the servers the service needs: Kafka, Postgres, the SMTP sink.
# Each script starts nothing when its server is given by the environment (external mode).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
start=$(now_ms)
# Kafka is the slowest to start: give it a head start while Postgres and the sink come up.
bash "$ROOT_DIR/scripts/kafka.sh" start & kafka_pid=$!
bash "$ROOT_DIR/scripts/postgres.sh" start
bash "$ROOT_DIR/scripts/smtp_sink.sh" start
wait "$kafka_pid" || die "Kafka did not start: see $LOG_DIR/kafka.log"
log "servers ready in $(elapsed_since "$start")"
