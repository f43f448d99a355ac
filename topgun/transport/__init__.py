"""Transports move whole binary messages to one server: websocket.py (real), memory.py (tests)."""
from __future__ import annotations

from topgun.transport.base import DEFAULT_MAX_MESSAGE_SIZE, Transport

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "Transport"]
