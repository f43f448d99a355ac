from __future__ import annotations

from importlib.metadata import entry_points

# An installed topgun registers the plugin itself (pytest11 entry point); registering it twice
# is an error, so only a plain source checkout (not pip-installed) loads it from here.
if not any(ep.value == "topgun.testing.plugin" for ep in entry_points(group="pytest11")):
    pytest_plugins = ["topgun.testing.plugin"]
