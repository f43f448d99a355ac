#!/usr/bin/env bash
# Runs the demo (python -m topgun.demo) with your arguments, in the same .venv as scripts/test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ ! -x .venv/bin/python ]]; then
    python="${PYTHON:-}"
    if [[ -z "$python" ]]; then
        for candidate in python3.13 python3.12 python3.11 python3.10; do
            # Run it rather than trust `command -v`: pyenv has shims for versions it won't run.
            if "$candidate" -c 'import ensurepip, venv' >/dev/null 2>&1; then python="$candidate"; break; fi
        done
    fi
    [[ -n "$python" ]] || { echo "demo.sh: no python3.10-3.13 with venv found; set PYTHON" >&2; exit 1; }
    "$python" -m venv .venv || { rm -rf .venv; echo "demo.sh: $python -m venv failed" >&2; exit 1; }
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
.venv/bin/python -m topgun.testing.realserver install >/dev/null
exec .venv/bin/python -m topgun.demo "$@"
