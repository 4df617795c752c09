"""Breakdowns by user that a page can show: pages of users, and the top users of a period.

A summary grouped by `userId` answers one page of users at a time: every (window, group)
entry of up to `limit` users, users in ascending UserId order, and an opaque `nextCursor`
while more users follow. A page reads the rollups of its own users and no others: one
ancestor query `MeterId = M AND UserId > after`, ordered by UserId then Day (the
(MeterId, UserId, Day) index), read in growing batches and left one rollup past the
page's last user, which is how the page knows another follows. UserId "" (org-wide
rollups) never sorts after anything, so it is never read here.

A page counts the users that have rollups, whether or not they have usage in the period
or pass the dimension filters: that keeps its cost bounded by its users. So a page may
hold entries for fewer than `limit` users (even none) and still have a `nextCursor`.

Raw events at a period bound that is not on a 15-minute boundary are read only for the
page's users whose rollup says they have events in that edge slot: every stored event
counts in its series' rollup of its day and slot, so a user without a count there has
nothing to read.

Top users (`orderBy=-value` or `value`) cannot be read from an index: the exact min, max,
last or sum of a user over an arbitrary period is known only once the period's rollups
are merged. They go through every user's rollups of the period in chunks, keeping the
best `limit` in a heap, so memory stays bounded by `limit` and a chunk while the reads
grow with the users (see docs/design.md, "Breakdowns by user").
"""

from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from google.cloud import ndb

from app import deadline
from app.core.cells import Cell, Series
from app.core.slots import ceil_slot, slot_of
from app.core.windows import SummaryRequest, SummaryResult, Window, summarize_cells
from app.errors import ValidationFailed
from app.services import paging, recompute
from app.storage import entities, queries, rollups
from app.storage.entities import EntityPb

if TYPE_CHECKING:
    from app.models import Meter

#: Users per page (and top users) when `limit` is not given.
DEFAULT_LIMIT = 100
#: Users summarized at once while looking for the top users: the heap keeps `limit`.
TOP_CHUNK = 500
#: Entities asked of one RPC at most. The first RPC of a page asks for one rollup per
#: user and day of the period and one past; each next one twice as many, so a page
#: reads at most about twice what it uses, or its users x days.
_MAX_BATCH = 1000

SummaryCell = tuple[Series, datetime, Cell | list[Any]]
Latest = Callable[[frozenset[Series], int], Cell | None]
#: The cells of one user over the period, the way a one-user summary reads them.
UserCells = Callable[[str], Iterable[SummaryCell]]


class _Reading(Protocol):  # app.services.summary.Reading: the entity being merged
    key: Any


@dataclass(frozen=True)
class Breakdown:
    windows: list[Window]
    next_cursor: str | None
    #: The page's own summary when it holds every user (the first page and no next one):
    #: its value and count are then the whole period's, and need no second read.
    whole: SummaryResult | None = None


def applies(
    group_by: tuple[str, ...], order_by: str | None, limit: int | None, cursor: str | None
) -> bool:
    """Whether a summary is answered here: grouped by user, or ordered. `limit` and
    `cursor` mean nothing to another summary: refused rather than ignored."""
    if order_by is not None or "userId" in group_by:
        return True
    for name, given in (("limit", limit), ("cursor", cursor)):
        if given is not None:
            raise ValidationFailed(
                f"{name}: pages answers grouped by userId (or top users with orderBy)",
                param=name,
            )
    return False


