"""Seeding a tally from the summary engine, at one consistent cut with the feed.

A tally whose period began before every event of it surely wrote a feed (a rule created
mid-period), a max tally after a cancel, and every unique_count tally (distinct values
do not add up) are read from the summary engine: the subject's period value MINUS the
contributions of feeds still pending, which the evaluator adds afterwards. Both reads
must see the same commits:

- Firestore in Datastore mode: the pending-feed query and the summary run inside one
  read-only transaction (`rpc.reads_in`), one snapshot.
- The legacy emulator refuses some queries in transactions, so there the pending feeds
  are read, then the summary, then the pending feeds again; a feed that appeared in
  between and touches the tally may or may not be in the summary, so the three reads
  are retried until none did.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.cloud import ndb
from google.cloud.datastore_v1.types import query as q

from app.core.aggregation import Aggregation
from app.models import Meter, utcnow
from app.services import capabilities, summary
from app.services.alerts import feed as feed_kind
from app.services.alerts.periods import period_of
from app.services.meters import get_meter
from app.storage import queries, rpc

#: Rounds of the legacy emulator's read-summary-read before taking the last one anyway
#: (then the feed that keeps appearing is one the next touch re-reads, for max/unique).
LEGACY_ROUNDS = 8


@dataclass(frozen=True)
class Seed:
    value: int
    at: datetime  # when the reads began: events committed after it are in pending feeds


def meter_of(meter_id: str) -> Meter:
    return get_meter(meter_id)


def _pending_feeds(meter_id: str) -> dict[bytes, list[Any]]:
    """Serialized key -> contributions of every pending feed of the meter."""
    query = queries.build("alert-feed", [("MeterId", q.PropertyFilter.Operator.EQUAL, meter_id)])
    found = {}
    for entity in rpc.run_query(query, ndb.get_context().get_namespace()):
        text = entity.properties["Contributions"].string_value
        found[entity.key.SerializeToString()] = feed_kind.decode(text)
    return found


def _summary_value(meter: Meter, touch: Any) -> int:
    rule = touch.rules[0]
    filters = {name: frozenset({value}) for name, value in rule.filter.items()}
    result = summary.summarize(meter.id_, touch.subject, touch.start, touch.end, filters=filters)
    return int(result.value or 0)


def _part(contributions: list[Any], touch: Any) -> tuple[int, int]:
    """(sum, count) of the contributions that count in the touch's tally."""
    rule = touch.rules[0]
    total = count = 0
    for user, dimensions, day, slot, value, number, _high in contributions:
        if rule.scope != "org" and user != touch.subject:
            continue
        if any(dimensions.get(name, "") != wanted for name, wanted in rule.filter.items()):
            continue
        if period_of(day, slot, rule.period, rule.time_zone)[0] != touch.start:
            continue
        total += value
        count += number
    return total, count


def _consistent_reads(meter: Meter, touches: list[Any]) -> tuple[dict[bytes, list[Any]], list[int]]:
    """Pending feeds of the meter and each touch's summary value, at one cut."""
    if capabilities.consistent_snapshots():  # Firestore in Datastore mode: one snapshot
        transaction = rpc.begin_read_only()
        try:
            with rpc.reads_in(transaction):
                feeds = _pending_feeds(meter.id_)
                values = [_summary_value(meter, touch) for touch in touches]
        finally:
            rpc.rollback(transaction)
        return feeds, values
    for _ in range(LEGACY_ROUNDS):
        before = _pending_feeds(meter.id_)
        values = [_summary_value(meter, touch) for touch in touches]
        after = _pending_feeds(meter.id_)
        appeared = [after[key] for key in after if key not in before]
        if not any(_part(c, touch) != (0, 0) for c in appeared for touch in touches):
            break
    return before, values


def seed_all(meter: Meter, touches: list[Any]) -> list[Seed]:
    """Each touch's tally value without the feeds still pending (see the module's
    docstring), all read at one cut: one read-only transaction (or one legacy round) for
    the chunk, one summary per tally."""
    if not touches:
        return []
    at = utcnow()
    feeds, values = _consistent_reads(meter, touches)
    seeds = []
    for touch, value in zip(touches, values):
        if meter.aggregation_type in (Aggregation.SUM, Aggregation.COUNT):
            total = count = 0
            for contributions in feeds.values():
                part = _part(contributions, touch)
                total, count = total + part[0], count + part[1]
            value -= total if meter.aggregation_type == Aggregation.SUM else count
        seeds.append(Seed(value, at))
    return seeds
