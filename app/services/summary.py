"""Aggregated usage of one meter over a period.

The period is half-open, `[periodStart, periodEnd)`; a date-only end has already
been turned into the next midnight by the edge, so it includes its whole day.
`last` is the value of the event with the latest timestamp; ties go to the
event recorded last (`CreatedAt`), then to the larger key id, so the answer is
the same on every read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from app.errors import NotFound
from app.models import Meter, MeterEvent, root_key
from app.services.meters import get_meter

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Summary:
    meter: Meter
    user_id: str | None
    value: int
    event_count: int
    period_start: datetime | None
    period_end: datetime | None


def _events(meter: Meter, user_id: str | None, start, end):
    query = MeterEvent.query(MeterEvent.meter_id == meter.id_, ancestor=root_key())
    if user_id:
        query = query.filter(MeterEvent.user_id == user_id)
    if start is not None:
        query = query.filter(MeterEvent.timestamp >= start)
    if end is not None:
        query = query.filter(MeterEvent.timestamp < end)
    for event in query.iter():
        if not event.deleted:
            yield event


def aggregate(aggregation: str, events) -> tuple[int, int]:
    """(value, count) of events under an aggregation type."""
    total, count, latest, latest_rank = 0, 0, 0, None
    for event in events:
        count += 1
        total += event.value or 0
        rank = (event.timestamp or _EPOCH, event.created_at or _EPOCH, event.key.id())
        if latest_rank is None or rank > latest_rank:
            latest, latest_rank = event.value or 0, rank
    if aggregation == "count":
        return count, count
    if aggregation == "last":
        return latest, count
    return total, count


def summarize(meter_id: str, user_id: str | None, start: datetime | None,
              end: datetime | None) -> Summary:
    """Usage of a meter (all users, or one) in a period."""
    try:
        meter = get_meter(meter_id)
    except NotFound as exc:
        raise NotFound(exc.message, param="meterId", code=exc.code) from None
    value, count = aggregate(meter.aggregation_type, _events(meter, user_id, start, end))
    return Summary(meter, user_id, value, count, start, end)
