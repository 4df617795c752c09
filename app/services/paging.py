"""Cursor pages of NDB queries, for the list endpoints (meters, recent events).

A Datastore cursor is the encoded key of the last entity read, so handed out as it
is it would tell anyone who decodes it the project id and the org's namespace.
The cursors this service hands out are opaque instead: the Datastore cursor
encrypted and authenticated (AES-GCM) under a key derived from the deployment's
secret (the hashid salt), with the org's namespace and the query's shape as
associated data. Nothing about the tenant can be read from one, a changed byte is
refused, and a cursor made for one org's (or one query's) page is refused for any
other: 400 in the envelope, `param` `cursor`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app
from google.api_core.exceptions import BadRequest, InvalidArgument
from google.cloud import ndb

from app.errors import ValidationFailed

_NONCE_BYTES = 12
_TAG_BYTES = 16


@functools.lru_cache(maxsize=4)
def _cipher(secret: str) -> AESGCM:
    """The cursor cipher of a deployment secret (its own key, never the secret itself)."""
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"metering page cursor", info=b"v1"
    ).derive(secret.encode())
    return AESGCM(key)


def _cursor_cipher() -> AESGCM:
    return _cipher(current_app.config["METERING"].hashid_salt)


def _bound_to(query: ndb.Query) -> bytes:
    """What a cursor is valid for: the org (namespace) and the query's shape, never
    stored in the cursor, only checked when it comes back."""
    namespace = query.namespace or ndb.get_context().get_namespace() or ""
    shape = (query.kind, query.ancestor, query.filters, query.order_by)
    return f"{namespace}\0{shape!r}".encode()


def seal(raw: bytes, query: ndb.Query) -> str:
    """The opaque, url-safe cursor of a Datastore cursor for this org and query."""
    return _sealed(raw, _bound_to(query), os.urandom(_NONCE_BYTES))


def seal_bytes(raw: bytes, bound: bytes) -> str:
    """The opaque, url-safe cursor of any position `raw`, valid only where `bound` (the
    org and the query, never stored in the cursor) is the same when it comes back.

    The same position of the same query always gives the same cursor, so asking twice
    answers the same bytes: the nonce is derived (a keyed hash of `bound` and `raw`, the
    synthetic-IV construction), which repeats only where the whole message repeats."""
    secret = current_app.config["METERING"].hashid_salt
    nonce = hmac.new(_nonce_key(secret), bound + b"\0" + raw, "sha256").digest()
    return _sealed(raw, bound, nonce[:_NONCE_BYTES])


@functools.lru_cache(maxsize=4)
def _nonce_key(secret: str) -> bytes:
    """The key of derived nonces: another key than the cipher's, from the same secret."""
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"metering page cursor", info=b"v1 nonce"
    ).derive(secret.encode())


def _sealed(raw: bytes, bound: bytes, nonce: bytes) -> str:
    sealed = nonce + _cursor_cipher().encrypt(nonce, raw, bound)
    return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()


def open_bytes(cursor: str, bound: bytes) -> bytes:
    """The position inside an opaque cursor; ValidationFailed (`cursor`) unless it was
    made by this deployment by `seal_bytes` with the same `bound`, unchanged."""
    try:
        sealed = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        sealed = b""
    # Only the one spelling seal() makes: a changed unused bit of the last character
    # would otherwise decode to the same bytes and pass as unchanged.
    canonical = base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()
    if len(sealed) <= _NONCE_BYTES + _TAG_BYTES or canonical != cursor:
        raise ValidationFailed("cursor is not valid", param="cursor")
    nonce, body = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
    try:
        return _cursor_cipher().decrypt(nonce, body, bound)
    except InvalidTag:
        raise ValidationFailed("cursor is not valid", param="cursor") from None


def _open(cursor: str, query: ndb.Query) -> ndb.Cursor:
    """The Datastore cursor inside an opaque one; ValidationFailed unless it was made by
    this deployment for this org and query, unchanged."""
    return ndb.Cursor(cursor=open_bytes(cursor, _bound_to(query)))


def page(query: ndb.Query, limit: int, cursor: str | None) -> tuple[list[Any], str | None]:
    """Up to `limit` results from `cursor` (a previous page's), and the next page's cursor
    only when more follow (no empty last page)."""
    start = _open(cursor, query) if cursor is not None else None
    iterator = query.iter(start_cursor=start, limit=limit + 1, produce_cursors=True)
    items: list[Any] = []
    next_cursor: bytes | None = None
    try:
        while iterator.has_next():
            item = iterator.next()
            if len(items) == limit:
                # a full page has a cursor after its last item
                return items, seal(next_cursor, query)  # type: ignore[arg-type]
            items.append(item)
            next_cursor = iterator.cursor_after().cursor
    except (InvalidArgument, BadRequest):
        # Authenticated but refused by the Datastore (e.g. made before an index changed).
        if start is not None:
            raise ValidationFailed("cursor is not valid", param="cursor") from None
        raise
    return items, None
