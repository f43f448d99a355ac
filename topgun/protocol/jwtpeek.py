"""Why a server refused a token: read the JWT's own claims (without verifying it) and say.

The TopGun 2.2.0 server answers every refused ``AUTH`` with the same
``AUTH_FAIL {"error": "Authentication failed"}`` unless it runs with
``INSECURE_FORWARD_AUTH_ERRORS=1`` (then it forwards the validator's reason, such as
``ExpiredSignature`` or ``Missing required claim: exp``); the dev server sends the generic text
too. What the client can still tell on its own, from the token it sent:

- not a JWT at all (not three base64url parts with a JSON header and payload),
- no ``exp`` claim (the server requires one), ``exp`` in the past (the server allows 60 s of
  clock skew), no string ``sub`` (required), an algorithm other than HS256/RS256;
- otherwise the claims look right, so the signature (the secret) is the likely cause.

:func:`explain_refusal` turns that into the text of the ``AuthError``. Nothing here verifies a
signature or decides anything: it only explains a refusal the server already made.

Not in here: sending the token or reading AUTH_FAIL (``topgun.transport.connection``), the
current time (the caller passes ``now_s``), making tokens (``topgun.testing.jwt``).
"""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Dict, Optional, Tuple

__all__ = ["GENERIC_REFUSAL", "LEEWAY_S", "peek", "diagnose", "explain_refusal"]

#: What both servers say when they give no reason.
GENERIC_REFUSAL = "Authentication failed"
#: The clock skew the 2.2.0 server accepts on ``exp``.
LEEWAY_S = 60


def _part(segment: str) -> Any:
    padded = segment + "=" * (-len(segment) % 4)
    return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))


def peek(token: str) -> Optional[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """The (header, claims) of a compact JWT, unverified; None if ``token`` is not one."""
    parts = token.split(".") if isinstance(token, str) else []
    if len(parts) != 3 or not all(parts[:2]):
        return None
    try:
        header, claims = _part(parts[0]), _part(parts[1])
    except (ValueError, UnicodeError, binascii.Error):
        return None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return None
    return header, claims


def diagnose(token: str, now_s: float) -> Tuple[str, str]:
    """``(kind, sentence)``: kind is ``not_jwt``, ``no_exp``, ``expired``, ``no_sub``, ``algorithm``
    or ``signature`` (the claims look valid, so the secret or key is the likely cause)."""
    peeked = peek(token)
    if peeked is None:
        return "not_jwt", "the token is not a JWT (expected header.payload.signature, base64url-encoded JSON)"
    header, claims = peeked
    exp = claims.get("exp")
    if exp is None:
        return "no_exp", "the token has no exp claim, which the TopGun server requires"
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        return "no_exp", f"the token's exp claim is not a number ({exp!r})"
    if exp + LEEWAY_S < now_s:
        return "expired", (f"the token expired {now_s - exp:.0f}s ago (its exp claim; the server allows "
                           f"{LEEWAY_S}s of clock skew)")
    if not isinstance(claims.get("sub"), str):
        return "no_sub", "the token's sub claim is missing or not a string, which the TopGun server requires"
    alg = header.get("alg")
    if alg not in ("HS256", "RS256"):
        return "algorithm", f"the token is signed with alg={alg!r}; the server accepts HS256 (RS256 with an RSA key)"
    return "signature", ("its claims look valid, so the signature is the likely cause: a token signed with "
                         "another secret than the server's JWT_SECRET")


def explain_refusal(token: Optional[str], server_says: Optional[str], now_s: float) -> Tuple[str, str]:
    """``(kind, message)`` for an AUTH_FAIL: the server's reason, then ours when it gave none.

    ``kind`` is ``"server"`` when the server named a specific reason, else :func:`diagnose`'s.
    """
    said = (server_says or "").strip() or "no reason given"
    if said not in (GENERIC_REFUSAL, "no reason given"):
        return "server", f"authentication failed: {said}"
    if not token:
        return "no_token", f"authentication failed: {said}"
    kind, why = diagnose(token, now_s)
    return kind, f"authentication failed (the server said only {said!r}): {why}; read from the token here, unverified"
