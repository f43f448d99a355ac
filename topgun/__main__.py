"""``python -m topgun``: the ``topgun`` command line (:mod:`topgun.cli`), for when the script is not on PATH."""
import sys

from topgun.cli import main

if __name__ == "__main__":
    sys.exit(main())
