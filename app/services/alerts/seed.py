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

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.cloud import ndb
from google.cloud.datastore_v1.types import query as q

from app import deadline
from app.core.aggregation import Aggregation
from app.core.cells import USER_ID
from app.core.windows import SummaryRequest, summarize_cells
from app.models import Meter, utcnow
from app.services import capabilities, recompute, summary
from app.services.alerts import feed as feed_kind
from app.services.alerts.periods import period_of
from app.services.meters import get_meter
from app.storage import first_events, queries, rpc, shards

#: Rounds of the legacy emulator's read-summary-read before taking the last one anyway
#: (then the feed that keeps appearing is one the next touch re-reads, for max/unique).
LEGACY_ROUNDS = 8
#: A chunk's new per-user tallies, when there are at least this many, are read together:
#: one read of every user's rollups over their periods, summarized per spec and period
#: grouped by user, instead of one summary per tally ...
GROUPED_AT_LEAST = 2
#: ... given up (falling back to one summary per tally) past this many stored entities,
#: so that a meter with many users pays at most this much for having tried.
GROUPED_ENTITIES = 50_000
#: How long this process, once a grouped read of a meter's periods went past the cap,
#: reads them one summary per tally without trying again.
TOO_BIG_SECONDS = 600.0
_too_big: dict[tuple[str, str, datetime, datetime], float] = {}


def _attempt(meter: Meter, start: datetime, end: datetime) -> tuple[str, str, datetime, datetime]:
    """What `_too_big` remembers a grouped read by: the org's namespace too, since two
    orgs' meters can share an id."""
    return (ndb.get_context().get_namespace() or "", meter.id_, start, end)


@dataclass(frozen=True)
class Seed:
    value: int
    at: datetime  # when the reads began: events committed after it are in pending feeds


#: (namespace, meter id) -> (until, monotonic; the meter): the evaluator asks once per
#: chunk, and what it uses (aggregation, unique_by) cannot change once the meter has
#: events, which it has when there are feeds to evaluate.
_meters: dict[tuple[str, str], tuple[float, Meter]] = {}
METER_CACHE_SECONDS = 5.0


def meter_of(meter_id: str) -> Meter:
    key = (ndb.get_context().get_namespace() or "", meter_id)
    now = time.monotonic()
    known = _meters.get(key)
    if known is not None and known[0] > now:
        return known[1]
    meter = get_meter(meter_id)
    if len(_meters) > 10_000:
        _meters.clear()
    _meters[key] = (now + METER_CACHE_SECONDS, meter)
    return meter


def _pending_feeds(meter_id: str) -> dict[bytes, list[Any]]:
    """Serialized key -> contributions of every pending feed of the meter."""
    query = queries.build("alert-feed", [("MeterId", q.PropertyFilter.Operator.EQUAL, meter_id)])
    found = {}
    for entity in rpc.run_query(query, ndb.get_context().get_namespace()):
        contributions = feed_kind.Pending(entity).contributions
        found[entity.key.SerializeToString()] = feed_kind.decode(contributions)
    return found


def _summary_value(meter: Meter, touch: Any) -> int:
    filters = {name: frozenset({value}) for name, value in touch.watch.filter}
    result = summary.summarize(meter.id_, touch.subject, touch.start, touch.end, filters=filters)
    return int(result.value or 0)


def _pending_parts(
    feeds: dict[bytes, list[Any]], touches: list[Any]
) -> dict[tuple[str, str | None, datetime], tuple[int, int]]:
    """(spec, subject, period start) -> (sum, count) of the pending feeds' contributions
    to that tally, for the specs of `touches`: one pass over the feeds."""
    watches = {touch.watch.spec: touch.watch for touch in touches}.values()
    parts: dict[tuple[str, str | None, datetime], tuple[int, int]] = {}
    for contributions in feeds.values():
        for user, dimensions, day, slot, value, number, _high in contributions:
            for watch in watches:
                if not watch.counts(user, dimensions):
                    continue
                subject = watch.subject(user)
                start = period_of(day, slot, watch.period, watch.time_zone)[0]
                key = (watch.spec, subject, start)
                total, count = parts.get(key, (0, 0))
                parts[key] = (total + value, count + number)
    return parts


class _TooMany(Exception):
    """A grouped read went past GROUPED_ENTITIES stored entities."""


#: Tallies one chunk of several feeds may seed one summary each (its grouped read too
#: big): past it, `seed_all` refuses (`TooManySingle`) and the evaluator halves the chunk.
SINGLE_SEEDS = 32