def answer(
    meter: Meter,
    request: SummaryRequest,
    *,
    given: tuple[datetime | None, datetime | None],
    limit: int | None,
    cursor: str | None,
    order_by: str | None,
    user_cells: UserCells,
    latest: Latest,
    reading: _Reading,
) -> Breakdown:
    """The page (or top list) of a summary grouped by user. `given` is the period as the
    caller wrote it (a missing end follows the clock), which is what a cursor is bound to."""
    limit = DEFAULT_LIMIT if limit is None else limit
    if order_by is not None:
        _check_top(request, cursor)
        users = _all_users(meter, request, user_cells, reading)
        return Breakdown(_top(request, users, limit, order_by, latest), None)
    bound = _binding(meter, request, given)
    after = paging.open_bytes(cursor, bound).decode() if cursor is not None else ""
    chosen, more = _page_of_users(meter, request, after, limit, user_cells, reading)
    result = summarize_cells(
        request, itertools.chain.from_iterable(c for _, c in chosen), latest, deadline.check
    )
    next_cursor = paging.seal_bytes(chosen[-1][0].encode(), bound) if more else None
    every_user = cursor is None and not more
    return Breakdown(result.windows, next_cursor, result if every_user else None)


def _check_top(request: SummaryRequest, cursor: str | None) -> None:
    if request.group_by != ("userId",) or request.window_size is not None:
        raise ValidationFailed(
            "orderBy: top users need groupBy=userId alone and no windowSize", param="orderBy"
        )
    if cursor is not None:
        raise ValidationFailed("cursor: top users are one list, not pages", param="cursor")


def _binding(
    meter: Meter, request: SummaryRequest, given: tuple[datetime | None, datetime | None]
) -> bytes:
    """What a page cursor is valid for: the org and every parameter that decides which
    entries a page holds (not `limit`: a client may change its page size between pages)."""
    shape = {
        "namespace": ndb.get_context().get_namespace() or "",
        "meter": meter.id_,
        "period": [None if moment is None else moment.isoformat() for moment in given],
        "windowSize": request.window_size,
        "timeZone": request.time_zone,
        "groupBy": list(request.group_by),
        "filters": {name: sorted(values) for name, values in sorted(request.filters.items())},
        "orderBy": None,
    }
    return json.dumps(shape, sort_keys=True).encode()


# --- which users, and their cells ------------------------------------------------------------


UserEntries = list[tuple[str, Iterable[SummaryCell]]]


def _page_of_users(
    meter: Meter,
    request: SummaryRequest,
    after: str,
    limit: int,
    user_cells: UserCells,
    reading: _Reading,
) -> tuple[UserEntries, bool]:
    """(user, cells) of up to `limit` users after `after`, ascending, and whether another
    user follows. Named users (`userId`, `filter[userId]`) are read one by one, as a
    user's summary reads them; otherwise from one query in UserId order, left one rollup
    past the page's last user."""
    named = request.filters.get("userId")
    if named is not None:
        names = sorted(u for u in named if u > after)
        return [(u, user_cells(u)) for u in names[:limit]], len(names) > limit
    days = _day_span(request)
    users = _UserStream(
        queries.rollups_of_users_after(meter.id_, after, _batch_sizes(limit * days + 1))
    )
    chosen: UserEntries = []
    while len(chosen) < limit and users.has_more():
        user, found = users.take()
        chosen.append((user, _cells(meter, user, found, request, reading)))
    return chosen, users.has_more()


def _all_users(
    meter: Meter, request: SummaryRequest, user_cells: UserCells, reading: _Reading
) -> Iterator[tuple[str, Iterable[SummaryCell]]]:
    """(user, cells) of every user, ascending (top users read them all)."""
    named = request.filters.get("userId")
    if named is not None:
        for user in sorted(named):
            yield user, user_cells(user)
        return
    users = _UserStream(queries.rollups_of_users_after(meter.id_, "", None))
    while users.has_more():
        user, found = users.take()
        yield user, _cells(meter, user, found, request, reading)


class _UserStream:
    """Rollups in UserId order taken one user at a time; knows whether another user
    follows from the one entity it read ahead, without reading that user's others."""

    def __init__(self, stream: Iterator[EntityPb]):
        self._stream = stream
        self._ahead = next(stream, None)

    def has_more(self) -> bool:
        return self._ahead is not None

    def take(self) -> tuple[str, list[EntityPb]]:
        assert self._ahead is not None
        user, found = _user_of(self._ahead), [self._ahead]
        self._ahead = None
        for entity in self._stream:
            if _user_of(entity) != user:
                self._ahead = entity
                break
            found.append(entity)
        return user, found


