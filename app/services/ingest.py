"""Storing a validated batch exactly once, with its rollups, in one commit.

Every event's key is fixed before the commit (derived from its idempotency key,
or random), and the batch's events and rollup updates commit together or not at
all. Two paths:

- Fast path (Firestore in Datastore mode, values in int64 sums' range): one
  Commit RPC in a single-use transaction, events as `insert` mutations and
  rollups as blind increments. No read at all. If any event already exists the
  insert fails, nothing is written, and the batch takes the careful path.
- Careful path: a transaction that looks the events up (and the rollups it must
  merge by hand), answers existing ones `duplicate` or `conflict`, and commits
  only the new events and their rollup changes. Aborted transactions (lock
  contention) are retried with jittered backoff.

Server-side increments are int64 and saturate. A commit's transform results say
what each sum accumulator holds afterwards; one past 2**62 is folded at once
into the rollup's base, whose JSON integers are exact at any size (`_fold`).
Should one still reach a bound (hundreds of commits landing during one fold),
it may have clamped: readers take that slot from the raw events
(`rollups.decode_parts`) and the fold does too, so no answer carries a clamped sum.
"""

from __future__ import annotations

import functools
import logging
import random
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime

from google.api_core import exceptions as core_exceptions

from app.services import capabilities, compact, recompute
from app.services.windows import Cell
from app.storage import entities, rollups, rpc
from app.storage.rollups import rank  # noqa: F401 - the order of `last`, used here and by callers

MAX_ID = (1 << 63) - 1
log = logging.getLogger(__name__)


@dataclass
class Draft:
    """One validated event, ready to be stored."""

    meter: object  # models.Meter
    user_id: str
    value: int
    timestamp: datetime
    timestamp_given: bool
    idempotency: str
    dimensions: dict
    metadata: dict
    key_id: int | None = None  # set for idempotent events; random ones are drawn per try
    meter_key_id: int = 0  # the meter's key id (NDB's key.id() copies the path each call)

    def __post_init__(self):
        if not self.meter_key_id:
            self.meter_key_id = self.meter.key.id()

    def same_payload(self, stored) -> bool:
        props = stored.properties
        return (props["MeterId"].string_value == self.meter.id_
                and props["UserId"].string_value == self.user_id
                and props["Value"].integer_value == self.value
                and entities.read_shadow(stored, "Dimensions_", dict) == self.dimensions
                and (not self.timestamp_given
                     or entities.get_time(stored, "Timestamp") == self.timestamp))


@dataclass(frozen=True)
class Outcome:
    id: str
    status: str  # created | duplicate | conflict


@dataclass
class _Plan:
    """The keys of one attempt and which drafts it creates."""

    key_ids: list[int]
    creates: list[int] = field(default_factory=list)  # draft indexes, first of their key
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    to_fold: list = field(default_factory=list)  # rollup keys whose sums near int64's bounds


def _random_id() -> int:
    return random.SystemRandom().randrange(1, MAX_ID)


@functools.lru_cache(maxsize=8192)  # each created event's id is needed twice; hashids is slow
def _public_id(key_id: int, namespace_code: int) -> str:
    from app.models import ids
    return ids.encode_numbers(ids.KIND_CODES["meter-event"], key_id,
                              ids.KIND_CODES["synckey"], 1, namespace_code)


def _plan(drafts: list[Draft]) -> _Plan:
    plan = _Plan([d.key_id or _random_id() for d in drafts])
    first_of: dict[int, int] = {}
    for index, key_id in enumerate(plan.key_ids):
        if key_id in first_of:
            continue
        first_of[key_id] = index
        plan.creates.append(index)
    return plan


def _in_batch_outcomes(drafts, plan, code, stored: dict | None = None) -> None:
    """Outcomes of drafts repeating a key that an earlier draft of the batch holds.

    A repeat is judged against the stored event when the key was stored before this
    batch (`stored`: serialized key -> entity), else against the batch's first copy.
    """
    first_of = {plan.key_ids[i]: i for i in plan.creates}
    for index, key_id in enumerate(plan.key_ids):
        first = first_of[key_id]
        if index == first or index in plan.outcomes:
            continue
        found = (stored or {}).get(entities.key("meter-event", key_id).SerializeToString())
        if found is not None:
            same = drafts[index].same_payload(found)
        else:
            same = _same_draft(drafts[first], drafts[index])
        plan.outcomes[index] = Outcome(_public_id(key_id, code),
                                       "duplicate" if same else "conflict")


def _same_draft(a: Draft, b: Draft) -> bool:
    return (a.meter.id_, a.user_id, a.value, a.dimensions) == (
        b.meter.id_, b.user_id, b.value, b.dimensions) and (
        not b.timestamp_given or a.timestamp == b.timestamp)


def _add_events(into, drafts, plan, indexes, code, now) -> None:
    """Insert mutations of the drafts at `indexes`, built in place in `into`."""
    template = entities.event_template(now)
    for index in indexes:
        draft = drafts[index]
        key_id = plan.key_ids[index]
        entities.fill_event(
            into.add().insert, template, key_id=key_id, public_id=_public_id(key_id, code),
            meter_id=draft.meter.id_, user_id=draft.user_id, value=draft.value,
            timestamp=draft.timestamp, idempotency=draft.idempotency,
            dimensions=draft.dimensions, metadata=draft.metadata)


