#!/usr/bin/env bash
# Stops everything the project started (services first, then the servers). Leaves data in place.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
rc=0
for s in services smtp_sink postgres kafka; do
  bash "$ROOT_DIR/scripts/$s.sh" stop || rc=1
done
exit $rc