def _day_span(request: SummaryRequest) -> int:
    """UTC days the period touches: the rollups a user active every day has in it."""
    first = rollups.day_and_slot(request.period_start)[0]
    last = rollups.day_and_slot(request.period_end - timedelta(microseconds=1))[0]
    return max(last - first + 1, 1)


def _batch_sizes(first: int) -> Iterator[int]:
    size = min(first, _MAX_BATCH)
    while True:
        yield size
        size = min(size * 2, _MAX_BATCH)


def _user_of(entity: EntityPb) -> str:
    return str(entity.properties["UserId"].string_value)


def _cells(
    meter: Meter,
    user: str,
    found: list[EntityPb],
    request: SummaryRequest,
    reading: _Reading,
) -> Iterator[SummaryCell]:
    """One user's cells of the period from that user's rollups (all days, as the query
    gave them): whole slots inside the period, and the raw events of the period's
    unaligned edges when the rollups show events in an edge slot."""
    start, end = request.period_start, request.period_end
    inner_start, inner_end = ceil_slot(start), slot_of(end)
    if inner_start >= inner_end:  # no whole slot: every event comes raw
        inner_start = inner_end = start
        edges = [(start, end)]
    else:
        edges = [(a, b) for a, b in ((start, inner_start), (inner_end, end)) if a < b]
    edge_slots = {
        slot for a, b in edges for slot in (slot_of(a), slot_of(b - timedelta(microseconds=1)))
    }
    first_day = rollups.day_and_slot(start)[0]
    last_day = rollups.day_and_slot(end - timedelta(microseconds=1))[0]
    in_edges = False
    for entity in found:
        day = entity.properties["Day"].integer_value
        if not first_day <= day <= last_day:
            continue
        deadline.check()
        reading.key = entity.key
        series, day, base, deltas, unknown = rollups.decode_parts(entity)
        if unknown:  # sums at an int64 bound may have clamped: fold, then read again
            raise recompute.Unsettled(entity.key)
        slots: Iterable[tuple[int, Cell | list[Any]]] = itertools.chain(
            ((int(q), fields) for q, fields in base.items()), deltas.items()
        )
        for number, cell in slots:
            moment = rollups.slot_start(day, number)
            if inner_start <= moment < inner_end:
                yield series, moment, cell
            elif moment in edge_slots and _count(cell):
                in_edges = True
    if in_edges:
        for a, b in edges:
            for raw in queries.events(meter.id_, user, a, b):
                reading.key = raw.key
                event = entities.decode_event(raw)
                if event.live:
                    yield event.series, slot_of(event.timestamp), event.cell()


def _count(cell: Cell | list[Any]) -> int:
    return int(cell[0]) if isinstance(cell, list) else cell.count


# --- top users -------------------------------------------------------------------------------


def _top(
    request: SummaryRequest,
    users: Iterator[tuple[str, Iterable[SummaryCell]]],
    limit: int,
    order_by: str,
    latest: Latest,
) -> list[Window]:
    """The `limit` users with the largest (`-value`) or smallest (`value`) value of the
    period, ties by UserId ascending; users without events have no entry, so no value is
    null. Memory: the heap's `limit` entries and one chunk of users."""
    descending = order_by == "-value"

    def rank(window: Window) -> tuple[Any, str]:
        value = window.value
        return (-value if descending else value), window.group_by["userId"]  # type: ignore[operator]

    def entries() -> Iterator[Window]:
        while chunk := list(itertools.islice(users, TOP_CHUNK)):
            cells = itertools.chain.from_iterable(c for _, c in chunk)
            result = summarize_cells(request, cells, latest, deadline.check)
            yield from (w for w in result.windows if w.value is not None)

    return heapq.nsmallest(limit, entries(), key=rank)
