"""``python -m topgun.loadtest.bench SCENARIO ...``: the same as ``topgun bench SCENARIO ...``.

Patches the process with gevent first thing (a load-tester entry point may; the library
never does). See :mod:`topgun.cli.bench` for the options.
"""
from __future__ import annotations

import sys
from typing import List, Optional

__all__ = ["main"]


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``topgun bench`` with ``argv`` (default: the command line); returns the exit code."""
    from ..cli import main as cli_main
    return cli_main(["bench", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    from gevent import monkey
    monkey.patch_all()
    sys.exit(main())
