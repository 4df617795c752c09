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

A batch is one `_Batch` object: its drafts, the keys of the current attempt and the
outcomes decided so far, with the two paths as its methods. Whether a repeated key is
a `duplicate` or a `conflict` has one rule, `Draft.repeats`, whether the earlier copy is
stored or earlier in the same batch.

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
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from google.api_core import exceptions as core_exceptions

from app.core.bounds import MAX_ID
from app.core.cells import Cell, Series, rank, series_of
from app.core.slots import day_and_slot
from app.errors import Unavailable
from app.models import ids
from app.services import capabilities, compact
from app.services.alerts import feed as alert_feed
from app.services.limits import counting as limit_counting  # issue 16, limits
from app.services.limits import index as limit_index  # issue 16, limits
from app.services.webhooks import outbox
from app.storage import entities, first_events, rollups, rpc, shards
from app.storage.entities import EntityPb, KeyPb

log = logging.getLogger(__name__)


class _Payload(Protocol):
    """What decides whether two copies of one key are the same event: a Draft or a
    StoredEvent (`entities.decode_event`)."""

    meter_id: str
    user_id: str
    value: int
    timestamp: datetime
    dimensions: dict[str, str]


@dataclass
class Draft:
    """One validated event, ready to be stored."""

    meter: Any  # models.Meter
    user_id: str
    value: int
    timestamp: datetime
    timestamp_given: bool
    idempotency: str
    dimensions: dict[str, str]
    metadata: dict[str, Any]
    key_id: int | None = None  # set for idempotent events; random ones are drawn per try
    meter_key_id: int = 0  # the meter's key id (NDB's key.id() copies the path each call)

    def __post_init__(self) -> None:
        if not self.meter_key_id:
            self.meter_key_id = self.meter.key.id()

    @property
    def meter_id(self) -> str:
        return self.meter.id_  # type: ignore[no-any-return]  # models.Meter: untyped ndb

    def repeats(self, earlier: _Payload) -> bool:
        """The one rule of duplicate (True) against conflict (False), for an event whose
        key an `earlier` copy holds, stored or earlier in this batch: the same meter,
        user, value and dimensions, and the same timestamp when this one gives one (a
        retry without a timestamp is stamped anew)."""
        return (
            earlier.meter_id == self.meter.id_
            and earlier.user_id == self.user_id
            and earlier.value == self.value
            and earlier.dimensions == self.dimensions
            and (not self.timestamp_given or earlier.timestamp == self.timestamp)
        )


@dataclass(frozen=True)
class Outcome:
    id: str
    status: str  # created | duplicate | conflict


def _random_id() -> int:
    return random.SystemRandom().randrange(1, MAX_ID)


@functools.lru_cache(maxsize=8192)  # each created event's id is needed twice; hashids is slow
def _public_id(key_id: int, namespace_code: int) -> str:
    return ids.encode_numbers(
        ids.KIND_CODES["meter-event"], key_id, ids.KIND_CODES["synckey"], 1, namespace_code
    )


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
        and rollups.adds_values(draft.meter.aggregation_type)
    )


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


def _may_need_folding(response: Any) -> bool:
    """False only when no transform result of the commit is 2**62 or more from zero."""
    data = response.SerializeToString()
    start = data.translate(_CONTINUED).find(_EIGHT_CONTINUED)
    return start >= 0 and _LARGE_VARINT.search(data, start) is not None


def _keys_to_fold(request: Any, response: Any) -> list[KeyPb]:
    """Keys of the rollups whose sum accumulators answered at least `rollups.FOLD_AT` away
    from zero (or at a bound, where they may have clamped): they are folded now."""
    if not _may_need_folding(response):
        return []
    keys, high, low = [], rollups.FOLD_AT, -rollups.FOLD_AT
    for index, result in enumerate(response.mutation_results):
        for position, value in enumerate(result.transform_results):  # events have none
            number = value.integer_value
            if (number >= high or number < low) and request.mutations[index].property_transforms[
                position
            ].property[0] in "SM":  # not the minimum or maximum of values
                keys.append(request.mutations[index].upsert.key)
                break
    return keys


_folding: set[bytes] = set()  # rollups this process is folding now
_folding_lock = threading.Lock()


def _fold(keys: list[KeyPb]) -> None:
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
            log.warning(
                "could not fold a rollup near int64's bounds yet (the cron will): %s", error
            )
        finally:
            with _folding_lock:
                _folding.discard(ident)


class _FoldFirst(Exception):
    """A rollup to merge by hand has a slot whose sum deltas may have clamped: fold every
    shard of it (`compact.compact_one`) before the batch is merged into shard 0."""

    def __init__(self, key: KeyPb):
        super().__init__("fold the rollup first")
        self.key = key


