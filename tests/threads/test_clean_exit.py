"""A script using the client exits without noise on stderr (the README walk of session 4).

``forking.track`` held each client's fork and exit hooks as ``weakref.WeakMethod``s; when a
client was collected during interpreter shutdown, the WeakMethod's own callback ran with its
module already torn down and printed "Exception ignored in: <function WeakMethod.__new__.<locals>._cb"
twice, after a script that had closed everything properly.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(90)

SCRIPTS = Path(__file__).resolve().parent / "scripts"


def test_the_readme_example_as_a_script_exits_cleanly(topgun_process_cluster_factory: Any, run_python: Any) -> None:
    cluster = topgun_process_cluster_factory(3)
    done = run_python(str(SCRIPTS / "readme_first_block.py"), cluster.urls[0], cluster.urls[1], timeout=60)
    assert done.returncode == 0, done.stderr
    assert "change seen: True" in done.stdout
    assert "Exception ignored" not in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
