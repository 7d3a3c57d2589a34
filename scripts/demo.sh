#!/usr/bin/env bash
# Set up paysched and run its demo on the embedded default (SQLite + a private Valkey when no
# Redis answers on localhost:6379). Extra arguments go to `paysched demo` (e.g. --json).
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh" ""
exec .venv/bin/paysched demo "$@"
