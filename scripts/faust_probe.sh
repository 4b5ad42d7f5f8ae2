#!/usr/bin/env bash
# `make probe-faust`: the faust-streaming exactly-once probe (docs/faust-findings.md), kept as
# evidence and runnable, outside `make test`. faust-streaming is the optional dependency group
# `faust` of pyproject.toml; it is installed here into .venv, constrained by requirements.lock
# like everything else (scripts/venv.sh), and used by nothing but this probe.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VENV="$ROOT_DIR/.venv"
if ! "$VENV/bin/python" -c 'import faust' 2>/dev/null; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    -c "$ROOT_DIR/requirements.lock" -e "$ROOT_DIR[dev,faust]"
fi
exec bash "$ROOT_DIR/scripts/with_env.sh" "$VENV/bin/python" -m pytest probes/faust "$@"