class TooManySingle(Exception):
    """A chunk would seed more than its limit of tallies one summary each. Session 16:
    500 users' tallies seeded before their rules' basis were all re-read at once when it
    passed, one summary each in one read-only transaction, which outlived the
    transaction (60 s); the chunk failed, and so did every later one."""


class _Counted(summary.Reading):
    """A summary's `Reading` that counts the stored entities (and raw events) read, and
    stops the read past `limit`."""

    __slots__ = ("_key", "limit", "read")

    def __init__(self, limit: int) -> None:
        self.read, self.limit = 0, limit
        super().__init__()

    @property
    def key(self) -> Any:
        return self._key

    @key.setter
    def key(self, value: Any) -> None:
        self._key = value
        if value is not None:
            self.read += 1
            if self.read > self.limit:
                raise _TooMany()


def _users_cells(meter: Meter, touches: list[Any]) -> list[Any] | None:
    """ONE read of every user's rollups over all the touches' periods; None if that read
    is too big (GROUPED_ENTITIES, remembered for TOO_BIG_SECONDS) or a rollup needs
    settling."""
    start, end = min(t.start for t in touches), max(t.end for t in touches)
    attempt = _attempt(meter, start, end)
    if _too_big.get(attempt, 0.0) > time.monotonic():
        return None
    counted = _Counted(GROUPED_ENTITIES)
    try:
        return list(summary.cells(meter, None, start, end, counted))
    except _TooMany:
        now = time.monotonic()
        for stale in [key for key, until in _too_big.items() if until <= now]:
            del _too_big[stale]
        _too_big[attempt] = now + TOO_BIG_SECONDS
        return None
    except recompute.Unsettled:
        return None


def _by_user(
    meter: Meter, cells: list[Any], touch: Any, users: frozenset[str] | None = None
) -> dict[str, int]:
    """Each user's value (of `users` only, if given) in the touch's (spec, period), from
    the cells `_users_cells` read."""
    if meter.aggregation_type in _FOLDED:
        return _folded_by_user(meter.aggregation_type, cells, touch, users)
    filters = {name: frozenset({value}) for name, value in touch.watch.filter}
    if users is not None:
        filters[USER_ID] = users
    request = SummaryRequest(
        meter.aggregation_type,
        meter.unique_by,
        touch.start,
        touch.end,
        group_by=(USER_ID,),
        filters=filters,
    )
    inside = [cell for cell in cells if touch.start <= cell[1] < touch.end]
    result = summarize_cells(request, inside, None, deadline.check)
    return {window.group_by[USER_ID]: int(window.value or 0) for window in result.windows}


_FOLDED = (Aggregation.SUM, Aggregation.COUNT, Aggregation.MAX)


def _folded_by_user(
    aggregation: str, cells: list[Any], touch: Any, users: frozenset[str] | None
) -> dict[str, int]:
    """`_by_user` for sum, count and max, folded straight from the cells: the summary
    engine's windows and groups (`summarize_cells`) for every user of a period were most
    of a rule's first chunk in the service (py-spy, `benchmarks/ingest.py`). A period's
    bounds are whole slots (every zone's offset is a multiple of 15 minutes), so its
    cells are rollup slots, each wholly in or out."""
    start, end, wanted = touch.start, touch.end, touch.watch.filter
    values: dict[str, int] = {}
    for series, slot, cell in cells:
        if not start <= slot < end:
            continue
        user = series.user_id
        if users is not None and user not in users:
            continue
        if wanted and any(series.value_of(name) != value for name, value in wanted):
            continue
        if cell.__class__ is list:  # a compacted slot, as the rollup packs it
            count, total, high = cell[0], cell[1], cell[3]
        else:
            count, total, high = cell.count, cell.sum, cell.max
        if not count:
            continue
        if aggregation == Aggregation.SUM:
            values[user] = values.get(user, 0) + total
        elif aggregation == Aggregation.COUNT:
            values[user] = values.get(user, 0) + count
        elif high is not None and (user not in values or high > values[user]):
            values[user] = high
    return values


