"""Cursor pages of NDB queries, for the list endpoints (meters, recent events)."""

from __future__ import annotations

import base64
import binascii

from google.api_core.exceptions import BadRequest, InvalidArgument
from google.cloud import ndb

from app.errors import ValidationFailed


def _decode_cursor(cursor: str) -> ndb.Cursor:
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if not raw:
        raise ValidationFailed("cursor is not valid", param="cursor")
    return ndb.Cursor(cursor=raw)


def page(query: ndb.Query, limit: int, cursor: str | None) -> tuple[list, str | None]:
    """Up to `limit` results from `cursor` (a previous page's), and the next page's cursor
    only when more follow (no empty last page)."""
    start = _decode_cursor(cursor) if cursor is not None else None
    iterator = query.iter(start_cursor=start, limit=limit + 1, produce_cursors=True)
    items, next_cursor = [], None
    try:
        while iterator.has_next():
            item = iterator.next()
            if len(items) == limit:
                return items, next_cursor
            items.append(item)
            next_cursor = iterator.cursor_after().urlsafe().decode()
    except (InvalidArgument, BadRequest):
        # A cursor that decodes but was not made by this query fails in the Datastore.
        if start is not None:
            raise ValidationFailed("cursor is not valid", param="cursor") from None
        raise
    return items, None
