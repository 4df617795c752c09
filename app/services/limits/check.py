"""May this user still use the product? The limit check, on the tenant's request path.

The answer must reflect every batch answered 201 before the check began, and cost a few
milliseconds and a constant number of reads whatever the usage. So it never runs the
summary engine in the steady state; it reads, by key:

1. the user's override and the meter's default limit (`definitions.key_for`; NDB's global
   cache on Redis keeps them, `app/cache.py`, so usually no Datastore read),
2. in ONE lookup, the `SHARDS` counter entities of (meter, user, period) and its seed
   (`app.storage.counters`): the counters hold what ingestion added in the commits of
   the batches themselves, so a committed batch is in them (lookups are strongly
   consistent), and the seed holds where they started.

`used` = seed value + (counters now - counters at the seed's cut) (max: the larger of the
seed's value and the counters'). A seed is read once per (meter, user, period) from the
summary engine at one cut with the counters: a read-only transaction in Firestore mode;
on the legacy emulator counters, summary, counters again until no batch came between.
A period that began after the limit's `counting_since` (plus the future-timestamp
allowance) needs no seed: every event in it was counted.

The summary engine answers instead (exact, slower) for unique_count meters (distinct
values do not add up), before `counting_since` (a process may still be committing
batches without counting them), and for counters near int64's bounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import current_app, has_app_context
from google.cloud import ndb

from app.core.aggregation import Aggregation
from app.errors import NotFound
from app.models import UsageLimit, utcnow
from app.services import capabilities, summary
from app.services.alerts.periods import period_at
from app.services.limits.definitions import key_for, meter_key_id
from app.services.meters import find_by_event_name
from app.storage import counters, rpc
from app.storage.counters import Seed, Spec, Tally

#: Rounds of the legacy emulator's read-summary-read before answering from the summary
#: alone (exact, no seed written).
LEGACY_ROUNDS = 8


@dataclass(frozen=True)
class Check:
    limit: UsageLimit
    user_id: str
    used: int
    period_start: datetime
    period_end: datetime
    as_of: datetime

    @property
    def allowed(self) -> bool:
        return self.used < self.limit.limit_value

    @property
    def remaining(self) -> int:
        return max(0, self.limit.limit_value - self.used)


def _meter_key_id(meter_id: str | None, event_name: str | None) -> int:
    """The key id of the meter named, without reading the meter when named by id."""
    if meter_id:
        key_id = meter_key_id(meter_id)
        if key_id is None:
            raise NotFound("meter not found", param="meterId", code="meter_not_found")
        return key_id
    meter = find_by_event_name(event_name or "")
    if meter is None:
        raise NotFound(
            "no active meter has this event name", param="eventName", code="meter_not_found"
        )
    return int(meter.key.id())


def check(meter_id: str | None, event_name: str | None, user_id: str) -> Check:
    """The user's usage of the meter this period against the limit that applies."""
    key_id = _meter_key_id(meter_id, event_name)
    override, default = ndb.get_multi([key_for(key_id, user_id), key_for(key_id, None)])
    limit = override or default
    if limit is None:
        raise NotFound(
            "no limit applies to this meter and user",
            param="meterId" if meter_id else "eventName",
            code="limit_not_found",
        )
    as_of = utcnow()  # every batch answered before this is read below
    start, end = period_at(as_of, limit.period, limit.time_zone)
    used = _used(limit, key_id, user_id, start, end, as_of)
    return Check(limit, user_id, used, start, end, as_of)


def _summary_value(meter_id: str, user_id: str, start: datetime, end: datetime) -> int:
    value = summary.summarize(meter_id, user_id, start, end).value
    return int(value or 0)


def _combine(aggregation: str, seed: Seed, tallies: list[Tally]) -> int:
    if aggregation == Aggregation.MAX:
        return max([seed.value] + [t.value for t in tallies])
    return seed.value + sum(t.value for t in tallies) - seed.counted


def _counted(aggregation: str, tallies: list[Tally]) -> int:
    if aggregation == Aggregation.MAX:
        return max([t.value for t in tallies], default=0)
    return sum(t.value for t in tallies)


def _lead() -> Any:
    if has_app_context():
        return current_app.config["METERING"].max_event_lead
    from app.config import Config  # here: only outside an app (scripts), rarely

    return Config.max_event_lead


def _used(
    limit: UsageLimit, key_id: int, user_id: str, start: datetime, end: datetime, as_of: datetime
) -> int:
    since = limit.counting_since
    if limit.aggregation == Aggregation.UNIQUE_COUNT or as_of < since:
        return _summary_value(limit.meter_id, user_id, start, end)
    spec = Spec(limit.period, limit.time_zone, limit.aggregation, since)
    name = counters.key_name(key_id, user_id, spec, start)
    seed_key = counters.seed_key(name)
    found = rpc.lookup(counters.counter_keys(name) + [seed_key])
    seed_entity = found.pop(seed_key.SerializeToString(), None)
    tallies = [counters.tally_of(entity) for entity in found.values()]
    if any(abs(t.value) > counters.TRUSTED_MAGNITUDE for t in tallies):
        return _summary_value(limit.meter_id, user_id, start, end)
    seed = counters.seed_of(seed_entity) if seed_entity is not None else None
    if seed is not None and seed.seeded_at >= since:
        return _combine(limit.aggregation, seed, tallies)
    if seed is None and start >= since + _lead():
        return _combine(limit.aggregation, Seed(0, 0, as_of), tallies)
    return _seeded(limit, name, user_id, start, end)


def _seeded(limit: UsageLimit, name: str, user_id: str, start: datetime, end: datetime) -> int:
    """The period's value from the summary engine, stored as the counters' seed when it
    could be read at one cut with them."""
    at = utcnow()
    keys = counters.counter_keys(name)
    if capabilities.consistent_snapshots():  # Firestore in Datastore mode: one snapshot
        transaction = rpc.begin_read_only()
        try:
            with rpc.reads_in(transaction):
                tallies = [counters.tally_of(e) for e in rpc.lookup(keys).values()]
                value = _summary_value(limit.meter_id, user_id, start, end)
        finally:
            rpc.rollback(transaction)
    else:
        for _ in range(LEGACY_ROUNDS):
            before = {k: counters.tally_of(e) for k, e in rpc.lookup(keys).items()}
            value = _summary_value(limit.meter_id, user_id, start, end)
            if before == {k: counters.tally_of(e) for k, e in rpc.lookup(keys).items()}:
                tallies = list(before.values())
                break
        else:
            return value  # batches kept coming between the reads: exact, not stored
    seed = Seed(value, _counted(limit.aggregation, tallies), at)
    rpc.commit([counters.seed_mutation(name, seed)])
    return _combine(limit.aggregation, seed, tallies)
