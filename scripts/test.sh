#!/usr/bin/env bash
# Set up paysched with its test tools and run the whole test suite. Uses Redis on
# 127.0.0.1:6379 and PostgreSQL on 127.0.0.1:5432 when they answer; without them, Redis tests
# run on private servers and PostgreSQL tests are skipped (under CI=true they fail instead).
# Extra arguments go to pytest (e.g. -k worker, -x).
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh" "[dev]"
exec .venv/bin/python -m pytest "$@"
