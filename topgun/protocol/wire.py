"""The machinery behind ``messages``: the Message base class, the ``@message`` decorator
that registers a dataclass under its wire ``type``, and the nested record types.

A message class lists its fields as snake_case dataclass fields; ``@message`` builds the
table that maps them to camelCase wire names once, and ``Message.to_wire``/``from_wire``
walk that table. Optional fields that are ``None`` stay off the wire.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, Optional, Tuple, Type

try:
    from typing import dataclass_transform
except ImportError:  # Python 3.10: only type checkers need it
    def dataclass_transform(**_: Any) -> Callable[[Any], Any]:  # type: ignore[no-redef,misc]
        return lambda fn: fn

from ..errors import RemoteProtocolError
from . import fastpath
from .hlc import Timestamp

__all__ = ["FLAT", "PAYLOAD", "camel", "Message", "nested", "message", "message_class", "REGISTRY",
           "LWWRecord", "ORMapRecord", "NodeInfo", "PartitionInfo", "LeafRecord"]

FLAT = "flat"
PAYLOAD = "payload"

# --------------------------------------------------------------------------------------------
# Nested values


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


@dataclass(frozen=True, slots=True)
class LWWRecord:
    """A last-writer-wins record: a value with its HLC timestamp (``value=None`` on remove)."""

    value: Any
    timestamp: Timestamp
    ttl_ms: Optional[int] = None

    def to_wire(self) -> Dict[str, Any]:
        return fastpath.lww_record(self.value, self.timestamp.to_wire(), self.ttl_ms)

    @classmethod
    def from_wire(cls, d: Dict[str, Any]) -> "LWWRecord":
        return cls(d.get("value"), Timestamp.from_wire(d["timestamp"]), d.get("ttlMs"))


@dataclass(frozen=True, slots=True)
class ORMapRecord:
    value: Any
    timestamp: Timestamp
    tag: str
    ttl_ms: Optional[int] = None

    def to_wire(self) -> Dict[str, Any]:
        d = {"value": self.value, "timestamp": self.timestamp.to_wire(), "tag": self.tag}
        if self.ttl_ms is not None:
            d["ttlMs"] = self.ttl_ms
        return d

    @classmethod
    def from_wire(cls, d: Dict[str, Any]) -> "ORMapRecord":
        return cls(d.get("value"), Timestamp.from_wire(d["timestamp"]), d["tag"], d.get("ttlMs"))


# --------------------------------------------------------------------------------------------
# Generic conversion, driven by a per-class table built once by @message


class Message:
    """Base of every wire message."""

    __slots__ = ()
    TYPE: ClassVar[str] = ""
    SHAPE: ClassVar[str] = PAYLOAD
    _spec: ClassVar[Tuple[Tuple[str, str, Any, bool], ...]] = ()

    def to_wire(self) -> Dict[str, Any]:
        body: Dict[str, Any] = {}
        for attr, wire, conv, _required in self._spec:
            value = getattr(self, attr)
            if value is None:
                continue
            body[wire] = _out(conv, value)
        if self.SHAPE == FLAT:
            body["type"] = self.TYPE
            return body
        return {"type": self.TYPE, "payload": body}

    @classmethod
    def from_wire(cls, d: Dict[str, Any]) -> "Message":
        body = d if cls.SHAPE == FLAT else d.get("payload")
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise RemoteProtocolError(f"{cls.TYPE}: payload is not a map")
        kwargs: Dict[str, Any] = {}
        for attr, wire, conv, required in cls._spec:
            value = body.get(wire)
            if value is None:
                if required:
                    raise RemoteProtocolError(f"{cls.TYPE}: missing field {wire!r}")
                continue
            kwargs[attr] = _in(conv, value)
        return cls(**kwargs)


def _out(conv: Any, value: Any) -> Any:
    if conv is None:
        return value
    if isinstance(conv, list):
        return [v.to_wire() for v in value]
    return value.to_wire()


def _in(conv: Any, value: Any) -> Any:
    if conv is None:
        return value
    try:
        if isinstance(conv, list):
            return [conv[0].from_wire(v) for v in value]
        return conv.from_wire(value)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise RemoteProtocolError(f"bad nested value: {exc}") from exc


def nested(cls: Any, *, many: bool = False, default: Any = dataclasses.MISSING) -> Any:
    """A field holding a nested wire object (or a list of them)."""
    meta = {"conv": [cls] if many else cls}
    if default is dataclasses.MISSING:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


REGISTRY: Dict[str, Type[Message]] = {}


@dataclass_transform(frozen_default=True, field_specifiers=(field, nested))
def message(type_name: str, shape: str = PAYLOAD) -> Callable[[Type[Any]], Type[Any]]:
    def register(cls: Type[Any]) -> Type[Any]:
        cls = dataclass(frozen=True, slots=True)(cls)
        cls.TYPE = type_name
        cls.SHAPE = shape
        spec = []
        for f in dataclasses.fields(cls):
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            spec.append((f.name, camel(f.name), f.metadata.get("conv"), required))
        cls._spec = tuple(spec)
        REGISTRY[type_name] = cls
        return cls
    return register


def message_class(type_name: str) -> Optional[Type[Message]]:
    return REGISTRY.get(type_name)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    node_id: str
    endpoints: Dict[str, str]
    status: str = "ACTIVE"

    def to_wire(self) -> Dict[str, Any]:
        return {"nodeId": self.node_id, "endpoints": self.endpoints, "status": self.status}

    @classmethod
    def from_wire(cls, d: Dict[str, Any]) -> "NodeInfo":
        # Taken as sent: cluster/partition_map.py validates the types (a coerced "7" or True would hide junk).
        return cls(d["nodeId"], d.get("endpoints") or {}, d.get("status", "ACTIVE"))


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    partition_id: int
    owner_node_id: str
    backup_node_ids: Tuple[str, ...] = ()

    def to_wire(self) -> Dict[str, Any]:
        return {"partitionId": self.partition_id, "ownerNodeId": self.owner_node_id,
                "backupNodeIds": list(self.backup_node_ids)}

    @classmethod
    def from_wire(cls, d: Dict[str, Any]) -> "PartitionInfo":
        backups = d.get("backupNodeIds") or ()
        return cls(d["partitionId"], d["ownerNodeId"], tuple(backups) if isinstance(backups, list) else backups)


# --------------------------------------------------------------------------------------------
# Authentication (flat)


@dataclass(frozen=True, slots=True)
class LeafRecord:
    key: str
    record: LWWRecord

    def to_wire(self) -> Dict[str, Any]:
        d = self.record.to_wire()
        d.setdefault("ttlMs", None)
        return {"key": self.key, "record": d}

    @classmethod
    def from_wire(cls, d: Dict[str, Any]) -> "LeafRecord":
        return cls(str(d["key"]), LWWRecord.from_wire(d["record"]))
