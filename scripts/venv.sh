# Sourced by test.sh and demo.sh (run from the repo root): creates .venv on first use, with
# $PYTHON or else the newest of python3.13 .. python3.10. Delete .venv to switch versions.
ensure_venv() {
    local who="$1" python="${PYTHON:-}" candidate
    [[ -x .venv/bin/python ]] && return 0
    if [[ -z "$python" ]]; then
        for candidate in python3.13 python3.12 python3.11 python3.10; do
            # Run it rather than trust `command -v`: pyenv has shims for versions it won't run.
            if "$candidate" -c 'import ensurepip, venv' >/dev/null 2>&1; then python="$candidate"; break; fi
        done
    fi
    [[ -n "$python" ]] || { echo "$who: no python3.10-3.13 with venv found; set PYTHON" >&2; return 1; }
    "$python" -m venv .venv || { rm -rf .venv; echo "$who: $python -m venv failed" >&2; return 1; }
}
