# Sourced by the other scripts: make .venv with paysched and its locked dependencies.
# Needs only python3 (>= 3.11). Re-running is cheap: pip skips what is installed.
# Every dependency comes from a lock file with hashes (scripts/lock.sh writes them): what is
# installed is exactly what CI tested, byte for byte.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
extras="${1:-}"
lock=requirements.lock
if [ "$extras" = "[dev]" ]; then
  lock=requirements-dev.lock
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
"${pip[@]}" --require-hashes -r "$lock"
"${pip[@]}" --no-deps -e ".${extras}"
