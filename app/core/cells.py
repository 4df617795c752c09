"""Cells and series: the mergeable statistics every summary is made of.

A *cell* holds the mergeable statistics (count, sum, min, max, latest value) of some
events; a *series* is one user plus one combination of dimension values. Merging is
exact (Python ints), associative and commutative, so cells can be added in any order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from app.core.slots import micros

USER_ID = "userId"

#: The order of events for `last`: (timestamp µs, recorded µs, key id); larger is later.
Rank = tuple[int, ...]


@dataclass(slots=True)
class Cell:
    """Mergeable statistics of some events; merge is exact, associative and commutative.

    For `last`, some events may be known only by their timestamp (rollup deltas written by
    blind transforms): `pending_ts` is the latest such timestamp (µs) and `pending_at` the
    series holding events at that instant. `settle_last` reads those to finish the cell.
    """

    count: int = 0
    sum: int = 0
    min: int | None = None
    max: int | None = None
    last_rank: Rank | None = None  # (timestamp_micros, created_micros, key_id): larger = later
    last_value: int | None = None
    pending_ts: int | None = None
    pending_at: set[Series] | tuple[Series, ...] = ()

    def copy(self) -> Cell:
        """A cell of the same events that merging into leaves this one as it is (its
        pending `last` events, read by `settle_last`, are not carried)."""
        return Cell(self.count, self.sum, self.min, self.max, self.last_rank, self.last_value)

    def add_event(self, value: int, rank: Rank) -> None:
        self.merge(Cell(1, value, value, value, rank, value))

    def merge(self, other: Cell) -> None:
        self.count += other.count
        self.sum += other.sum
        # Inline min/max (this runs once per cell of a summary): None is "no value yet".
        if other.min is not None and (self.min is None or other.min < self.min):
            self.min = other.min
        if other.max is not None and (self.max is None or other.max > self.max):
            self.max = other.max
        if other.last_rank is not None:
            self.merge_last(other.last_rank, other.last_value)
        if other.pending_ts is not None:
            if self.pending_ts is None or other.pending_ts > self.pending_ts:
                self.pending_ts, self.pending_at = other.pending_ts, set(other.pending_at)
            elif other.pending_ts == self.pending_ts:
                if not isinstance(self.pending_at, set):
                    self.pending_at = set(self.pending_at)
                self.pending_at.update(other.pending_at)

    def merge_packed(self, fields: list[Any]) -> None:
        """`merge` of a rollup slot as `Slots_` packs it (see `rollups.packed_cell`),
        without making a Cell of it: a summary does this once per slot it reads."""
        self.count += fields[0]
        self.sum += fields[1]
        low, high = fields[2], fields[3]  # None where the meter keeps no min or max
        if low is not None and (self.min is None or low < self.min):
            self.min = low
        if high is not None and (self.max is None or high > self.max):
            self.max = high
        if len(fields) > 4:
            self.merge_last(tuple(fields[4]), fields[5])

    def merge_last(self, rank: Rank, value: int | None) -> None:
        """Keep the later of the cell's latest event and this one.

        Equal ranks (one event seen twice) keep the larger value, so order never matters.
        """
        if self.last_rank is None or (rank, value) > (self.last_rank, self.last_value):
            self.last_rank, self.last_value = rank, value


def settle_last(cell: Cell, latest: Callable[[frozenset[Series], int], Cell | None]) -> None:
    """Resolve a cell's pending `last` events: `latest(series, ts)` gives the cell of the
    live events of those series at exactly `ts` (µs), or None. A known event later than
    every pending one needs no read."""
    ts, where = cell.pending_ts, cell.pending_at
    if ts is None:
        return
    cell.pending_ts, cell.pending_at = None, ()
    if cell.last_rank is not None and cell.last_rank[0] > ts:
        return
    found = latest(frozenset(where), ts)
    if found is not None and found.last_rank is not None:
        cell.merge_last(found.last_rank, found.last_value)


class Series(NamedTuple):
    """One user and one combination of dimension values. A NamedTuple: ingestion hashes
    a series several times per event (its groups, its shard, its cached encodings), and
    a tuple's hash is computed in C where a frozen dataclass's runs Python code."""

    user_id: str
    dimensions: tuple[tuple[str, str], ...] = ()  # sorted (name, value) pairs

    def value_of(self, name: str) -> str:
        """userId or a dimension's value; a missing dimension reads as "" (one rule for all).

        userId cannot be a dimension name (the meter schema refuses it), so no ambiguity.
        """
        if name == USER_ID:
            return self.user_id
        return dict(self.dimensions).get(name, "")


def series_of(user_id: str, dimensions: dict[str, str]) -> Series:
    """The series of a user and a dimensions mapping."""
    return Series(user_id, tuple(sorted(dimensions.items())))


def rank(timestamp: datetime, created: datetime, key_id: int) -> Rank:
    """The order of events for `last`: latest timestamp, then recorded last, then key."""
    return (micros(timestamp), micros(created), key_id)
