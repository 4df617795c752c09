"""Portal tokens: signed, compact, url-safe, verified without any Datastore read.

A token reads `pt_<kid>.<payload>.<signature>`: `payload` is the url-safe base64 (no
padding) of compact JSON claims, `signature` the same encoding of HMAC-SHA256 over
`pt_<kid>.<payload>` with the signing key `kid` names (`Config.portal_signing_keys`).
The signature is compared as text in its one canonical spelling, so no other spelling
of the same bytes verifies, and the claims are parsed only once it matched.

Claims: `o` org name, `i` its IntId, `u` the user, `m` the meter ids (null: all the
org's active meters), `t` issue time and `e` expiry, both in ms since the epoch.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from app.errors import NotFound, Unauthorized

PREFIX = "pt_"
#: Longest token accepted: a 500-character user and 50 meter ids fit well within it.
MAX_TOKEN_LENGTH = 8192


@dataclass(frozen=True)
class PortalToken:
    """What a verified token lets its bearer read, and when it was issued and expires."""

    org: str
    org_id: int
    user_id: str
    meter_ids: tuple[str, ...] | None
    issued_ms: int
    expires_ms: int

    def allows_meter(self, meter_id: str) -> bool:
        return self.meter_ids is None or meter_id in self.meter_ids


def signing_keys(config: Any) -> tuple[tuple[str, str], ...]:
    """The configured signing keys; 404 `portal_disabled` when there are none (production
    without METERING_PORTAL_SIGNING_KEYS)."""
    keys: tuple[tuple[str, str], ...] = config.portal_signing_keys
    if not keys:
        raise NotFound(
            "the customer portal is disabled: set METERING_PORTAL_SIGNING_KEYS",
            code="portal_disabled",
        )
    return keys


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: str, signed: str) -> str:
    return _b64(hmac.new(secret.encode(), signed.encode("ascii"), hashlib.sha256).digest())


def sign(claims: PortalToken, keys: tuple[tuple[str, str], ...]) -> str:
    """The token of `claims`, signed with the first key."""
    kid, secret = keys[0]
    payload = {
        "o": claims.org,
        "i": claims.org_id,
        "u": claims.user_id,
        "m": list(claims.meter_ids) if claims.meter_ids is not None else None,
        "t": claims.issued_ms,
        "e": claims.expires_ms,
    }
    encoded = _b64(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode())
    signed = f"{PREFIX}{kid}.{encoded}"
    return f"{signed}.{_signature(secret, signed)}"


def _refuse(why: str) -> Unauthorized:
    return Unauthorized(f"invalid portal token: {why}", code="invalid_token")


def verify(token: str | None, keys: tuple[tuple[str, str], ...]) -> PortalToken:
    """The claims of a token whose signature holds; 401 `invalid_token` otherwise. Expiry
    and revocation are the caller's to check (`app.services.portal.policy`)."""
    if not token:
        raise Unauthorized("missing portal token: send Authorization: Bearer pt_...")
    if len(token) > MAX_TOKEN_LENGTH or not token.startswith(PREFIX) or token.count(".") != 2:
        raise _refuse("not a portal token")
    head, payload, signature = token.split(".")
    secret = dict(keys).get(head[len(PREFIX) :])
    if secret is None:
        raise _refuse("unknown signing key")
    expected = _signature(secret, f"{head}.{payload}")
    if not hmac.compare_digest(expected.encode(), signature.encode("ascii", "replace")):
        raise _refuse("bad signature")
    try:
        claims = json.loads(_unb64(payload))
        return _claims(claims)
    except (ValueError, TypeError, KeyError, binascii.Error):
        raise _refuse("unreadable claims") from None


def _claims(raw: dict[str, Any]) -> PortalToken:
    org, org_id, user, meters = raw["o"], raw["i"], raw["u"], raw["m"]
    issued, expires = raw["t"], raw["e"]
    if not (isinstance(org, str) and isinstance(user, str) and user):
        raise ValueError("org and user are strings")
    if not all(type(n) is int for n in (org_id, issued, expires)):
        raise ValueError("numbers are integers")
    if meters is not None and not (
        isinstance(meters, list) and all(isinstance(m, str) for m in meters)
    ):
        raise ValueError("meters are a list of ids")
    return PortalToken(
        org, org_id, user, tuple(meters) if meters is not None else None, issued, expires
    )