class _Batch:
    """One batch being stored exactly once: its drafts, the keys of the current attempt,
    the outcomes decided so far, and the two ways to commit it (`_fast`, `_careful`)."""

    def __init__(
        self,
        drafts: list[Draft],
        now: datetime,
        namespace_code: int,
        picker: shards.Picker,
        alert_feeds: bool = True,
    ):
        self.drafts, self.now, self.code, self.picker = drafts, now, namespace_code, picker
        #: Meters whose rollups must be read and merged rather than incremented.
        self.merge_meters = {d.meter_key_id for d in drafts if _needs_merge(d, len(drafts))}
        self.to_fold: list[KeyPb] = []  # rollup keys whose sums near int64's bounds
        #: Meters with active alert rules: the commit also writes their `alert-feed`.
        #: Empty for a backfill (issue 17): its periods have ended, no alert is due for them.
        self.alert_meters = (
            alert_feed.meters_with_rules({d.meter_key_id for d in drafts}) if alert_feeds else set()
        )
        self.alert_feeds = alert_feeds
        #: issue 16: meters with usage limits: the commit also adds to their counters.
        self.limit_specs = limit_index.specs_for({d.meter_key_id for d in drafts})
        self._draw_keys()

    def _draw_keys(self) -> None:
        """The keys of a new attempt (random ids drawn afresh) and which drafts create:
        the first of each key; the others repeat it."""
        self.key_ids = [d.key_id or _random_id() for d in self.drafts]
        self.outcomes: dict[int, Outcome] = {}
        first_of: dict[int, int] = {}
        for index, key_id in enumerate(self.key_ids):
            first_of.setdefault(key_id, index)
        self.first_of = first_of
        self.creates = sorted(first_of.values())

    def store(self) -> list[Outcome]:
        """One outcome per draft, in order: the fast path when it may, else (or when an
        event exists already) the careful path, retried on contention."""
        meters = {d.meter_key_id for d in self.drafts}
        if self.alert_feeds:  # issue 14: before the commit, when a meter's first events
            first_events.note_written(meters, self.now)
        else:  # a backfill writes no feed: seeding must read the rollups, for good
            first_events.note_unfed(meters)
        outcomes = None
        if not self.merge_meters:
            try:
                outcomes = self._fast()
            except core_exceptions.Aborted:
                outcomes = None
            if outcomes is None:
                self._draw_keys()
        for _ in range(3):
            if outcomes is not None:
                break
            try:
                outcomes = rpc.retry_aborted(self._careful, "the batch")
            except _FoldFirst as unsettled:
                compact.compact_one(unsettled.key)
                self._draw_keys()
        if outcomes is None:
            raise Unavailable("a rollup near int64's bounds is being folded: retry the batch")
        if self.to_fold:
            _fold(self.to_fold)
        if self.alert_meters and self.creates:
            outbox.wake()  # the delivery loop evaluates the new feed now, not at its next tick
        return outcomes

    # -- the two paths -------------------------------------------------------------

    def _fast(self) -> list[Outcome] | None:
        """One blind commit; None when an event of the batch exists already."""
        request = rpc.new_commit()
        self._add_events(request.mutations, self.creates)
        self._add_rollups(request.mutations, self.creates, {})
        try:
            response = rpc.send_commit(request)
        except core_exceptions.AlreadyExists:
            return None
        self.to_fold = _keys_to_fold(request, response)
        self._judge_repeats()
        return self._finish()

    def _careful(self) -> list[Outcome]:
        while True:  # None: a drawn random id was taken and redrawn (vanishingly rare)
            result = self._careful_attempt()
            if result is not None:
                return result

    def _careful_attempt(self) -> list[Outcome] | None:
        """Read the batch's keys (and the rollups to merge), judge what exists, commit
        the rest; None when a random id was taken (redrawn, try again)."""
        self.outcomes.clear()
        with rpc.transaction() as transaction:
            event_keys = [entities.key("meter-event", self.key_ids[i]) for i in self.creates]
            stored = rpc.lookup(event_keys + self._merged_rollup_keys(), transaction)
            if self._redraw_collisions(event_keys, stored):
                rpc.rollback(transaction)
                return None
            self._judge_existing(event_keys, stored)
            creates = [i for i in self.creates if i not in self.outcomes]
            self._judge_repeats(stored)
            request = rpc.new_commit(transaction)
            self._add_events(request.mutations, creates)
            self._add_rollups(request.mutations, creates, stored)
            response = rpc.send_commit(request)
        self.creates = creates
        self.to_fold = _keys_to_fold(request, response)
        return self._finish()

    # -- duplicate or conflict -----------------------------------------------------

    def _judge(self, index: int, earlier: _Payload) -> None:
        status = "duplicate" if self.drafts[index].repeats(earlier) else "conflict"
        self.outcomes[index] = Outcome(_public_id(self.key_ids[index], self.code), status)

    def _judge_existing(self, event_keys: list[KeyPb], stored: dict[bytes, EntityPb]) -> None:
        """Outcomes of the drafts whose key was stored before this batch."""
        for index, key_pb in zip(self.creates, event_keys):
            found = stored.get(key_pb.SerializeToString())
            if found is not None:
                # mypy: a StoredEvent has every field _Payload reads (read-only)
                self._judge(index, entities.decode_event(found))  # type: ignore[arg-type]

    def _judge_repeats(self, stored: dict[bytes, EntityPb] | None = None) -> None:
        """Outcomes of drafts repeating a key that an earlier draft of the batch holds,
        judged against the stored event when the key was stored before this batch
        (`stored`: serialized key -> entity), else against the batch's first copy."""
        for index, key_id in enumerate(self.key_ids):
            first = self.first_of[key_id]
            if index == first or index in self.outcomes:
                continue
            found = (stored or {}).get(entities.key("meter-event", key_id).SerializeToString())
            self._judge(
                index,
                # mypy: a StoredEvent has every field _Payload reads (read-only)
                entities.decode_event(found) if found is not None else self.drafts[first],  # type: ignore[arg-type]
            )

    def _finish(self) -> list[Outcome]:
        for index in self.creates:
            self.outcomes.setdefault(
                index, Outcome(_public_id(self.key_ids[index], self.code), "created")
            )
        return [self.outcomes[i] for i in range(len(self.drafts))]

    def _redraw_collisions(self, event_keys: list[KeyPb], stored: dict[bytes, EntityPb]) -> bool:
        """Give random-id drafts whose id is taken a new id; whether any was."""
        collided = False
        for index, key_pb in zip(self.creates, event_keys):
            if self.drafts[index].key_id is None and key_pb.SerializeToString() in stored:
                self.key_ids[index] = _random_id()
                collided = True
        if collided:
            self.first_of = {}
            for index, key_id in enumerate(self.key_ids):
                self.first_of.setdefault(key_id, index)
        return collided

    # -- what a commit holds -------------------------------------------------------

    def _add_events(self, into: Any, indexes: list[int]) -> None:
        """Insert mutations of the drafts at `indexes`, built in place in `into`."""
        template = entities.event_template(self.now)
        for index in indexes:
            draft = self.drafts[index]
            key_id = self.key_ids[index]
            entities.fill_event(
                into.add().insert,
                template,
                key_id=key_id,
                public_id=_public_id(key_id, self.code),
                meter_id=draft.meter.id_,
                user_id=draft.user_id,
                value=draft.value,
                timestamp=draft.timestamp,
                idempotency=draft.idempotency,
                dimensions=draft.dimensions,
                metadata=draft.metadata,
            )

    def _cells(
        self, indexes: list[int]
    ) -> tuple[dict[tuple[Any, ...], dict[int, Cell]], dict[tuple[Any, ...], dict[int, int]]]:
        """(meter, series, day) -> slot -> Cell of the drafts at `indexes`, and the same
        keys -> slot -> sum of the negative values, where there are any (see
        `rollups.increments`)."""
        # (meter key id, id, aggregation, series, day)
        grouped: dict[tuple[Any, ...], dict[int, Cell]] = {}
        negatives: dict[tuple[Any, ...], dict[int, int]] = {}
        now, drafts, key_ids = self.now, self.drafts, self.key_ids
        for index in indexes:
            draft = drafts[index]
            series = series_of(draft.user_id, draft.dimensions)
            day, slot = day_and_slot(draft.timestamp)
            group = (draft.meter_key_id, draft.meter.id_, draft.meter.aggregation_type, series, day)
            cells = grouped.setdefault(group, {})
            cell = cells.setdefault(slot, Cell())
            cell.add_event(draft.value, rank(draft.timestamp, now, key_ids[index]))
            if draft.value < 0:
                below = negatives.setdefault(group, {})
                below[slot] = below.get(slot, 0) + draft.value
        self._add_org_wide(grouped, negatives)
        return grouped, negatives

    @staticmethod
    def _add_org_wide(
        grouped: dict[tuple[Any, ...], dict[int, Cell]],
        negatives: dict[tuple[Any, ...], dict[int, int]],
    ) -> None:
        """Add to `grouped` (and `negatives`) the org-wide groups: each user group's cells
        merged, slot by slot, into the group of its dimension values without the user.
        Merging the users' cells rather than adding every event twice: one merge per
        (user, slot) of the batch, and one org-wide series made per dimension values."""
        org_of: dict[tuple[tuple[str, str], ...], Series] = {}
        for group, cells in list(grouped.items()):
            meter_key_id, meter_id, aggregation, series, day = group
            org = org_of.get(series.dimensions)
            if org is None:
                org = org_of[series.dimensions] = shards.org_series(series)
            org_group = (meter_key_id, meter_id, aggregation, org, day)
            target = grouped.get(org_group)
            if target is None:
                target = grouped[org_group] = {}
            for slot, cell in cells.items():
                into = target.get(slot)
                if into is None:
                    target[slot] = cell.copy()
                else:
                    into.merge(cell)
            below = negatives.get(group)
            if below:
                org_below = negatives.setdefault(org_group, {})
                for slot, value in below.items():
                    org_below[slot] = org_below.get(slot, 0) + value

    def _add_rollups(self, into: Any, indexes: list[int], stored: dict[bytes, EntityPb]) -> None:
        """Increments where the server can add; merged replacements where we read first."""
        grouped, negatives = self._cells(indexes)
        if self.alert_meters:
            self._add_alert_feeds(into, grouped)
        if self.limit_specs:  # issue 16, limits
            into.extend(
                limit_counting.mutations(
                    self.drafts, indexes, self.limit_specs, self.merge_meters, stored
                )
            )
        moment = self.picker.clock()  # one reading of the clock for the batch's picks
        for group, cells in grouped.items():
            meter_key_id, meter_id, aggregation, series, day = group
            if meter_key_id not in self.merge_meters:
                rollups.increments(
                    meter_key_id,
                    meter_id,
                    series,
                    day,
                    cells,
                    aggregation,
                    mutation=into.add(),
                    negatives=negatives.get(group),
                    shard=self.picker.pick(meter_key_id, series, day, moment),
                )
                continue
            key_pb = rollups.key(meter_key_id, series, day)
            found = stored.get(key_pb.SerializeToString())
            merged: dict[int, Cell] = {}
            if found is not None:
                rollup = rollups.decode(found)
                if rollup.unknown:  # only a fold of every shard can take those from raw
                    raise _FoldFirst(key_pb)
                merged = dict(rollup.cells)
            for slot, cell in cells.items():
                merged.setdefault(slot, Cell()).merge(cell)
            into.append(rollups.replacement(key_pb, meter_id, series, day, merged))

    def _add_alert_feeds(self, into: Any, grouped: dict[tuple[Any, ...], dict[int, Cell]]) -> None:
        """One `alert-feed` insert per meter with alert rules that the batch creates events
        for, from the cells just grouped for the rollups (`app.services.alerts.feed`)."""
        meter_ids = {d.meter_key_id: d.meter_id for d in self.drafts}
        for meter_key_id in sorted(self.alert_meters):
            contributions = alert_feed.contributions_of(grouped, meter_key_id)
            if contributions:
                into.append(alert_feed.mutation(meter_ids[meter_key_id], contributions))

    def _merged_rollup_keys(self) -> list[KeyPb]:
        """Keys of the rollups the batch changes that must be read and merged by hand."""
        wanted = set()
        for draft in (self.drafts[i] for i in self.creates):
            if draft.meter_key_id in self.merge_meters:
                series = series_of(draft.user_id, draft.dimensions)
                day = day_and_slot(draft.timestamp)[0]
                wanted.add((draft.meter_key_id, series, day))
                wanted.add((draft.meter_key_id, shards.org_series(series), day))
        keys = [rollups.key(meter_key_id, series, day) for meter_key_id, series, day in wanted]
        if self.limit_specs:  # issue 16, limits: counters replaced by hand
            keys += limit_counting.keys_to_read(
                self.drafts, self.creates, self.limit_specs, self.merge_meters
            )
        return keys


_pickers: dict[int, shards.Picker] = {}  # shard count -> this process's picker


def picker(shard_count: int) -> shards.Picker:
    """This process's shard picker for `shard_count` shards (it remembers hot rollups)."""
    found = _pickers.get(shard_count)
    if found is None:
        found = _pickers.setdefault(shard_count, shards.Picker(shard_count))
    return found


def store(
    drafts: list[Draft],
    now: datetime,
    namespace_code: int,
    shard_count: int = shards.DEFAULT_SHARDS,
    alert_feeds: bool = True,
) -> list[Outcome]:
    """Store a batch exactly once; one outcome per draft, in order. A rollup increment goes
    to one of `shard_count` shards (`app.storage.shards`). `alert_feeds=False` (a backfill
    of ended periods, `app.services.imports`) writes no alert feed for the batch."""
    return _Batch(drafts, now, namespace_code, picker(shard_count), alert_feeds).store()
