#!/usr/bin/env bash
# Creates .venv with the project's pinned dependencies. Reinstalls only when pyproject.toml or
# requirements.lock changed (a stamp holds their hash). Wheels come from pip's cache when present.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VENV="$ROOT_DIR/.venv"
PY="${PYTHON_BIN:-$(command -v python3.11 || command -v python3)}"
stamp="$VENV/.mailctl-stamp"
want=$(cat "$ROOT_DIR/pyproject.toml" "$ROOT_DIR/requirements.lock" | sha256sum | cut -d' ' -f1)

if [[ -x $VENV/bin/python && -f $stamp && $(cat "$stamp") == "$want" ]]; then
  exit 0
fi

start=$(now_ms)
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
  || die "Python 3.11 is required (found $("$PY" --version 2>&1))"
[[ -x $VENV/bin/python ]] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip==25.3
# The lock constrains every transitive dependency to the versions the project was tested with.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
  -c "$ROOT_DIR/requirements.lock" -e "$ROOT_DIR[dev]"
echo "$want" > "$stamp"
log "python environment ready in $(elapsed_since "$start") ($VENV)"
