"""Recent events of one meter, newest first, for people looking at them (the dashboard).

Cancelled events are listed too, marked, since cancelling keeps them for audit. A
search by user is an index query (index.yaml: MeterId, UserId, Timestamp desc); a
search by idempotency key needs no query at all, because the key id of an event is
derived from (meter, idempotency key): it is one lookup. An amended event and its
replacement carry their links (`amendedBy`, `amends`), read for the page in one lookup.
"""

from __future__ import annotations

from google.cloud import ndb

from app.errors import NotFound
from app.models import Meter, MeterEvent, root_key
from app.services import amend, paging
from app.services.events import idempotent_id
from app.services.meters import get_meter


def _meter(meter_id: str) -> Meter:
    try:
        return get_meter(meter_id)
    except NotFound as exc:
        raise NotFound(exc.message, param="meterId", code=exc.code) from None


def _by_idempotency(meter: Meter, idempotency: str, user_id: str | None) -> list[MeterEvent]:
    event = ndb.Key(MeterEvent.KIND, idempotent_id(meter.id_, idempotency), parent=root_key()).get()
    if event is None or event.meter_id != meter.id_:
        return []
    if user_id is not None and event.user_id != user_id:
        return []
    return [event]


def recent_events(
    meter_id: str,
    *,
    user_id: str | None = None,
    idempotency: str | None = None,
    limit: int = 25,
    cursor: str | None = None,
) -> tuple[list[MeterEvent], str | None]:
    """A page of a meter's events (all users or one), newest first, and the next cursor."""
    meter = _meter(meter_id)
    if idempotency is not None:
        return amend.with_links(_by_idempotency(meter, idempotency, user_id)), None
    filters = [MeterEvent.meter_id == meter.id_]
    if user_id is not None:
        filters.append(MeterEvent.user_id == user_id)
    query = MeterEvent.query_org(*filters).order(-MeterEvent.timestamp)
    page, next_cursor = paging.page(query, limit, cursor)
    return amend.with_links(page), next_cursor
