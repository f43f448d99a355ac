#!/usr/bin/env bash
# The one test command. On first use it creates .venv (with $PYTHON, or the newest of
# python3.13 .. python3.10); every run installs topgun with every extra the suite needs
# (test, server, cli, web, locust) and the real topgun-server (npm), then runs pytest with your
# arguments:  scripts/test.sh -m "not realserver" -x
# Delete .venv to switch Python versions.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source scripts/venv.sh
ensure_venv test.sh
echo "test.sh: $(.venv/bin/python --version) in .venv"
# setuptools: tests/packaging builds an sdist (venvs of Python 3.12+ come without it)
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test,server,cli,web,locust]' setuptools
echo "test.sh: topgun-server at $(.venv/bin/python -m topgun.testing.realserver install)"

status=0
.venv/bin/python -m pytest "$@" || status=$?
if [[ $status -eq 5 ]]; then
    echo "test.sh: pytest collected no tests; that counts as a failure" >&2
fi
exit "$status"
