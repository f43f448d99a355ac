"""A client created before os.fork(): the child never touches the parent's connection (issue #6, item 2).

Each scenario runs in its own process (tests/threads/scripts/fork_children.py), which forks two
children: they must find the inherited socket closed in their process, reconnect on first use
and work, while the parent keeps using its own connection undisturbed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.realserver

SCRIPTS = Path(__file__).resolve().parent / "scripts"


@pytest.mark.parametrize("mode, home", [("plain", "loop"), ("gevent", "direct"), ("patched", "direct")])
def test_children_reconnect_and_the_parent_is_undisturbed(mode: str, home: str, run_python: Any,
                                                         server_url: str) -> None:
    proc = run_python(str(SCRIPTS / "fork_children.py"), server_url, mode)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert f"mode {home}" in proc.stdout
    assert proc.stdout.count(" ok (") == 2 and "parent ok" in proc.stdout
