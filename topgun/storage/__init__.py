"""Local storage under the client: the outbox adapters and the near cache.

``storage=`` on :class:`topgun.TopGunClient` takes ``None`` (memory, the default: nothing
survives the process), a path or ``sqlite:///path`` string, or a spec object
(:class:`MemoryStorage`, :class:`SQLiteStorage`). :func:`parse_storage` turns any of them into
a spec. The near cache (:class:`topgun.NearCache`, in ``nearcache.py``; not imported here, so the
configuration can use this package without importing gevent) is per map, in memory, whatever
the storage.

Modules: ``base.py`` (the adapter contract), ``memory.py``, ``sqlite.py``, ``outbox.py`` (the
durable outbox and replay), ``nearcache.py``.

Not in here: the write engine and reads (``topgun.engine``), which the outbox and the near cache
hook into through the small contracts their modules describe.
"""
from __future__ import annotations

import os
from typing import Any

from ..errors import ConfigurationError
from .base import OutboxRow, StorageAdapter, StorageSpec
from .memory import MemoryStorage
from .sqlite import SQLiteStorage

__all__ = ["MemoryStorage", "SQLiteStorage", "OutboxRow", "StorageAdapter", "StorageSpec",
           "parse_storage"]


def parse_storage(storage: Any) -> Any:
    """A storage spec for ``storage=``: None or "memory" (memory), a path or ``sqlite:///...`` (SQLite), or a spec.

    Raises:
        ConfigurationError: anything else.
    """
    if storage is None or storage == "memory":
        return MemoryStorage()
    if isinstance(storage, (MemoryStorage, SQLiteStorage)):
        return storage
    if isinstance(storage, (str, os.PathLike)):
        return SQLiteStorage(os.fspath(storage))
    if callable(getattr(storage, "open", None)) and hasattr(storage, "max_age"):
        return storage  # another adapter following topgun.storage.base.StorageSpec
    raise ConfigurationError(f"storage= must be None, a path, 'sqlite:///path', MemoryStorage() or SQLiteStorage(), "
                             f"got {storage!r}")