def _cells(drafts, plan, indexes, now) -> tuple[dict[tuple, dict[int, Cell]], dict]:
    """(meter, series, day) -> slot -> Cell of the created drafts, and the same keys ->
    slot -> sum of the negative values, where there are any (see `rollups.increments`)."""
    grouped: dict[tuple, dict[int, Cell]] = {}  # (meter key id, id, aggregation, series, day)
    negatives: dict[tuple, dict[int, int]] = {}
    for index in indexes:
        draft = drafts[index]
        series = rollups.series_of(draft.user_id, draft.dimensions)
        day, slot = rollups.day_and_slot(draft.timestamp)
        group = (draft.meter_key_id, draft.meter.id_, draft.meter.aggregation_type, series, day)
        cells = grouped.setdefault(group, {})
        cell = cells.setdefault(slot, Cell())
        cell.add_event(draft.value, rank(draft.timestamp, now, plan.key_ids[index]))
        if draft.value < 0:
            below = negatives.setdefault(group, {})
            below[slot] = below.get(slot, 0) + draft.value
    return grouped, negatives


# Server-side increments are int64 and saturate. A value this large takes the careful
# path, whose rollups keep exact Python ints (JSON); smaller ones are added by the server,
# and a slot's deltas need tens of thousands of them between two folds to near a bound,
# which the commit's answer shows (`_keys_to_fold`). A batch this long could overflow one
# increment by itself, so it merges too.
LARGE_VALUE = 1 << 48
LONG_BATCH = 1 << 15  # LONG_BATCH * LARGE_VALUE == 2**63


def _needs_merge(draft: Draft, batch_length: int) -> bool:
    """Whether this draft's rollup must be read and merged rather than incremented."""
    return not capabilities.transforms() or (
        (abs(draft.value) >= LARGE_VALUE or batch_length >= LONG_BATCH)
        and rollups.adds_values(draft.meter.aggregation_type))


def _add_rollups(into, grouped, stored: dict, merge_meters: set) -> None:
    """Increments where the server can add; merged replacements where we read first."""
    grouped, negatives = grouped
    for group, cells in grouped.items():
        meter_key_id, meter_id, aggregation, series, day = group
        if meter_key_id not in merge_meters:
            rollups.increments(meter_key_id, meter_id, series, day, cells, aggregation,
                               mutation=into.add(), negatives=negatives.get(group))
            continue
        key_pb = rollups.key(meter_key_id, series, day)
        found = stored.get(key_pb.SerializeToString())
        merged = recompute.exact_cells(found, meter_id)[2] if found is not None else {}
        for slot, cell in cells.items():
            merged.setdefault(slot, Cell()).merge(cell)
        into.append(rollups.replacement(key_pb, meter_id, series, day, merged))


# An int64 at least 2**62 from zero, as a varint on the wire: nine bytes whose last has bit
# 0x40 set (positive), or ten (negative, two's complement) whose ninth has it clear and
# whose tenth is 0x01. Nothing else in a CommitResponse gets that long (versions and times
# are microseconds or seconds), so a search over its bytes tells whether reading its
# transform results one by one (hundreds of µs a batch) can find anything. First the
# cheap part, 8 bytes in a row with the continuation bit (any varint past 2**56, any
# negative one), by a byte translation and a substring search (a few µs); then the pattern.
_LARGE_VARINT = re.compile(rb"[\x80-\xff]{8}(?:[\x40-\x7f]|[\x80-\xbf]\x01)")
_CONTINUED = bytes(int(byte >= 0x80) for byte in range(256))  # a translation table
_EIGHT_CONTINUED = b"\x01" * 8


def _may_need_folding(response) -> bool:
    """False only when no transform result of the commit is 2**62 or more from zero."""
    data = response.SerializeToString()
    start = data.translate(_CONTINUED).find(_EIGHT_CONTINUED)
    return start >= 0 and _LARGE_VARINT.search(data, start) is not None


def _keys_to_fold(request, response) -> list:
    """Keys of the rollups whose sum accumulators answered at least `rollups.FOLD_AT` away
    from zero (or at a bound, where they may have clamped): they are folded now."""
    if not _may_need_folding(response):
        return []
    keys, high, low = [], rollups.FOLD_AT, -rollups.FOLD_AT
    for index, result in enumerate(response.mutation_results):
        for position, value in enumerate(result.transform_results):  # events have none
            number = value.integer_value
            if (number >= high or number < low) and request.mutations[index].property_transforms[
                    position].property[0] in "SM":  # not the minimum or maximum of values
                keys.append(request.mutations[index].upsert.key)
                break
    return keys


_folding: set[bytes] = set()  # rollups this process is folding now
_folding_lock = threading.Lock()


