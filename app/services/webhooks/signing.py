"""Standard Webhooks signatures: secrets, and the headers of one attempt.

A secret is `whsec_` + base64 of 32 random bytes; the HMAC key is those bytes. The
signature of an attempt is `v1,` + base64(HMAC-SHA256(key, "<id>.<timestamp>.<body>")),
one per live secret, space-separated: during a rotation the old secret keeps signing
beside the new one for `ROTATION_OVERLAP`, so a receiver that still holds the old one
verifies, and so does one that already has the new one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets as _random
from datetime import datetime, timedelta
from typing import Any

from app.schemas import format_time

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
ROTATION_OVERLAP = timedelta(hours=24)


def new_secret() -> str:
    """A fresh signing secret."""
    return SECRET_PREFIX + base64.b64encode(_random.token_bytes(SECRET_BYTES)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64>` of one secret over one attempt."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def live_secrets(stored: list[dict[str, Any]], now: datetime) -> list[str]:
    """The secrets that sign at `now`: the current one, and rotated ones not yet expired."""
    return [
        entry["secret"]
        for entry in stored
        if entry.get("expiresAt") is None or datetime.fromisoformat(entry["expiresAt"]) > now
    ]


def rotated(stored: list[dict[str, Any]], now: datetime) -> tuple[list[dict[str, Any]], str]:
    """The secrets after a rotation at `now`, and the new secret: the current one keeps
    signing until now + ROTATION_OVERLAP, expired ones are dropped."""
    fresh = new_secret()
    until = format_time(now + ROTATION_OVERLAP)
    kept = [
        {"secret": entry["secret"], "expiresAt": entry.get("expiresAt") or until}
        for entry in stored
        if entry["secret"] in live_secrets(stored, now)
    ]
    return [{"secret": fresh, "expiresAt": None}, *kept], fresh


def headers(message_id: str, body: bytes, secrets: list[str], timestamp: int) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt sent at `timestamp` (unix seconds)."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            signature(secret, message_id, timestamp, body) for secret in secrets
        ),
        "content-type": "application/json",
    }
