#!/usr/bin/env bash
# What a user of the package gets (issue 13): builds the sdist and, from it, the wheel; installs each
# into a fresh virtualenv outside the checkout; checks that the wheel alone brings only the client
# (no server, CLI, web or test extras), ships py.typed and runs `topgun --version`; then runs the
# pytest plugin from a tiny project of its own (one test using `topgun_client` against the embedded
# cluster) in both virtualenvs, and the sdist's own tests from its unpacked directory.
# Needs python3.11 (or $PYTHON) with venv, and pip access to PyPI. Run by .ci/run; ~1-2 minutes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
PYTHON=${PYTHON:-python3.11}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/topgun-package-check.XXXXXX")
trap '[[ -n ${KEEP_WORK:-} ]] || rm -rf "$WORK"' EXIT
VERSION=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' topgun/__init__.py)

step() { echo "package_check: $*"; }
venv() { "$PYTHON" -m venv "$WORK/$1" && echo "$WORK/$1"; }
pip_install() { "$1/bin/python" -m pip install --quiet --disable-pip-version-check "${@:2}"; }
fail() { echo "package_check: FAILED: $*" >&2; exit 1; }

step "building the sdist and the wheel (from the sdist) with $("$PYTHON" --version)"
builder=$(venv build)
pip_install "$builder" build setuptools wheel
"$builder/bin/python" -m build --no-isolation --outdir "$WORK/dist" "$REPO" >"$WORK/build.log" 2>&1 \
    || { cat "$WORK/build.log"; fail "python -m build"; }
wheel="$WORK/dist/topgun-$VERSION-py3-none-any.whl"
sdist="$WORK/dist/topgun-$VERSION.tar.gz"
[[ -f $wheel && -f $sdist ]] || fail "expected $wheel and $sdist, got: $(ls "$WORK/dist")"
"$builder/bin/python" - "$wheel" <<'EOF' || fail "wheel contents"
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
assert "topgun/py.typed" in names, "no topgun/py.typed in the wheel"
assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names), names
assert not any(n.startswith(("tests/", "examples/", "benchmarks/")) for n in names), "the wheel ships repo files"
EOF

# The tiny project: its own directory, no conftest, the plugin comes from the entry point.
mkdir "$WORK/project"
cat >"$WORK/project/test_roundtrip.py" <<'EOF'
import pathlib
import sys

import topgun


def test_a_round_trip_through_the_embedded_cluster(topgun_client):
    # the installed package, not a checkout
    assert pathlib.Path(topgun.__file__).resolve().is_relative_to(pathlib.Path(sys.prefix).resolve())
    users = topgun_client.map("users")
    users.set("user:42", {"name": "Ada"})
    assert users.get("user:42") == {"name": "Ada"}
EOF
run_project() {
    step "the pytest plugin from a project of its own, with $1"
    (cd "$WORK/project" && "$2/bin/pytest" -q -p no:cacheprovider) || fail "tiny project with $1"
}

step "the wheel alone, in a fresh virtualenv"
wheel_env=$(venv wheel-env)
pip_install "$wheel_env" "$wheel"
"$wheel_env/bin/python" - <<'EOF' || fail "client-only install"
import importlib.metadata as md
import pathlib

import topgun

topgun.TopGunClient
import topgun.cluster.provider  # noqa: E402,F401
for name in ("gevent-websocket", "ujson", "pytest", "flask", "django", "gunicorn", "locust"):
    try:
        md.version(name)
    except md.PackageNotFoundError:
        continue
    raise SystemExit(f"installing topgun alone also installed {name}")
assert (pathlib.Path(topgun.__file__).parent / "py.typed").is_file(), "py.typed is not installed"
EOF
[[ "$("$wheel_env/bin/topgun" --version)" == "topgun $VERSION" ]] || fail "topgun --version"
[[ "$("$wheel_env/bin/python" -m topgun --version)" == "topgun $VERSION" ]] || fail "python -m topgun --version"
# without the extras the command line says which one to install
help=$("$wheel_env/bin/topgun" --help)
[[ $help == *"pip install 'topgun[cli]'"* ]] || fail "topgun --help does not name the [cli] extra: $help"
server_out=$("$wheel_env/bin/topgun" server 2>&1 || true)
[[ $server_out == *"pip install 'topgun[server]'"* ]] || fail "topgun server does not name [server]: $server_out"
pip_install "$wheel_env" "$wheel[test]"
run_project "the wheel" "$wheel_env"

step "the sdist, in a fresh virtualenv"
sdist_env=$(venv sdist-env)
# setuptools: tests/packaging builds an sdist itself (Python 3.12+ venvs come without it)
pip_install "$sdist_env" "$sdist[test]" setuptools
run_project "the sdist" "$sdist_env"

step "the sdist's own tests, from its unpacked directory"
tar xzf "$sdist" -C "$WORK"
server_bin=$("$sdist_env/bin/python" -m topgun.testing.realserver install --cache-dir "$REPO/.cache/topgun-server")
# pytest, not python -m pytest: the unpacked topgun/ must not shadow the installed package
(cd "$WORK/topgun-$VERSION" && TOPGUN_SERVER_BIN=$server_bin "$sdist_env/bin/pytest" -q -p no:cacheprovider \
    tests/unit tests/packaging tests/test_examples.py) || fail "the sdist's own tests"

step "OK: wheel and sdist of topgun $VERSION"
