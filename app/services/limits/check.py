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
from typing import Any, NamedTuple, Protocol

from flask import current_app, has_app_context
from google.api_core import exceptions as core_exceptions

from app.core.aggregation import Aggregation
from app.errors import NotFound
from app.models import UsageLimit, utcnow
from app.services import capabilities, summary
from app.services.alerts.periods import period_at
from app.services.limits import index
from app.services.limits.definitions import ident_for, meter_key_id
from app.services.meters import find_by_event_name
from app.storage import counters, entities, rpc
from app.storage.counters import Seed, Spec, Tally

#: Rounds of the legacy emulator's read-summary-read before answering from the summary
#: alone (exact, no seed written).
LEGACY_ROUNDS = 8


class LimitView(NamedTuple):
    """What a check needs of a `usage-limit`, decoded from the raw lookup."""

    id_: str
    meter_id: str
    limit_value: int
    period: str
    time_zone: str
    aggregation: str
    counting_since: datetime

    @property
    def spec(self) -> Spec:
        return Spec(self.period, self.time_zone, self.aggregation, self.counting_since)


def _limit_of(entity: Any) -> LimitView:
    props = entity.properties
    since = entities.get_time(entity, "CountingSince")
    return LimitView(
        props["Id_"].string_value,
        props["MeterId"].string_value,
        int(props["Limit"].string_value),
        props["Period"].string_value,
        props["TimeZone"].string_value,
        props["Aggregation"].string_value,
        since if since is not None else utcnow(),
    )


@dataclass(frozen=True)
class Check:
    limit: LimitView
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


class _Counters(NamedTuple):
    name: str
    start: datetime
    end: datetime
    keys: list[Any]  # the shards, then the seed


def _counters(key_id: int, user_id: str, spec: Spec, as_of: datetime) -> _Counters:
    start, end = period_at(as_of, spec.period, spec.zone)
    name = counters.key_name(key_id, user_id, spec, start)
    return _Counters(name, start, end, counters.counter_keys(name) + [counters.seed_key(name)])


class AlongKey(Protocol):
    """A key of another kind (and namespace) read in the check's own lookup, whose entity
    must be confirmed before the check reads or answers anything more: the caller's API
    key (`app.tenancy.PendingKey`), so that a check is one Datastore round trip."""

    key: Any

    def confirm(self, stored: Any) -> None: ...


def check(
    meter_id: str | None, event_name: str | None, user_id: str, along: AlongKey | None = None
) -> Check:
    """The user's usage of the meter this period against the limit that applies: one
    lookup of the two limits, the counters, the seed (and `along`'s key) in the steady
    state (the counters' keys come from the meter's spec as ingestion caches it, even
    expired: the limit read with them says whether it was right; a wrong guess costs
    one more lookup)."""
    key_id = _meter_key_id(meter_id, event_name)
    limit_keys = [
        entities.key(UsageLimit.KIND, ident_for(key_id, user)) for user in (user_id, None)
    ]
    as_of = utcnow()  # every batch answered before this is read below
    cached = index.spec_guess(key_id)
    wanted = _counters(key_id, user_id, cached, as_of) if cached is not None else None
    extra = [along.key] if along is not None else []
    found = rpc.lookup(limit_keys + (wanted.keys if wanted is not None else []) + extra)
    if along is not None:  # before anything else is read or answered
        along.confirm(found.get(along.key.SerializeToString()))
    entity = found.get(limit_keys[0].SerializeToString()) or found.get(
        limit_keys[1].SerializeToString()
    )
    if entity is None:
        raise NotFound(
            "no limit applies to this meter and user",
            param="meterId" if meter_id else "eventName",
            code="limit_not_found",
        )
    limit = _limit_of(entity)
    if wanted is None or cached != limit.spec:
        wanted = _counters(key_id, user_id, limit.spec, as_of)
        found = rpc.lookup(wanted.keys)
    used = _used(limit, user_id, wanted, found, as_of)
    return Check(limit, user_id, used, wanted.start, wanted.end, as_of)


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
    limit: LimitView, user_id: str, wanted: _Counters, found: dict[bytes, Any], as_of: datetime
) -> int:
    since = limit.counting_since
    if limit.aggregation == Aggregation.UNIQUE_COUNT or as_of < since:
        return _summary_value(limit.meter_id, user_id, wanted.start, wanted.end)
    seed_entity = found.get(wanted.keys[-1].SerializeToString())
    tallies = [
        counters.tally_of(found[key])
        for key in (k.SerializeToString() for k in wanted.keys[:-1])
        if key in found
    ]
    if any(abs(t.value) > counters.TRUSTED_MAGNITUDE for t in tallies):
        return _summary_value(limit.meter_id, user_id, wanted.start, wanted.end)
    seed = counters.seed_of(seed_entity) if seed_entity is not None else None
    if seed is not None and seed.seeded_at >= since:
        return _combine(limit.aggregation, seed, tallies)
    if seed is None and wanted.start >= since + _lead():
        return _combine(limit.aggregation, Seed(0, 0, as_of), tallies)
    return _seeded(limit, wanted.name, user_id, wanted.start, wanted.end)


def _seeded(limit: LimitView, name: str, user_id: str, start: datetime, end: datetime) -> int:
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
    try:
        rpc.commit([counters.seed_mutation(name, seed)])
    except core_exceptions.Aborted:
        pass  # contention (the legacy emulator locks the org's entity group): the next check seeds
    return _combine(limit.aggregation, seed, tallies)
