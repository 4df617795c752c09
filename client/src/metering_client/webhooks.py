"""Verifying the webhooks the service sends, as the Standard Webhooks specification says.

A delivery carries three headers: `webhook-id` (the message's id, the same on every
retry), `webhook-timestamp` (unix seconds of this attempt) and `webhook-signature`, a
space-separated list of `v1,<base64 HMAC-SHA256>` signatures of `id.timestamp.body`, one
per live secret of the endpoint (two for a day after a secret rotation). A receiver
accepts the message when any signature matches any of its secrets, and the timestamp is
within the tolerance of its clock: an old message replayed by someone who recorded it
is refused, while the signature stops anyone without the secret from forging one.

This is our own reading of the specification; the tests check that it agrees with the
`standardwebhooks` package both ways.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from metering_client.errors import WebhookVerificationError

SECRET_PREFIX = "whsec_"
#: The signature scheme this verifier knows; others (e.g. `v1a`, asymmetric) are skipped.
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_SECONDS = 300
_TIMESTAMP = re.compile(r"[0-9]{1,15}")


class Headers(Protocol):
    """What `verify_webhook` reads headers from: a dict (any letter case), or the headers
    object of Flask/Werkzeug, Django (`request.headers`), httpx or `http.server`."""

    def get(self, key: str, /) -> str | None: ...

    def items(self) -> Iterable[tuple[str, str]]: ...


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_...` secret (the prefix is optional): its base64 bytes.

    Raises ValueError for a secret that is not base64 or is empty: a configuration
    mistake of the receiver, not a bad message.
    """
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret is `whsec_` followed by base64") from None
    if not key:
        raise ValueError("the webhook secret is empty")
    return key


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> bytes:
    """The raw HMAC-SHA256 of `id.timestamp.body`, what a `v1` signature encodes."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return hmac.new(key, signed, hashlib.sha256).digest()


def _header(headers: Headers, name: str) -> str:
    """A header by name in any letter case (dicts, httpx, Flask and http.server headers)."""
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    if not value:
        raise WebhookVerificationError(f"the {name} header is missing")
    return value


def _timestamp(text: str, tolerance: float, now: float) -> int:
    if not _TIMESTAMP.fullmatch(text):
        raise WebhookVerificationError("the webhook-timestamp header is not unix seconds")
    timestamp = int(text)
    if timestamp < now - tolerance:
        raise WebhookVerificationError("the message's timestamp is too old")
    if timestamp > now + tolerance:
        raise WebhookVerificationError("the message's timestamp is too far in the future")
    return timestamp


def _signatures(header: str) -> list[bytes]:
    """The decoded `v1` signatures of the header; others and garbled ones are skipped."""
    found = []
    for entry in header.split():
        version, _, encoded = entry.partition(",")
        if version != SIGNATURE_VERSION:
            continue
        try:
            found.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    return found


def verify_webhook(
    body: bytes | str,
    headers: Headers,
    secret: str | Sequence[str],
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
    *,
    now: float | None = None,
) -> dict[str, Any]:
    """The payload of a genuine delivery (`{"type", "timestamp", "data"}`), parsed.

    Pass the request body exactly as received (bytes; a str is taken as its UTF-8), the
    request's headers, and the endpoint's secret, or several (say the old and the new one
    while you roll a rotation out). Raises WebhookVerificationError when a header is
    missing, no signature matches any secret, the timestamp is more than `tolerance`
    seconds from `now` (default: this machine's clock) either way, or the verified body is
    not a JSON object. Signatures are compared in constant time.
    """
    payload = body.encode() if isinstance(body, str) else bytes(body)
    secrets = [secret] if isinstance(secret, str) else list(secret)
    if not secrets:
        raise ValueError("give at least one webhook secret")
    keys = [secret_key(s) for s in secrets]
    message_id = _header(headers, "webhook-id")
    timestamp = _timestamp(
        _header(headers, "webhook-timestamp"), tolerance, time.time() if now is None else now
    )
    offered = _signatures(_header(headers, "webhook-signature"))
    expected = [sign(key, message_id, timestamp, payload) for key in keys]
    # Every pair is compared (no early exit), each in constant time.
    matched = False
    for signature in offered:
        for wanted in expected:
            matched |= hmac.compare_digest(signature, wanted)
    if not matched:
        raise WebhookVerificationError("no signature matches the secret")
    try:
        parsed = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise WebhookVerificationError("the signed body is not JSON") from None
    if not isinstance(parsed, dict):
        raise WebhookVerificationError("the signed body is not a JSON object")
    return parsed
