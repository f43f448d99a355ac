"""docs/reference.md names every public option, fixture, logger and error (issue 13, item 3).

Each list comes from the real objects: the constructor's signature, the config dataclasses'
fields, ``WRITE_CONCERNS``, the plugin module's fixtures, every ``logging.getLogger(__name__)``
in the package and the exception classes of ``topgun.errors``. A name counts as documented only
in backticks, so a field called ``seeds`` is not "found" inside ordinary prose.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from pathlib import Path
from typing import List

import pytest

import topgun
import topgun.config
import topgun.errors
import topgun.testing.plugin

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "reference.md"
PACKAGE = Path(topgun.__file__).resolve().parent


def _documented() -> set[str]:
    text = REFERENCE.read_text(encoding="utf-8")
    return set(re.findall(r"`([^`\n]+)`", text))


def _constructor_keywords() -> List[str]:
    params = inspect.signature(topgun.TopGunClient.__init__).parameters.values()
    return [p.name for p in params if p.name != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD]


def _fields(cls: type) -> List[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _is_fixture(obj: object) -> bool:
    # pytest < 8.4 marks the function; 8.4+ wraps it in a FixtureFunctionDefinition
    return hasattr(obj, "_pytestfixturefunction") or type(obj).__name__ == "FixtureFunctionDefinition"


def _fixtures() -> List[str]:
    return [name for name, obj in vars(topgun.testing.plugin).items() if _is_fixture(obj)]


def _loggers() -> List[str]:
    """Modules that do ``logging.getLogger(__name__)``, read with ast (importing them all would
    import locust, which monkey-patches on import)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "getLogger"
                    and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id == "__name__"):
                parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
                found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
                break
    return found


def _errors() -> List[str]:
    return [name for name, obj in vars(topgun.errors).items()
            if inspect.isclass(obj) and issubclass(obj, topgun.TopGunError)]


CASES = {
    "TopGunClient keyword": _constructor_keywords,
    "ClientConfig field": lambda: _fields(topgun.ClientConfig),
    "ClusterConfig field": lambda: _fields(topgun.ClusterConfig),
    "RetryPolicy field": lambda: _fields(topgun.RetryPolicy),
    "ReconnectPolicy field": lambda: _fields(topgun.ReconnectPolicy),
    "write_concern value": lambda: list(topgun.config.WRITE_CONCERNS),
    "pytest fixture": _fixtures,
    "logger": _loggers,
    "error class": _errors,
}

# what each walk must at least find, so a walk that silently finds nothing fails
KNOWN = {
    "TopGunClient keyword": "request_timeout", "ClientConfig field": "write_concern",
    "ClusterConfig field": "seeds", "RetryPolicy field": "max_attempts", "ReconnectPolicy field": "jitter",
    "write_concern value": "REPLICATED", "pytest fixture": "topgun_client", "logger": "topgun.client",
    "error class": "NotOwnerError",
}


@pytest.mark.parametrize("kind", list(CASES))
def test_reference_mentions_every(kind: str) -> None:
    names = CASES[kind]()
    assert KNOWN[kind] in names, f"the walk over {kind}s found only {names}"
    missing = [name for name in names if name not in _documented()]
    assert missing == [], f"docs/reference.md does not mention these {kind}s: {missing}"


def test_reference_says_what_ttl_and_own_writes_do() -> None:
    text = " ".join(REFERENCE.read_text(encoding="utf-8").split())
    assert "Neither server expires entries" in text
    assert "never sees its own writes in its own subscriptions" in text


def test_the_readme_links_the_reference() -> None:
    assert "](docs/reference.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
