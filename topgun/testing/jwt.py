"""HS256 JSON Web Tokens for tests, from the standard library alone (no PyJWT).

The TopGun 2.2.0 server in JWT mode (``JWT_SECRET=...``) accepts only HS256 tokens with a string
``sub`` and a numeric ``exp`` (60 s leeway); it ignores ``nbf``. The answer to ``AUTH`` with such a
token is ``AUTH_ACK {'userId': sub}``. Verifying or decoding tokens is deliberately not here.
"""
from __future__ import annotations

import time
from typing import Any

from topgun.server.auth import sign_hs256

__all__ = ["make_hs256_token"]

def make_hs256_token(secret: str, sub: str = "user-1", *, exp_in: float | None = 3600,
                     now: float | None = None, **claims: Any) -> str:
    """Sign ``{"sub", "iat", "exp", **claims}`` with HMAC-SHA256.

    Args:
        secret: the server's ``JWT_SECRET``.
        sub: the user id the server will report in ``AUTH_ACK``.
        exp_in: seconds from ``now`` to expiry (negative for an expired token); ``None`` leaves
            ``exp`` out, which the server rejects.
        now: the issue time as a Unix timestamp; defaults to the current time.
        **claims: more claims (``roles=["admin"]``); they override ``sub``/``iat``/``exp``.

    Returns:
        The compact token ``header.payload.signature``.
    """
    issued = int(time.time() if now is None else now)
    payload: dict[str, Any] = {"sub": sub, "iat": issued}
    if exp_in is not None:
        payload["exp"] = int(issued + exp_in)
    payload.update(claims)
    return sign_hs256(secret, payload)
