"""tox's default run covers the system tests, and the Locust extra is installed where its test runs."""
from __future__ import annotations

import configparser
from pathlib import Path

TOX = configparser.ConfigParser(interpolation=None)
TOX.read(Path(__file__).resolve().parents[2] / "tox.ini", encoding="utf-8")


def env(name: str) -> configparser.SectionProxy:
    return TOX[f"testenv:{name}"] if TOX.has_section(f"testenv:{name}") else TOX["testenv"]


def default_envs() -> list:
    return [e.strip() for e in TOX["tox"]["envlist"].replace("\n", ",").split(",") if e.strip()]


def test_the_default_envlist_runs_the_system_tests() -> None:
    commands = [env(e).get("commands", "") for e in default_envs()]
    assert any("pytest -m system" in c or ("pytest" in c and "not system" not in c) for c in commands), commands


def test_every_env_that_runs_pytest_installs_the_locust_extra() -> None:
    for name in default_envs():
        section = env(name)
        if "pytest" in section.get("commands", ""):
            assert "locust" in section.get("extras", "").split(), f"{name}: tests/loadtest/test_locust_user.py skips"