def _fold(keys: list) -> None:
    """Compact the rollups of `keys` now, so their sums move, exact, into the base (JSON
    integers, unbounded) and their accumulators start again from zero; a slot that may
    have clamped is folded from its raw events. A rollup another request of this process
    is folding is left to it: a commit that saw the accumulator before that fold's read
    is in it, and one after it added to fresh deltas. The batch is stored whatever
    happens here: readers take a clamped slot from the raw events until it is folded, and
    the compaction cron folds what a failure here leaves."""
    for key_pb in keys:
        ident = key_pb.SerializeToString()
        with _folding_lock:
            if ident in _folding:
                continue
            _folding.add(ident)
        try:
            compact.compact_one(key_pb)
        except core_exceptions.GoogleAPICallError as error:
            log.warning("could not fold a rollup near int64's bounds yet (the cron will): %s",
                        error)
        finally:
            with _folding_lock:
                _folding.discard(ident)


def _fast_path(drafts, plan, code, now) -> list[Outcome] | None:
    request = rpc.new_commit()
    _add_events(request.mutations, drafts, plan, plan.creates, code, now)
    _add_rollups(request.mutations, _cells(drafts, plan, plan.creates, now), {}, set())
    try:
        response = rpc.send_commit(request)
    except core_exceptions.AlreadyExists:
        return None
    plan.to_fold = _keys_to_fold(request, response)
    _in_batch_outcomes(drafts, plan, code)
    return _finish(drafts, plan, code)


def _finish(drafts, plan, code) -> list[Outcome]:
    for index in plan.creates:
        plan.outcomes.setdefault(index, Outcome(_public_id(plan.key_ids[index], code),
                                                "created"))
    return [plan.outcomes[i] for i in range(len(drafts))]


def _careful_attempt(drafts, plan, code, now) -> list[Outcome] | None:
    plan.outcomes.clear()
    with rpc.transaction() as transaction:
        event_keys = [entities.key("meter-event", plan.key_ids[i]) for i in plan.creates]
        merge_meters = {d.meter_key_id for d in drafts if _needs_merge(d, len(drafts))}
        stored = rpc.lookup(event_keys + _merged_rollup_keys(drafts, plan.creates, merge_meters),
                            transaction)
        if _redraw_collisions(drafts, plan, event_keys, stored):
            rpc.rollback(transaction)
            return None
        _resolve_existing(drafts, plan, event_keys, stored, code)
        creates = [i for i in plan.creates if i not in plan.outcomes]
        _in_batch_outcomes(drafts, plan, code, stored)
        request = rpc.new_commit(transaction)
        _add_events(request.mutations, drafts, plan, creates, code, now)
        _add_rollups(request.mutations, _cells(drafts, plan, creates, now), stored,
                     merge_meters)
        response = rpc.send_commit(request)
    plan.creates = creates
    plan.to_fold = _keys_to_fold(request, response)
    return _finish(drafts, plan, code)


def _merged_rollup_keys(drafts, indexes, merge_meters) -> list:
    """Keys of the rollups these drafts change that must be read and merged by hand."""
    wanted = {(drafts[i].meter_key_id, rollups.series_of(drafts[i].user_id, drafts[i].dimensions),
               rollups.day_and_slot(drafts[i].timestamp)[0])
              for i in indexes if drafts[i].meter_key_id in merge_meters}
    return [rollups.key(meter_key_id, series, day) for meter_key_id, series, day in wanted]


def _redraw_collisions(drafts, plan, event_keys, stored) -> bool:
    """Give random-id drafts whose id is taken a new id; whether any was."""
    collided = False
    for index, key_pb in zip(plan.creates, event_keys):
        if drafts[index].key_id is None and key_pb.SerializeToString() in stored:
            plan.key_ids[index] = _random_id()
            collided = True
    return collided


def _resolve_existing(drafts, plan, event_keys, stored, code) -> None:
    for index, key_pb in zip(plan.creates, event_keys):
        found = stored.get(key_pb.SerializeToString())
        if found is not None:
            status = "duplicate" if drafts[index].same_payload(found) else "conflict"
            plan.outcomes[index] = Outcome(_public_id(plan.key_ids[index], code), status)


def _careful_path(drafts, plan, code, now) -> list[Outcome]:
    def attempt() -> list[Outcome]:
        while True:  # None: a drawn random id was taken and redrawn (vanishingly rare)
            result = _careful_attempt(drafts, plan, code, now)
            if result is not None:
                return result

    return rpc.retry_aborted(attempt, "the batch")


def store(drafts: list[Draft], now: datetime, namespace_code: int) -> list[Outcome]:
    """Store a batch exactly once; one outcome per draft, in order."""
    plan = _plan(drafts)
    outcomes = None
    if not any(_needs_merge(d, len(drafts)) for d in drafts):
        try:
            outcomes = _fast_path(drafts, plan, namespace_code, now)
        except core_exceptions.Aborted:
            outcomes = None
        if outcomes is None:
            plan = _plan(drafts)
    if outcomes is None:
        outcomes = _careful_path(drafts, plan, namespace_code, now)
    if plan.to_fold:
        _fold(plan.to_fold)
    return outcomes
