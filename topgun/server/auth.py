"""HS256 JWTs for the dev server's JWT mode, with hmac only (no PyJWT): verify, and sign for its own tools.

Matches the 2.2.0 server (WIRE.md 3.2): the header's ``alg`` must be ``HS256``, the key is the
raw bytes of the secret, ``sub`` must be a string, ``exp`` is required and checked with 60 s of
leeway; ``nbf``, ``aud``, ``iss`` and ``iat`` are not checked. RS256 keys are not supported.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any, Dict, Optional

__all__ = ["verify_hs256", "sign_hs256", "LEEWAY_S"]

LEEWAY_S = 60


# The order and spacing PyJWT uses, so tokens are byte-identical to jwt.encode(..., algorithm="HS256").
_HEADER = {"alg": "HS256", "typ": "JWT"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json(obj: Dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def sign_hs256(secret: str, claims: Dict[str, Any]) -> str:
    """The compact HS256 JWT ``header.payload.signature`` of ``claims``."""
    signing_input = f"{_b64(_json(_HEADER))}.{_b64(_json(claims))}"
    signature = hmac.new(secret.encode(), signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def verify_hs256(token: Any, secret: str, now_s: float) -> Optional[str]:
    """The token's ``sub`` if it is a valid HS256 JWT for ``secret`` at ``now_s``, else ``None``."""
    if not isinstance(token, str) or token.count(".") != 2:
        return None
    head_b64, body_b64, sig_b64 = token.split(".")
    try:
        header = json.loads(_b64decode(head_b64))
        claims = json.loads(_b64decode(body_b64))
        signature = _b64decode(sig_b64)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(header, dict) or header.get("alg") != "HS256" or not isinstance(claims, dict):
        return None
    expected = hmac.new(secret.encode(), f"{head_b64}.{body_b64}".encode("ascii", "replace"),
                        hashlib.sha256).digest()
    if not hmac.compare_digest(expected, signature):
        return None
    sub, exp = claims.get("sub"), claims.get("exp")
    if not isinstance(sub, str):
        return None
    if isinstance(exp, bool) or not isinstance(exp, (int, float)) or now_s > exp + LEEWAY_S:
        return None
    return sub
