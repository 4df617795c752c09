"""Which shard of a rollup a batch writes: hot rollups spread over several entities.

Cloud Datastore sustains about one write per second on one entity. Two kinds of rollup
would take more than that:

- the org-wide rollup of a (meter, dimension values, UTC day), which every batch of the
  meter writes, whoever its users are (`org_series`: the series whose user is
  `ORG_USER`, the empty string, which no event's userId can be);
- a busy user's rollup of the day, which every batch of that user writes.

So a rollup is up to `shards` entities (`rollups.key(..., shard)`; shard 0 keeps the
key name rollups always had). Every aggregation's cells merge exactly (count and sum
add, min and max compare, `last` keeps the larger rank), so a reader adds the shards
up, and a summary's query on (MeterId, UserId, Day) finds all of them without knowing
how many there are: the number can change at any time without migrating anything.

Picking (`Picker.pick`), per process:
- an org-wide rollup goes to a random shard of `shards`: with I instances writing a
  meter at a total of R batches per second, each shard takes about R / shards writes
  per second, so `shards` should be at least the meter's peak batches per second;
- a user's rollup goes to the process's home shard (drawn once per process) unless this
  process wrote it less than `hot_seconds` ago, and then to a random shard: a user sending
  a batch a second or less costs one entity per day and instance to read, a busy one
  spreads. A home shard per process rather than shard 0 for all: with I instances each
  writing one user just below the hot rate, shard 0 would take about I writes per
  second; home shards split them N ways (`benchmarks/simulate_writes.py`).
Compaction folds the shards of a (series, day) back into shard 0 and deletes the
others (`compact.merge_shards`), so a day that is no longer written reads as one
entity per series.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from app.core.cells import Series

#: The user of org-wide series. Event userIds are at least one character long.
ORG_USER = ""
#: Shards of one rollup by default (METERING_ROLLUP_SHARDS), and at most.
DEFAULT_SHARDS = 8
MAX_SHARDS = 64
#: A user's rollup written again by this process within this many seconds is hot.
HOT_SECONDS = 1.0
_REMEMBERED = 65536  # user rollups whose last write time a process remembers


def org_series(series: Series) -> Series:
    """The org-wide series of a series: its dimension values, no user."""
    return Series(ORG_USER, series.dimensions)


def is_org(series: Series) -> bool:
    return series.user_id == ORG_USER


class Picker:
    """Chooses the shard each rollup write goes to (see the module's docstring)."""

    def __init__(
        self,
        shards: int = DEFAULT_SHARDS,
        hot_seconds: float = HOT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        draw: Callable[[int], int] | None = None,
    ):
        if not 1 <= shards <= MAX_SHARDS:
            raise ValueError(f"a rollup has 1 to {MAX_SHARDS} shards")
        self.shards, self.hot_seconds, self.clock = shards, hot_seconds, clock
        self.draw = draw or random.Random().randrange  # any shard is exact: no need for
        self.home = self.draw(shards) if shards > 1 else 0  # a cryptographic draw
        #: (meter, series, day) -> when this process last wrote that user rollup. A plain
        #: dict without a lock: a race between threads only changes which shard a write
        #: takes, and every shard is exact. Emptied when full: forgetting makes writes cold.
        self._last_write: dict[tuple[int, Series, int], float] = {}

    def pick(self, meter_key_id: int, series: Series, day: int, now: float | None = None) -> int:
        """The shard this write of the rollup of (meter, series, day) goes to; `now`, a
        reading of the picker's clock, when the caller has one for several picks."""
        if self.shards == 1:
            return 0
        if series.user_id == ORG_USER:
            return self.draw(self.shards)
        if now is None:
            now = self.clock()
        key = (meter_key_id, series, day)
        remembered = self._last_write
        last = remembered.get(key)
        remembered[key] = now
        if len(remembered) > _REMEMBERED:
            remembered.clear()
        if last is not None and now - last < self.hot_seconds:
            return self.draw(self.shards)
        return self.home
