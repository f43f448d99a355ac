#!/usr/bin/env bash
# Runs the demo (python -m topgun.cli.demo) with your arguments, in the same .venv as scripts/test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source scripts/venv.sh
ensure_venv demo.sh
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[server]'   # the demo runs the dev cluster
exec .venv/bin/python -m topgun.cli.demo "$@"
