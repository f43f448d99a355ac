"""Bytes <-> messages: one msgpack map per WebSocket binary frame.

Encoding uses ``use_bin_type=True``; decoding uses ``raw=False, strict_map_key=False`` because
SERVER_EVENT echoes user values verbatim, int map keys included (WIRE.md section 2).
Unknown ``type`` strings decode to :class:`messages.Unknown` rather than failing, so a newer
server cannot break an older client; undecodable bytes raise ``RemoteProtocolError``.
"""
from __future__ import annotations

import struct
from typing import Any, Dict, Iterable, List, Optional

import msgpack

from ..errors import LocalProtocolError, RemoteProtocolError
from . import messages
from .messages import Message

__all__ = ["encode", "encode_wire", "encode_op_batch", "decode", "decode_wire", "to_message", "pack_batch",
           "unpack_batch", "MAX_FRAME_BYTES"]

MAX_FRAME_BYTES = 16 * 1024 * 1024  # the real server resets the connection past 16 MiB

_packer = msgpack.Packer(use_bin_type=True)


def encode_wire(d: Any) -> bytes:
    """Pack an already-built wire dict (or any msgpack-encodable value)."""
    try:
        return _packer.pack(d)
    except (TypeError, ValueError, OverflowError) as exc:
        raise LocalProtocolError(f"value cannot be encoded as msgpack: {exc}") from exc


def encode_op_batch(ops: Iterable[Dict[str, Any]], count: int, write_concern: Optional[str] = None,
                    timeout: Optional[int] = None) -> bytes:
    """The bytes of ``fastpath.op_batch(list(ops), write_concern, timeout)``, packed op by op.

    Each op dict is packed and dropped before the next is built, so a frame of 500 writes does
    not keep 1500 dicts alive at once (which set off the garbage collector twice per frame).
    ``count`` is how many ops ``ops`` yields.
    """
    packer = msgpack.Packer(use_bin_type=True, autoreset=False)  # one per frame: nothing shared across threads
    try:
        packer.pack_map_header(2)
        packer.pack("type")
        packer.pack("OP_BATCH")
        packer.pack("payload")
        packer.pack_map_header(1 + (write_concern is not None) + (timeout is not None))
        packer.pack("ops")
        packer.pack_array_header(count)
        pack = packer.pack
        n = 0
        for op in ops:
            pack(op)
            n += 1
        if write_concern is not None:
            pack("writeConcern")
            pack(write_concern)
        if timeout is not None:
            pack("timeout")
            pack(timeout)
    except (TypeError, ValueError, OverflowError) as exc:
        raise LocalProtocolError(f"value cannot be encoded as msgpack: {exc}") from exc
    if n != count:
        raise ValueError(f"encode_op_batch: {n} ops given, {count} announced")
    return packer.bytes()


def encode(msg: Message) -> bytes:
    """Encode one message to the bytes of one binary frame."""
    return encode_wire(msg.to_wire())


def decode_wire(data: bytes) -> Dict[str, Any]:
    """Unpack one frame into its wire dict (no typing)."""
    try:
        d = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise RemoteProtocolError(f"undecodable frame: {exc}") from exc
    if not isinstance(d, dict) or not isinstance(d.get("type"), str):
        raise RemoteProtocolError("frame is not a map with a string 'type'")
    return d


def to_message(d: Dict[str, Any]) -> Message:
    """Type a decoded wire dict."""
    cls = messages.REGISTRY.get(d["type"])
    if cls is None:
        return messages.Unknown(d["type"], d)
    try:
        return cls.from_wire(d)
    except RemoteProtocolError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise RemoteProtocolError(f"malformed {d['type']}: {exc}") from exc


def decode(data: bytes) -> Message:
    """Decode one frame into a message."""
    return to_message(decode_wire(data))


def pack_batch(frames: Iterable[bytes]) -> bytes:
    """A BATCH envelope (C->S) around already-encoded frames: u32 big-endian lengths, no count."""
    frames = list(frames)
    data = b"".join(struct.pack(">I", len(f)) + f for f in frames)
    return encode_wire({"type": "BATCH", "count": len(frames), "data": data})


def unpack_batch(data: bytes) -> List[bytes]:
    """Split a BATCH envelope's data; a truncated prefix ends the list (as on the server)."""
    out, i = [], 0
    while i + 4 <= len(data):
        (n,) = struct.unpack_from(">I", data, i)
        if i + 4 + n > len(data):
            break
        out.append(bytes(data[i + 4:i + 4 + n]))
        i += 4 + n
    return out