def _grouped_values(meter: Meter, touches: list[Any]) -> list[int] | None:
    """The values of per-user touches (any specs and periods) from ONE read of every
    user's rollups over all their periods, summarized per (spec, period) grouped by user;
    None if that read is too big or a rollup needs settling (then each touch is read on
    its own, which settles it)."""
    cells = _users_cells(meter, touches)
    if cells is None:
        return None
    periods: dict[tuple[str, datetime], list[int]] = {}
    for index, touch in enumerate(touches):
        periods.setdefault((touch.spec, touch.start), []).append(index)
    values = [0] * len(touches)
    for indexes in periods.values():
        users = frozenset(touches[i].subject for i in indexes)
        by_user = _by_user(meter, cells, touches[indexes[0]], users)
        for index in indexes:
            values[index] = by_user.get(touches[index].subject, 0)
    return values


def _org_values(meter: Meter, touches: list[Any]) -> list[int] | None:
    """The values of org-wide touches (any specs and periods) from ONE read of the org's
    cells over all their periods (its org-wide rollups when summaries may read them, as
    `summary.summarize` does), each summarized over its own period and filter; None if a
    rollup needs settling (then each touch is read on its own, which settles it) or,
    when every user's rollups must be read, past GROUPED_ENTITIES of them.

    Issue 14, session 13: a new rule set's first chunk read one summary per org tally,
    sequentially. In `benchmarks/alerts_exact.py` (an org rule by UTC day and one by
    Kolkata month, events over three days) that was six queries, 0.6 s of the first
    round while eight clients loaded the emulator, and every crossing recorded meanwhile
    waited for it."""
    names = {name for touch in touches for name, _value in touch.watch.filter}
    wanted = dict.fromkeys(names, frozenset[str]())
    source = shards.ORG_USER if summary.reads_org_wide(meter, (), wanted) else None
    start, end = min(t.start for t in touches), max(t.end for t in touches)
    counted = None if source is not None else _Counted(GROUPED_ENTITIES)  # every user's
    try:
        cells = list(summary.cells(meter, source, start, end, counted))
    except (recompute.Unsettled, _TooMany):
        return None
    values = []
    for touch in touches:
        filters = {name: frozenset({value}) for name, value in touch.watch.filter}
        request = SummaryRequest(
            meter.aggregation_type, meter.unique_by, touch.start, touch.end, filters=filters
        )
        inside = [cell for cell in cells if touch.start <= cell[1] < touch.end]
        result = summarize_cells(request, inside, None, deadline.check)
        values.append(int(result.value or 0))
    return values


def _values(meter: Meter, touches: list[Any], single_limit: int | None = None) -> list[int]:
    """Each touch's summary value: the per-user ones together (`_grouped_values`) and the
    org-wide ones together (`_org_values`), when there are enough of them, the others
    one summary each (`TooManySingle` past `single_limit` of those)."""
    values: dict[int, int] = {}
    per_user = [index for index, touch in enumerate(touches) if touch.subject is not None]
    if len(per_user) >= GROUPED_AT_LEAST:
        grouped = _grouped_values(meter, [touches[index] for index in per_user])
        if grouped is not None:
            values = dict(zip(per_user, grouped))
    org = [index for index, touch in enumerate(touches) if touch.subject is None]
    if len(org) >= GROUPED_AT_LEAST:
        together = _org_values(meter, [touches[index] for index in org])
        if together is not None:
            values.update(zip(org, together))
    if single_limit is not None and len(touches) - len(values) > single_limit:
        raise TooManySingle()
    return [
        values[index] if index in values else _summary_value(meter, touch)
        for index, touch in enumerate(touches)
    ]


def _consistent_reads(
    meter: Meter, touches: list[Any], single_limit: int | None = None
) -> tuple[dict[bytes, list[Any]], list[int]]:
    """Pending feeds of the meter and each touch's summary value, at one cut."""
    wanted = {(touch.spec, touch.subject, touch.start) for touch in touches}
    return _at_one_cut(
        meter, lambda: _values(meter, touches, single_limit), touches, wanted.__contains__
    )


def _at_one_cut(
    meter: Meter,
    read: Callable[[], Any],
    touches: list[Any],
    concerns: Callable[[tuple[str, str | None, datetime]], bool],
) -> tuple[dict[bytes, list[Any]], Any]:
    """Pending feeds of the meter and what `read` reads from the summaries, at one cut:
    one read-only transaction, or on the legacy emulator reads retried until no feed
    that appeared meanwhile `concerns` a (spec, subject, period start) of `touches`'
    specs."""
    if capabilities.consistent_snapshots():  # Firestore in Datastore mode: one snapshot
        transaction = rpc.begin_read_only()
        try:
            with rpc.reads_in(transaction):
                feeds = _pending_feeds(meter.id_)
                values = read()
        finally:
            rpc.rollback(transaction)
        return feeds, values
    for _ in range(LEGACY_ROUNDS):
        # the legacy emulator may refuse a plain query under contention ("too much
        # contention", Aborted) while another evaluator commits: read again
        before, values, after = rpc.retry_aborted(
            lambda: (_pending_feeds(meter.id_), read(), _pending_feeds(meter.id_)),
            "a seed's reads",
        )
        appeared = {key: after[key] for key in after if key not in before}
        if not any(concerns(key) for key in _pending_parts(appeared, touches)):
            break
    return before, values


