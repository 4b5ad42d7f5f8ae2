#!/usr/bin/env bash
# with_env.sh CMD...: runs CMD with the servers' addresses exported (see export_server_env), so
# tests and benchmarks reach the servers `scripts/up.sh` started, on whatever ports it used.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export_server_env
cd "$ROOT_DIR"
exec "$@"
