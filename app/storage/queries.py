"""The raw queries of the hot paths, each served by an index that index.yaml declares.

- events of one meter (and user) in a time range: (MeterId, [UserId,] Timestamp)
- rollups of one meter (and user) over a range of days: (MeterId, [UserId,] Day)
All are ancestor queries under the org root, so they are strongly consistent.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from google.cloud import ndb
from google.cloud.datastore_v1.types import query as q

from app.models.base import ROOT_ID, ROOT_KIND
from app.storage import entities, rpc, shards
from app.storage import rollups as rollups_kind
from app.storage.entities import EntityPb, KeyPb

Query = q.Query.pb()
_OP = q.PropertyFilter.Operator


def _root_key() -> KeyPb:
    context = ndb.get_context()
    pb = entities.Key()
    pb.partition_id.project_id = context.client.project
    if context.get_namespace():
        pb.partition_id.namespace_id = context.get_namespace()
    element = pb.path.add()
    element.kind, element.id = ROOT_KIND, ROOT_ID
    return pb


def build(kind: str, conditions: list[tuple[str, int, object]]) -> Any:
    """An ancestor query of `kind` under the org root with AND-ed property conditions."""
    query = Query()
    query.kind.add().name = kind
    composite = query.filter.composite_filter
    composite.op = q.CompositeFilter.Operator.AND
    ancestor = composite.filters.add().property_filter
    ancestor.property.name = "__key__"
    ancestor.op = _OP.HAS_ANCESTOR
    ancestor.value.key_value.CopyFrom(_root_key())
    for name, op, value in conditions:
        condition = composite.filters.add().property_filter
        condition.property.name = name
        condition.op = op
        if isinstance(value, bool):
            condition.value.boolean_value = value
        elif isinstance(value, str):
            condition.value.string_value = value
        elif isinstance(value, datetime):
            entities.set_time_value(condition.value, value)
        else:
            condition.value.integer_value = value
    return query


def _of_meter(
    kind: str,
    meter_id: str,
    user_id: str | None,
    name: str,
    low: tuple[int, object] | None,
    high: tuple[int, object] | None,
    transaction: bytes | None = None,
) -> Iterator[EntityPb]:
    conditions: list[tuple[str, int, object]] = [("MeterId", _OP.EQUAL, meter_id)]
    if user_id is not None:
        conditions.append(("UserId", _OP.EQUAL, user_id))
    for bound in (low, high):
        if bound is not None and bound[1] is not None:
            conditions.append((name, *bound))
    query = build(kind, conditions)
    # Ascending on the range property, said out loud: it is the order the index serves
    # anyway, and it keeps the ascending index needed (a descending one, which the event
    # list has, must not silently stand in for it: production would refuse that query).
    order = query.order.add()
    order.property.name = name
    order.direction = q.PropertyOrder.Direction.ASCENDING
    return rpc.run_query(query, ndb.get_context().get_namespace(), transaction)


def events(
    meter_id: str,
    user_id: str | None,
    start: datetime | None,
    end: datetime | None,
    transaction: bytes | None = None,
) -> Iterator[EntityPb]:
    """Raw `meter-event` entities of a meter (and user) with start <= Timestamp < end."""
    return _of_meter(
        "meter-event",
        meter_id,
        user_id,
        "Timestamp",
        (_OP.GREATER_THAN_OR_EQUAL, start),
        (_OP.LESS_THAN, end),
        transaction,
    )


def _rollups_of(user_id: str | None) -> tuple[str, str | None]:
    """The kind holding a user's rollups (or, for `shards.ORG_USER`, the org-wide ones) and
    the UserId to filter on (None: none, every entity of the kind is the meter's)."""
    if user_id == shards.ORG_USER:
        return rollups_kind.ORG_KIND, None
    return rollups_kind.KIND, user_id


def rollups(
    meter_id: str, user_id: str | None, first_day: int | None, last_day: int | None
) -> Iterator[EntityPb]:
    """Raw rollup entities of a meter for first_day <= Day <= last_day: of one user, of all
    users (None), or the org-wide ones (`shards.ORG_USER`, kind `meter-org-rollup`)."""
    kind, user_id = _rollups_of(user_id)
    return _of_meter(
        kind,
        meter_id,
        user_id,
        "Day",
        (_OP.GREATER_THAN_OR_EQUAL, first_day),
        (_OP.LESS_THAN_OR_EQUAL, last_day),
    )


def rollup_keys(meter_id: str, user_id: str, day: int) -> list[KeyPb]:
    """Keys of the rollup entities of a meter and user (or the org-wide ones, user "") on
    one day: every shard of every series (keys only; equalities, built-in indexes)."""
    kind, user = _rollups_of(user_id)
    conditions: list[tuple[str, int, object]] = [("MeterId", _OP.EQUAL, meter_id)]
    if user is not None:
        conditions.append(("UserId", _OP.EQUAL, user))
    conditions.append(("Day", _OP.EQUAL, day))
    query = build(kind, conditions)
    query.projection.add().property.name = "__key__"
    return [entity.key for entity in rpc.run_query(query, ndb.get_context().get_namespace())]


def rollups_of_users_after(
    meter_id: str, after: str, batch_sizes: Iterator[int] | None = None
) -> Iterator[EntityPb]:
    """Raw `meter-rollup` entities of a meter's users whose UserId sorts after `after`,
    by UserId then Day (the (MeterId, UserId, Day) index): a reader takes users one at a
    time and stops where its page ends. UserId "" (org-wide rollups) is never after
    anything, so `after=""` starts at the first user."""
    query = build(
        "meter-rollup", [("MeterId", _OP.EQUAL, meter_id), ("UserId", _OP.GREATER_THAN, after)]
    )
    for name in ("UserId", "Day"):
        order = query.order.add()
        order.property.name = name
        order.direction = q.PropertyOrder.Direction.ASCENDING
    return rpc.run_query(query, ndb.get_context().get_namespace(), batch_sizes=batch_sizes)


# -- issue 17, export -----------------------------------------------------------------


def events_in_order(
    meter_id: str,
    user_id: str | None,
    start: datetime | None,
    end: datetime | None,
    page_sizes: Iterator[int],
    after_key_id: int | None = None,
) -> Iterator[list[EntityPb]]:
    """Raw `meter-event` entities of a meter (and user) with start <= Timestamp < end, in
    the one total order an export resumes in: Timestamp, then key (Datastore's order of
    ties), one list per RPC (so a reader hands on each page before the next RPC). Each
    RPC reads at most the next of `page_sizes` entities.

    With `after_key_id`, `start` is the Timestamp of an event already sent and the events
    of that very Timestamp whose key id is not above it are skipped by the query itself
    (`__key__ >` on the same (MeterId[, UserId], Timestamp) index), so resuming after any
    number of ties reads none of them again."""
    if after_key_id is not None and start is not None:
        ties: list[tuple[str, int, object]] = [("MeterId", _OP.EQUAL, meter_id)]
        if user_id is not None:
            ties.append(("UserId", _OP.EQUAL, user_id))
        ties.append(("Timestamp", _OP.EQUAL, start))
        query = build("meter-event", ties)
        condition = query.filter.composite_filter.filters.add().property_filter
        condition.property.name = "__key__"
        condition.op = _OP.GREATER_THAN
        entities.fill_key(condition.value.key_value, "meter-event", after_key_id)
        order = query.order.add()
        order.property.name = "__key__"
        order.direction = q.PropertyOrder.Direction.ASCENDING
        namespace = ndb.get_context().get_namespace()
        yield from rpc.run_query_pages(query, namespace, batch_sizes=page_sizes)
        low: tuple[int, object] = (_OP.GREATER_THAN, start)
    else:
        low = (_OP.GREATER_THAN_OR_EQUAL, start)
    conditions: list[tuple[str, int, object]] = [("MeterId", _OP.EQUAL, meter_id)]
    if user_id is not None:
        conditions.append(("UserId", _OP.EQUAL, user_id))
    for bound in (low, (_OP.LESS_THAN, end)):
        if bound[1] is not None:
            conditions.append(("Timestamp", *bound))
    query = build("meter-event", conditions)
    order = query.order.add()
    order.property.name = "Timestamp"
    order.direction = q.PropertyOrder.Direction.ASCENDING
    # Ties of Timestamp come in key order: said out loud, so every Datastore (and both
    # emulators) gives the same order a resumed export relies on.
    order = query.order.add()
    order.property.name = "__key__"
    order.direction = q.PropertyOrder.Direction.ASCENDING
    namespace = ndb.get_context().get_namespace()
    yield from rpc.run_query_pages(query, namespace, batch_sizes=page_sizes)


def count_events(
    meter_id: str, user_id: str | None, start: datetime | None, end: datetime | None
) -> int:
    """How many `meter-event` entities of a meter (and user) have start <= Timestamp < end:
    a keys-only query on the same index as `events` (index entries, no entity reads)."""
    conditions: list[tuple[str, int, object]] = [("MeterId", _OP.EQUAL, meter_id)]
    if user_id is not None:
        conditions.append(("UserId", _OP.EQUAL, user_id))
    if start is not None:
        conditions.append(("Timestamp", _OP.GREATER_THAN_OR_EQUAL, start))
    if end is not None:
        conditions.append(("Timestamp", _OP.LESS_THAN, end))
    query = build("meter-event", conditions)
    query.projection.add().property.name = "__key__"
    order = query.order.add()
    order.property.name = "Timestamp"
    order.direction = q.PropertyOrder.Direction.ASCENDING
    return sum(1 for _ in rpc.run_query(query, ndb.get_context().get_namespace()))


def events_page(
    meter_id: str,
    user_id: str | None,
    start: datetime,
    end: datetime,
    cursor: bytes,
    limit: int,
) -> tuple[list[tuple[EntityPb, bytes]], bytes, bool]:
    """Up to `limit` raw `meter-event`s of a meter (and user) with start <= Timestamp < end,
    from position `cursor` (b"": the first), in Timestamp order, each with the position
    after it; the position after the batch; and whether the range is read to its end.
    The index of `events` serves it (ties in Timestamp come in key order, so a position
    is exact)."""
    conditions: list[tuple[str, int, object]] = [("MeterId", _OP.EQUAL, meter_id)]
    if user_id is not None:
        conditions.append(("UserId", _OP.EQUAL, user_id))
    conditions += [
        ("Timestamp", _OP.GREATER_THAN_OR_EQUAL, start),
        ("Timestamp", _OP.LESS_THAN, end),
    ]
    query = build("meter-event", conditions)
    order = query.order.add()
    order.property.name = "Timestamp"
    order.direction = q.PropertyOrder.Direction.ASCENDING
    query.limit.value = limit
    batch = rpc.run_query_batch(query, ndb.get_context().get_namespace(), cursor)
    found = [(result.entity, result.cursor) for result in batch.entity_results]
    finished = batch.more_results == batch.NO_MORE_RESULTS or (
        not found and batch.more_results != batch.NOT_FINISHED
    )
    return found, batch.end_cursor or cursor, finished


# -- issue 17, session 8: a range cancel's shards, listed a day at a time ------------------


def rollup_keys_of_day(meter_id: str, org_wide: bool, day: int, most: int) -> list[KeyPb] | None:
    """Keys of every rollup entity (every user's, or the org-wide ones) of a meter on one
    day, at most `most` of them (None when there are more): keys only, equalities, so the
    built-in indexes serve it. A range cancel lists a page's shards with it, one query per
    day instead of one per (series, day)."""
    kind = rollups_kind.ORG_KIND if org_wide else rollups_kind.KIND
    query = build(kind, [("MeterId", _OP.EQUAL, meter_id), ("Day", _OP.EQUAL, day)])
    query.projection.add().property.name = "__key__"
    query.limit.value = most + 1
    keys = [entity.key for entity in rpc.run_query(query, ndb.get_context().get_namespace())]
    return keys if len(keys) <= most else None


# -- issue 14, session 10: the background loops' checks, keys only ------------------------

#: The comparison operators of `first_keys` conditions.
Operator = _OP


def first_keys(
    kind: str,
    conditions: list[tuple[str, int, object]],
    limit: int,
    ascending_on: str | None = None,
) -> list[KeyPb]:
    """Keys of at most `limit` entities of an ancestor query of `kind` under the current
    org's root (oldest `ascending_on` first, if named): one raw RPC for a check that
    usually finds nothing. The background loops make these checks every second for
    every registered org; through NDB each cost a few times the CPU (its query and
    tasklet machinery), which was most of what an idle worker spent
    (benchmarks/idle_loops.py)."""
    query = build(kind, conditions)
    query.projection.add().property.name = "__key__"
    if ascending_on is not None:
        order = query.order.add()
        order.property.name = ascending_on
        order.direction = q.PropertyOrder.Direction.ASCENDING
    return [entity.key for entity in _first(query, kind, limit)]


def first_entities(kind: str, conditions: list[tuple[str, int, object]], limit: int) -> list[Any]:
    """At most `limit` entities (raw) of an ancestor query of `kind` under the current
    org's root, in one raw RPC: `first_keys` for whole entities (the alert evaluator's
    pending feeds, read every chunk)."""
    return _first(build(kind, conditions), kind, limit)


def _first(query: Any, kind: str, limit: int) -> list[Any]:
    """The first `limit` entities `query` finds in the current org's namespace."""
    query.limit.value = limit
    namespace = ndb.get_context().get_namespace()

    def found() -> list[Any]:
        return list(itertools.islice(rpc.run_query(query, namespace), limit))

    # The legacy emulator refuses an ancestor query of an entity group under contention
    # (Aborted), as NDB's queries met and retried.
    return rpc.retry_aborted(found, f"a query of {kind}")


def ndb_key(pb: KeyPb) -> ndb.Key:
    """The NDB key of a raw key (for code that goes on with NDB models)."""
    flat: list[Any] = []
    for element in pb.path:
        flat += [element.kind, element.name or element.id]
    return ndb.Key(*flat, namespace=pb.partition_id.namespace_id or None)
