"""Load testing through the real client: a runner of gevent users, pacing, statistics, scenarios.

``topgun bench`` (:mod:`topgun.cli.bench`) is the command line on top; for Locust see
:mod:`topgun.contrib.locust`. Importing this package patches nothing.
"""
from __future__ import annotations

from .pacing import between, constant, constant_rate, no_wait, parse_pacing
from .report import DEFAULT_THRESHOLDS, evaluate_thresholds, format_table, parse_threshold
from .runner import Marker, Runner, RunResult, User
from .stats import LatencyHistogram, Stats

__all__ = ["Runner", "RunResult", "User", "Marker", "Stats", "LatencyHistogram", "between", "constant",
           "constant_rate", "no_wait", "parse_pacing", "DEFAULT_THRESHOLDS", "evaluate_thresholds",
           "format_table", "parse_threshold"]
