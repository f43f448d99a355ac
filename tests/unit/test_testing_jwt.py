"""make_hs256_token against a known vector (computed once with PyJWT 2.15 ``jwt.encode``)."""
from __future__ import annotations

import base64
import json

from topgun.testing.jwt import make_hs256_token

# jwt.encode({"sub": "user-1", "iat": 1700000000, "exp": 1700003600, "roles": ["admin"],
#             "name": "Ada Lövelace"}, "s3cret-key", algorithm="HS256")
VECTOR = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiJ1c2VyLTEiLCJpYXQiOjE3MDAwMDAwMDAsImV4cCI6MTcwMDAwMzYwMCwicm9sZXMiOlsiYWRtaW4iXSwi"
    "bmFtZSI6IkFkYSBMXHUwMGY2dmVsYWNlIn0"
    ".-5j0s7hz7-rSxFhymtYsW-wvZoKyyV1E0J9PhoZQc5s"
)


def _claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_matches_pyjwt_vector() -> None:
    token = make_hs256_token("s3cret-key", "user-1", now=1700000000, roles=["admin"], name="Ada Lövelace")
    assert token == VECTOR


def test_exp_is_relative_to_now_and_can_be_left_out() -> None:
    assert _claims(make_hs256_token("k", now=1000.9, exp_in=-120))["exp"] == 880
    assert "exp" not in _claims(make_hs256_token("k", now=1000, exp_in=None))


def test_defaults_to_current_time(monkeypatch) -> None:
    monkeypatch.setattr("topgun.testing.jwt.time.time", lambda: 2000.5)
    assert _claims(make_hs256_token("k", "ada")) == {"sub": "ada", "iat": 2000, "exp": 5600}


def test_extra_claims_override_defaults() -> None:
    assert _claims(make_hs256_token("k", now=0, iat=5, exp=7)) == {"sub": "user-1", "iat": 5, "exp": 7}