def _every_event_fed(meter: Meter, basis: datetime) -> bool:
    """Whether each user's value net of the pending feeds is what the applied feeds gave
    its tally, so that a user without a tally has 0 (issue 14, session 14): the meter's
    first event was written at or after `basis`, or it has none yet
    (`app.storage.first_events`), and it adds up (sum, count). Events written from the
    basis on all wrote their feed, and every applied feed made the tallies it touched.
    Before, a new meter's first chunk under new rules read every user's rollups of the
    period (`_users_cells`): about 2,000 entities decoded per round of
    `benchmarks/ingest.py`, most of the rules' extra CPU there."""
    if meter.aggregation_type not in (Aggregation.SUM, Aggregation.COUNT):
        return False
    first = first_events.first_written(meter.key.id())
    if isinstance(first, first_events.Unknown):
        return False
    return first is None or first >= basis


def seed_all(meter: Meter, touches: list[Any], single_limit: int | None = None) -> list[Seed]:
    """Each touch's tally value without the feeds still pending (see the module's
    docstring), all read at one cut: one read-only transaction (or one legacy round) for
    the chunk; a spec's per-user tallies of one period together (`_values`), and
    `TooManySingle` when more than `single_limit` would be read one summary each."""
    if not touches:
        return []
    at = utcnow()
    feeds, values = _consistent_reads(meter, touches, single_limit)
    subtract = meter.aggregation_type in (Aggregation.SUM, Aggregation.COUNT)
    parts = _pending_parts(feeds, touches) if subtract else {}
    seeds = []
    for touch, value in zip(touches, values):
        total, count = parts.get((touch.spec, touch.subject, touch.start), (0, 0))
        if subtract:
            value -= total if meter.aggregation_type == Aggregation.SUM else count
        seeds.append(Seed(value, at))
    return seeds


Period = tuple[str, datetime]  # (spec, period start)


def _every_user(meter: Meter, touches: list[Any]) -> dict[Period, dict[str, int]] | None:
    """Every user's value in each touch's (spec, period), from ONE read of the meter's
    users' rollups over all the periods (`_users_cells`); None if that read is too big or
    a rollup needs settling."""
    cells = _users_cells(meter, touches)
    if cells is None:
        return None
    return {(touch.spec, touch.start): _by_user(meter, cells, touch) for touch in touches}


def seed_periods(
    meter: Meter, touches: list[Any], basis: datetime | None = None
) -> tuple[Seed, dict[Period, dict[str, int]]] | None:
    """Every user's tally value in the (per-user) spec and period of each touch (one per
    period) without the feeds still pending, all at one cut and from one read (users at 0
    left out): what `evaluate` stores so that a user new to a period later needs no seed
    of its own. None if the periods hold too much to read at once (then each new tally
    is seeded alone). Nothing is read but one small record when every event of the meter
    wrote a feed under the touches' `basis` (the latest of theirs; `_every_event_fed`)."""
    at = utcnow()
    if basis is not None and _every_event_fed(meter, basis):
        return Seed(0, at), {(touch.spec, touch.start): {} for touch in touches}
    wanted = {(touch.spec, touch.start) for touch in touches}
    feeds, values = _at_one_cut(
        meter,
        lambda: _every_user(meter, touches),
        touches,
        lambda key: (key[0], key[2]) in wanted,
    )
    if values is None:
        return None
    if meter.aggregation_type in (Aggregation.SUM, Aggregation.COUNT):
        sum_ = meter.aggregation_type == Aggregation.SUM
        for (spec, subject, start), (total, count) in _pending_parts(feeds, touches).items():
            of_period = values.get((spec, start))
            if of_period is not None and subject is not None:
                of_period[subject] = of_period.get(subject, 0) - (total if sum_ else count)
    return Seed(0, at), {
        period: {user: value for user, value in users.items() if value}
        for period, users in values.items()
    }
