"""Fixtures for the structure system tests: dev-server processes (real SIGKILL) and cluster clients."""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parents[1] / "integration" / "structures"))   # structures_helpers.py
