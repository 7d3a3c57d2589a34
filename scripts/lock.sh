#!/usr/bin/env bash
# Regenerate the hashed lock files from pyproject.toml's ranges and constraints.txt's pins:
#   requirements.lock      what paysched needs to run, with the HTTP API (scripts/demo.sh)
#   requirements-dev.lock  that plus the PostgreSQL driver and the test tools (scripts/test.sh)
#   requirements-bench.lock  requirements.lock plus the PostgreSQL driver, matplotlib and py-spy
#                            (bench/run.py)
# Run it after changing a dependency or a pin; commit all four files together.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tools="$(mktemp -d)"
trap 'rm -rf "$tools"' EXIT
"${PYTHON:-python3}" -m venv "$tools/venv"
"$tools/venv/bin/pip" install --quiet --disable-pip-version-check "uv==0.13.8"
compile() {
  "$tools/venv/bin/uv" pip compile pyproject.toml -c constraints.txt --generate-hashes \
    --python-version 3.11 --no-header --quiet "$@"
}
compile --extra api -o requirements.lock
compile --extra dev -o requirements-dev.lock
compile --extra api --extra bench -o requirements-bench.lock
