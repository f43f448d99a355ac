"""Regenerate the codec golden files (run by hand; the tests only read the files).

    python tests/golden/codec/generate.py

Each sample becomes ``<name>.msgpack`` (the exact frame bytes) and ``<name>.json`` (what those
bytes decode to, plus where they came from). Samples marked ``hex`` are the byte dumps taken
from a live topgun-server 2.2.0 (shared/protocol/probe_notes.md section 14), annotated as
``<hex bytes> <text>``: a fixstr header (a0..bf) is followed by its text, every other token is
hex. Samples marked ``wire`` are the [LIVE] examples of shared/protocol/WIRE.md packed with
``msgpack.packb(use_bin_type=True)``; they show the shapes, not the server's byte layout.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgpack

HERE = Path(__file__).resolve().parent

HEX_SAMPLES = {
    # Client CLIENT_OP, as packed by Python msgpack.
    "client_op": (
        "82 a4 type a9 CLIENT_OP a7 payload 84 a2 id a1 7 a7 mapName a6 hexmap a3 key a1 k a6 record 82 "
        "a5 value a1 v a9 timestamp 83 a6 millis cf 0000018bcfe56800 a7 counter 00 a6 nodeId a2 py"),
    # Server OP_ACK.
    "op_ack": "82 a4 type a6 OP_ACK a7 payload 82 a6 lastId a1 7 ad achievedLevel a7 APPLIED",
    # Server SERVER_EVENT: note the explicit ttlMs nil (c0).
    "server_event": (
        "82 a4 type ac SERVER_EVENT a7 payload 84 a7 mapName a6 hexmap a9 eventType a3 PUT a3 key a1 k "
        "a6 record 83 a5 value a1 v a9 timestamp 83 a6 millis cf 000001a215b72568 a7 counter 00 "
        "a6 nodeId a2 n1 a5 ttlMs c0"),
    # Server PONG.
    "pong": "83 a4 type a4 PONG a9 timestamp cf 0000018bcfe56800 aa serverTime cf 000001a215b72954",
}

WIRE_SAMPLES: dict[str, Any] = {
    "query_resp": {"type": "QUERY_RESP", "payload": {
        "queryId": "q1",
        "results": [{"key": "p2", "value": {"name": "Cid"}}, {"key": "p0", "value": {"name": "Ann"}}],
        "merkleRootHash": 2073254496}},
    "sync_resp_leaf": {"type": "SYNC_RESP_LEAF", "payload": {"mapName": "orders", "path": "1d3", "records": [
        {"key": "o2", "record": {"value": {"n": 2},
                                 "timestamp": {"millis": 1795659424090, "counter": 2, "nodeId": "n1"},
                                 "ttlMs": None}}]}},
    "auth_fail": {"type": "AUTH_FAIL", "error": "Authentication failed"},
    "error_429": {"type": "ERROR", "payload": {"code": 429, "message": "server overloaded, try again later"}},
    "query_update_leave": {"type": "QUERY_UPDATE", "payload": {
        "queryId": "qB", "key": "u2", "value": None, "changeType": "LEAVE"}},
}


def hex_to_bytes(annotated: str) -> bytes:
    out = bytearray()
    tokens = annotated.split()
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        raw = bytes.fromhex(tok)
        out += raw
        i += 1
        if len(raw) == 1 and 0xA0 <= raw[0] <= 0xBF:  # fixstr: the next token is its text
            n = raw[0] - 0xA0
            text = tokens[i].encode()
            if len(text) != n:
                raise ValueError(f"fixstr of {n} bytes followed by {tokens[i]!r}")
            out += text
            i += 1
    return bytes(out)


def main() -> None:
    for name, annotated in HEX_SAMPLES.items():
        data = hex_to_bytes(annotated)
        write(name, data, f"topgun-server 2.2.0 bytes, probe_notes.md section 14: {annotated}")
    for name, wire in WIRE_SAMPLES.items():
        write(name, msgpack.packb(wire, use_bin_type=True), "WIRE.md [LIVE] example, packed by msgpack-python")


def write(name: str, data: bytes, source: str) -> None:
    decoded = msgpack.unpackb(data, raw=False, strict_map_key=False)
    (HERE / f"{name}.msgpack").write_bytes(data)
    twin = {"source": source, "decoded": decoded}
    (HERE / f"{name}.json").write_text(json.dumps(twin, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
