"""What a client-only user and a pytest run of someone else's project import (issue 13, item 7).

Each check runs in a fresh interpreter: this test process has imported everything already.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Dict

import topgun

# a client-only install has none of these: they come with the server, cli, web and locust extras
EXTRAS_ONLY = ("geventwebsocket", "ujson", "flask", "django", "gunicorn", "requests", "locust", "pytest")


def _modules_after(code: str) -> list[str]:
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_the_client_imports_nothing_from_the_extras() -> None:
    loaded = _modules_after("import topgun\ntopgun.TopGunClient\nimport topgun.cluster.provider")
    assert "topgun" in loaded and "gevent" in loaded          # the probe did import the client
    assert [m for m in EXTRAS_ONLY if m in loaded] == []


def test_import_topgun_alone_does_not_import_gevent() -> None:
    assert "gevent" not in _modules_after("import topgun")


# -- the pytest plugin in a project of its own ---------------------------------------------------

_CONFTEST = '''
import json, os, sys

def pytest_unconfigure(config):
    with open(os.environ["REPORT"], "w") as out:
        json.dump({"plugin": "topgun.testing.plugin" in sys.modules, "gevent": "gevent" in sys.modules}, out)
'''


def _run_project(tmp_path: Path, test_source: str) -> Dict[str, Any]:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "conftest.py").write_text(_CONFTEST)
    (tmp_path / "test_theirs.py").write_text(textwrap.dedent(test_source))
    report = tmp_path / "report.json"
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)]
    if not any(ep.value == "topgun.testing.plugin" for ep in entry_points(group="pytest11")):
        args[3:3] = ["-p", "topgun.testing.plugin"]       # a source checkout that is not pip-installed
    env = {"PATH": "/usr/bin:/bin", "REPORT": str(report)}
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result: Dict[str, Any] = json.loads(report.read_text())
    return result


def test_the_plugin_imports_no_gevent_into_a_run_that_uses_no_topgun_fixture(tmp_path: Path) -> None:
    result = _run_project(tmp_path, """
        def test_arithmetic():
            assert 1 + 1 == 2
    """)
    assert result == {"plugin": True, "gevent": False}


def test_a_topgun_fixture_is_what_brings_gevent_in(tmp_path: Path) -> None:
    # The control for the test above: the same probe does see gevent once a fixture needs it.
    result = _run_project(tmp_path, """
        def test_uses_the_factory(topgun_cluster_factory):
            assert callable(topgun_cluster_factory)
    """)
    assert result == {"plugin": True, "gevent": True}


# -- the command line without its extras ---------------------------------------------------------

def _cli_without(blocked: tuple[str, ...], *argv: str) -> subprocess.CompletedProcess[str]:
    # None in sys.modules makes `import ujson` fail as if it were not installed
    code = (f"import sys\nfor name in {blocked!r}: sys.modules[name] = None\n"
            f"from topgun.cli import main\nsys.exit(main({list(argv)!r}))\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_a_command_whose_extra_is_missing_names_the_extra() -> None:
    proc = _cli_without(("ujson",), "get", "users", "42")
    assert proc.returncode == 2
    assert "get, " not in proc.stderr
    assert "kv, watch, cluster, outbox, topics, lock, counter: pip install 'topgun[cli]'" in proc.stderr


def test_help_without_the_cli_extra_names_it_on_one_line() -> None:
    # argparse used to wrap the epilog, splitting "pip install\n'topgun[cli]'" once the list grew
    proc = _cli_without(("ujson",), "--help")
    assert proc.returncode == 0
    assert "not installed: kv, watch, cluster, outbox, topics, lock, counter: pip install 'topgun[cli]'" \
        in proc.stdout.splitlines()


def test_topgun_server_without_the_server_extra_names_it() -> None:
    proc = _cli_without(("geventwebsocket",), "server")
    assert proc.returncode == 2
    assert "pip install 'topgun[server]'" in proc.stderr and "Traceback" not in proc.stderr


def test_version_needs_no_extra() -> None:
    proc = _cli_without(("ujson", "geventwebsocket"), "--version")
    assert (proc.returncode, proc.stdout.strip()) == (0, f"topgun {topgun.__version__}")
