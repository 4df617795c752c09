"""The usage feed: what ingestion and cancellation tell the alert evaluator.

Ingestion must not read anything more for alerts, so it does not look at tallies: when
a meter of a batch has active rules, the batch's commit also inserts one `alert-feed`
entity per such meter, holding the contributions of the batch's created events grouped
as ingestion already groups them for the rollups (user, dimension values, UTC slot: sum,
count, max). The evaluator (`evaluate`) applies and deletes feeds. A meter without
rules costs nothing: the rule set is cached per process (`has_rules`), and no feed is
written.

A contribution is `[userId, {dimension: value}, day, slot, sum, count, max]` with `day`
and `slot` as `app.core.slots.day_and_slot` numbers them.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

from flask import current_app, has_app_context
from google.cloud import ndb

from app.core.bounds import MAX_ID
from app.core.cells import Cell, Series
from app.core.slots import day_and_slot
from app.models import AlertMeters, root_key
from app.storage import entities, queries, rpc, shards

KIND = "alert-feed"
DEFAULT_CACHE_SECONDS = 1.0

#: namespace -> (expires at, monotonic; meter key ids with active rules)
_cache: dict[str, tuple[float, frozenset[int]]] = {}
_lock = threading.Lock()

Contribution = list[Any]


def cache_seconds() -> float:
    """METERING_ALERT_RULE_CACHE_SECONDS of the running app (1 s outside one)."""
    if has_app_context():
        return float(current_app.config["METERING"].alert_rule_cache_seconds)
    return DEFAULT_CACHE_SECONDS


#: One entity per org under its root: the key ids of the meters with active rules, kept by
#: every rule write in its transaction (`rules._save`). Ingestion's cache refresh is then
#: one lookup of one entity, however many rules the org has.
INDEX_KIND, INDEX_NAME = "alert-meters", "active"


def index_entity(meter_key_ids: Iterable[int]) -> Any:
    """The `alert-meters` entity (NDB) for these meters, with a new version token."""
    return AlertMeters(
        key=ndb.Key(INDEX_KIND, INDEX_NAME, parent=root_key()),
        meter_key_ids=json.dumps(sorted(set(meter_key_ids))),
        version=uuid.uuid4().hex,
    )


def forget_rules() -> None:
    """Drop this process's cache: a rule was created, changed or archived here."""
    with _lock:
        _cache.clear()


def _meters_with_rules(namespace: str) -> frozenset[int]:
    now = time.monotonic()
    with _lock:
        known = _cache.get(namespace)
    if known is not None and known[0] > now:
        return known[1]
    found = rpc.lookup([entities.key(INDEX_KIND, INDEX_NAME)])
    meters: frozenset[int] = frozenset()
    if found:
        entity = next(iter(found.values()))
        meters = frozenset(json.loads(entity.properties["MeterKeyIds"].string_value or "[]"))
    with _lock:
        if len(_cache) > 10_000:
            _cache.clear()
        _cache[namespace] = (now + cache_seconds(), meters)
    return meters


def meters_with_rules(meter_key_ids: Iterable[int]) -> set[int]:
    """Those of `meter_key_ids` (of the current org) that have active alert rules."""
    namespace = ndb.get_context().get_namespace() or ""
    with_rules = _meters_with_rules(namespace)
    if not with_rules:
        return set()
    return {key_id for key_id in meter_key_ids if key_id in with_rules}


def contributions_of(
    grouped: dict[tuple[Any, ...], dict[int, Cell]], meter_key_id: int
) -> list[Contribution]:
    """The contributions of one meter from ingestion's grouped cells
    ((meter key id, meter id, aggregation, series, day) -> slot -> Cell), users' series
    only (the org-wide ones are the same events again)."""
    found: list[Contribution] = []
    for (key_id, _meter_id, _aggregation, series, day), cells in grouped.items():
        if key_id != meter_key_id or shards.is_org(series):
            continue
        for slot, cell in cells.items():
            found.append(_contribution(series, day, slot, cell.sum, cell.count, cell.max))
    return found


def _contribution(
    series: Series, day: int, slot: int, total: int, count: int, high: int | None
) -> Contribution:
    return [series.user_id, dict(series.dimensions), day, slot, total, count, high]


def cancelled_contributions(events: Iterable[Any]) -> dict[str, list[Contribution]]:
    """meter id -> negative contributions of cancelled events (`entities.StoredEvent`)."""
    found: dict[str, list[Contribution]] = {}
    for event in events:
        day, slot = day_and_slot(event.timestamp)
        found.setdefault(event.meter_id, []).append(
            _contribution(event.series, day, slot, -event.value, -1, None)
        )
    return found


def decode(text: str | bytes | None) -> list[Contribution]:
    """The contributions a feed entity holds."""
    return json.loads(text) if text else []


def mutation(meter_id: str, contributions: list[Contribution], recompute: bool = False) -> Any:
    """An insert of one feed entity (random id) for a commit."""
    mutation_pb = rpc.Mutation()
    entity = mutation_pb.insert
    entities.fill_key(entity.key, KIND, random.SystemRandom().randrange(1, MAX_ID))
    entities.set_string(entity, "MeterId", meter_id)
    entities.set_string(
        entity, "Contributions", json.dumps(contributions, separators=(",", ":")), indexed=False
    )
    entity.properties["Recompute"].boolean_value = recompute
    entity.properties["Recompute"].exclude_from_indexes = True
    return mutation_pb


class Pending:
    """A pending feed as the evaluator reads it: its raw entity, and the fields it asks
    for read from it, without NDB. Making an NDB model of each feed read (twice a chunk:
    to plan, and in the transaction) and an NDB key of each again for the commit was a
    tenth of a steady chunk's CPU (benchmarks/alerts_eval.py --profile, session 11)."""

    __slots__ = ("entity",)

    def __init__(self, entity: Any) -> None:
        self.entity = entity

    @property
    def key_pb(self) -> Any:
        return self.entity.key

    @property
    def key(self) -> ndb.Key:
        """Its NDB key (for the rare paths that go on with NDB)."""
        return queries.ndb_key(self.entity.key)

    @property
    def contributions(self) -> str | None:
        return _text(self.entity, "Contributions")

    @property
    def recompute(self) -> bool:
        props = self.entity.properties
        return "Recompute" in props and bool(props["Recompute"].boolean_value)

    @property
    def done(self) -> str | None:
        return _text(self.entity, "Done")

    def with_done(self, done: str) -> Any:
        """The raw upsert of this feed with `done` (`evaluate._commit_in_parts`)."""
        mutation_pb = rpc.Mutation()
        mutation_pb.upsert.CopyFrom(self.entity)
        entities.set_string(mutation_pb.upsert, "Done", done, indexed=False)
        return mutation_pb


def _text(entity: Any, name: str) -> str | None:
    """A text property of a raw entity (NDB's TextProperty: a string, or bytes when
    stored by an older writer), None when missing or null."""
    props = entity.properties
    if name not in props:
        return None
    value = props[name]
    kind = value.WhichOneof("value_type")
    if kind == "string_value":
        return str(value.string_value)
    if kind == "blob_value":
        return bytes(value.blob_value).decode()
    return None
