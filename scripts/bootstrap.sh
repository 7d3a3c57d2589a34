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
# The project itself goes in with --no-deps, so the lock must hold every extra asked for.
case "$extras" in
  "" | "[api]") lock=requirements.lock ;;  # the runtime lock holds the API extra
  "[dev]") lock=requirements-dev.lock ;;
  "[bench]") lock=requirements-bench.lock ;;
  *) echo "bootstrap.sh: no lock file for extras $extras (\"\", \"[api]\", \"[dev]\" or \"[bench]\")" >&2
     exit 2 ;;
esac
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
"${pip[@]}" --require-hashes -r "$lock"
"${pip[@]}" --no-deps -e ".${extras}"
