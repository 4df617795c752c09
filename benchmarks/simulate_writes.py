"""Where Cloud Datastore's write limits bite: one org's ingestion replayed through the real
key and shard functions, with no Datastore at all.

The emulators enforce neither of Cloud Datastore's two write limits, so no test on them
shows where production would slow down:

- about one sustained write per second on one entity (commits to it queue beyond that);
- about 500 writes per second on a narrow range of an index whose values increase
  monotonically (new entries all land at its end, which splitting cannot spread).

This script generates realistic traffic for one org (Zipf-distributed users and meters,
optional dimensions, batches of 100 events, spread over many App Engine instances) and
derives every entity and index entry each batch would write exactly as the service
does:

- event keys: `app.services.events.idempotent_id` for events with an idempotency key,
  a random 63-bit id otherwise (as `app.services.ingest`);
- rollups: per batch, one write per distinct (user series, UTC day) and one per distinct
  (org-wide series, UTC day) of each meter (`app.storage.shards.org_series`), each to
  the shard a per-instance `app.storage.shards.Picker` picks (run on a simulated clock:
  a rollup that instance wrote within `HOT_SECONDS` to a random shard, any other to the
  instance's home shard, drawn once per instance), named by `app.storage.rollups.key_name`;
  days by `app.core.slots.day_and_slot`.

It then counts, per second of simulated time:

- writes on each entity (user rollups, org-wide rollups, events), and reports the
  hottest one: its peak writes in one second and its mean rate over the run; for user
  rollups also counting only cold writes (those an instance sends to its home shard), the
  part hot spreading does not divide by N;
- index entries written into each *narrow range* of a monotonically increasing value.
  A range is the entries sharing an index's equality prefix and one second of its time
  value: for the built-in single-property indexes of `Timestamp` (the event's time) and
  `CreatedAt` (the server's time; `UpdatedAt` takes the same value), the prefix is the
  org's namespace and kind, so every event of the org lands in the same range; for each
  composite index of `meter-event` in index.yaml it is (MeterId[, UserId]) within the org's
  `synckey/1` ancestor. New entries of such an index all go to its newest second, so the
  entries per second of the busiest range is the write rate that range takes.
  Rollup indexes (`MeterId, Day`, ...) change only when a rollup is created; their
  ranges are (MeterId[, UserId], Day), counted when the run starts at a UTC midnight
  (`--start 2026-12-07T00:00:00`), where every active series creates a new rollup.

Both per scenario (events per second) and per shard count N (`--shards 1,8,32,64`; N=1
is the unsharded write path; the service allows at most `MAX_SHARDS` (64), and a larger N
runs the same Picker widened, as a what-if). Prints one table of entities and one of index ranges.

    .venv/bin/python benchmarks/simulate_writes.py                  # 1k, 10k, 100k events/s
    .venv/bin/python benchmarks/simulate_writes.py --rates 10000,100000 --shards 128,1024
    .venv/bin/python benchmarks/simulate_writes.py --batch-shape user   # one user per batch
    .venv/bin/python benchmarks/simulate_writes.py --help

Each run simulates `--seconds` (default 60) but at most `--max-events` events (default
200,000), so the 100k events/s scenario covers 2 s after a 1-second warm-up that fills
the instances' pickers; peaks per second are stationary, so a few seconds show them.
Standard library and PyYAML (a test extra of the venv) only; single-threaded: the default
run takes about 90 s of CPU on one core (20 to 40 µs per simulated event and shard count).
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from app.core.bounds import MAX_ID  # noqa: E402
from app.core.cells import Series, series_of  # noqa: E402
from app.core.slots import day_and_slot  # noqa: E402
from app.services.events import idempotent_id  # noqa: E402
from app.storage.rollups import key_name, shard_of  # noqa: E402
from app.storage.shards import HOT_SECONDS, MAX_SHARDS, Picker, org_series  # noqa: E402

#: Service CPU per stored event in 100-event batches (docs/benchmarks.md, 2x8 median).
CPU_PER_EVENT_US = 186.0
#: The benchmark machine's clock, against which that CPU was measured (GHz).
BENCH_GHZ = 2.6
#: App Engine's F2 class: CPU limit 1.2 GHz (app.yaml's instance_class).
F2_GHZ = 1.2
#: app.yaml's automatic_scaling.target_cpu_utilization.
TARGET_CPU = 0.65
#: Events per second one F2 instance serves at the target utilization (~1,600).
EVENTS_PER_INSTANCE = TARGET_CPU * 1e6 / (CPU_PER_EVENT_US * BENCH_GHZ / F2_GHZ)

#: Built-in indexes of monotonically increasing event properties: name -> the event field.
BUILT_IN_RANGES = {
    "Timestamp (built-in)": "timestamp",
    "CreatedAt, UpdatedAt (built-in, each)": "arrival",
}


# -- the traffic ------------------------------------------------------------------


@dataclass(frozen=True)
class Traffic:
    """One org's traffic: who sends what, how fast, through how many instances."""

    rate: float  # events per second
    seconds: float = 60.0
    max_events: int = 200_000
    warmup: float = 1.0  # seconds simulated before counting (pickers fill up)
    users: int = 1_000_000
    user_skew: float = 1.1  # Zipf exponent of users
    meters: int = 20
    meter_skew: float = 1.1
    dimensions: tuple[int, ...] = (5, 20)  # cardinality of each dimension of a meter with some
    dimension_share: float = 0.5  # share of meters that declare `dimensions`
    batch: int = 100
    batch_shape: str = "mixed"  # mixed: each event's user drawn alone; user: one per batch
    instances: int = 0  # 0: from the capacity model (EVENTS_PER_INSTANCE)
    idempotent_share: float = 0.5  # events sent with an idempotency key
    timestamp_lag: float = 2.0  # event timestamps trail arrival by up to this (s)
    start: datetime = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    seed: int = 1

    @property
    def simulated(self) -> float:
        """Seconds simulated after the warm-up: `seconds`, or fewer to keep `max_events`."""
        return max(1.0, min(self.seconds, self.max_events / self.rate))

    @property
    def instance_count(self) -> int:
        return self.instances or max(1, math.ceil(self.rate / EVENTS_PER_INSTANCE))


class _Zipf:
    """Ranks 0..n-1 drawn with probability proportional to 1 / (rank + 1) ** skew."""

    def __init__(self, n: int, skew: float):
        self.cum = list(itertools.accumulate((k + 1) ** -skew for k in range(n)))
        self.population = range(n)

    def draw(self, rng: random.Random, k: int) -> list[int]:
        return rng.choices(self.population, cum_weights=self.cum, k=k)

    def share(self, rank: int) -> float:
        return (self.cum[rank] - (self.cum[rank - 1] if rank else 0.0)) / self.cum[-1]


@dataclass
class Event:
    meter: int
    user: str
    dimensions: dict[str, str]
    timestamp: datetime
    arrival: float  # seconds since the start
    key_id: int


@dataclass
class Batch:
    arrival: float
    instance: int
    events: list[Event]


def generate(traffic: Traffic):  # -> Iterator[Batch]
    """The org's batches in arrival order (warm-up included), from `traffic.seed` alone,
    so every shard count sees the very same traffic."""
    rng = random.Random(traffic.seed)
    users, meters = (
        _Zipf(traffic.users, traffic.user_skew),
        _Zipf(traffic.meters, traffic.meter_skew),
    )
    values = [_Zipf(n, traffic.user_skew) for n in traffic.dimensions]
    dimensional = {m for m in range(traffic.meters) if rng.random() < traffic.dimension_share}
    total = traffic.warmup + traffic.simulated
    count = max(1, round(traffic.rate * total / traffic.batch))
    arrivals = sorted(rng.uniform(0.0, total) for _ in range(count))
    for number, arrival in enumerate(arrivals):
        size = traffic.batch
        if traffic.batch_shape == "user":
            who = [users.draw(rng, 1)[0]] * size
        else:
            who = users.draw(rng, size)
        events = []
        for index, (user, meter) in enumerate(zip(who, meters.draw(rng, size))):
            dimensions = {}
            if meter in dimensional:
                for d, zipf in enumerate(values):
                    dimensions[f"d{d}"] = f"v{zipf.draw(rng, 1)[0]}"
            lag = rng.uniform(0.0, traffic.timestamp_lag)
            timestamp = traffic.start + timedelta(seconds=arrival - lag)
            if rng.random() < traffic.idempotent_share:
                key_id = idempotent_id(f"meter{meter}", f"{number}-{index}-{rng.getrandbits(32)}")
            else:
                key_id = rng.randrange(1, MAX_ID)
            events.append(Event(meter, f"user{user}", dimensions, timestamp, arrival, key_id))
        yield Batch(arrival, rng.randrange(traffic.instance_count), events)


# -- what one batch writes -------------------------------------------------------------


def meter_key_id(meter: int) -> int:
    """A stand-in for the meter's Datastore key id."""
    return 5_000_000_000 + meter


Rollup = tuple[int, Series, int]  # (meter key id, series, UTC day)


def rollup_writes(batch: Batch) -> tuple[list[Rollup], list[Rollup]]:
    """The (meter key id, series, UTC day) of the user rollups and of the org-wide rollups
    one batch increments: one write per distinct one, as `app.services.ingest` commits.
    In a fixed order (not a set's, which varies with the hash seed), so that a run's
    shard draws repeat."""
    users, orgs = set(), set()
    for event in batch.events:
        series = series_of(event.user, event.dimensions)
        day = day_and_slot(event.timestamp)[0]
        meter = meter_key_id(event.meter)
        users.add((meter, series, day))
        orgs.add((meter, org_series(series), day))
    return sorted(users, key=_order), sorted(orgs, key=_order)


def _order(rollup: Rollup) -> tuple[int, str, tuple[tuple[str, str], ...], int]:
    meter, series, day = rollup
    return meter, series.user_id, series.dimensions, day


def event_index_ranges(
    event: Event, composite: list[tuple[str, tuple[str, ...], str]], start: datetime
):
    """(index, range) of each monotonically increasing index entry the event writes; a
    range's last item is its second (counted from `start`, like arrivals)."""
    second = {
        "timestamp": math.floor((event.timestamp - start).total_seconds()),
        "arrival": math.floor(event.arrival),
    }
    for name, field_name in BUILT_IN_RANGES.items():
        yield name, second[field_name]
    values = {"MeterId": event.meter, "UserId": event.user}
    for name, prefix, last in composite:
        bucket = second["timestamp" if last == "Timestamp" else "arrival"]
        yield name, (tuple(values[p] for p in prefix), bucket)


def composite_indexes(index_file: Path = ROOT / "index.yaml", kind: str = "meter-event"):
    """The composite indexes of `kind` whose last property is a time, as (label, equality
    prefix, time property); ascending and descending twins are one range each, listed once."""
    found: dict[tuple[tuple[str, ...], str], list[str]] = {}
    for index in yaml.safe_load(index_file.read_text())["indexes"]:
        if index["kind"] != kind:
            continue
        names = [p["name"] for p in index["properties"]]
        direction = index["properties"][-1].get("direction", "asc")
        if names[-1] in ("Timestamp", "CreatedAt", "Day"):
            found.setdefault((tuple(names[:-1]), names[-1]), []).append(direction)
    return [
        (f"{', '.join(prefix + (last,))} (composite, {' and '.join(sorted(dirs))})", prefix, last)
        for (prefix, last), dirs in found.items()
    ]


# -- counting ----------------------------------------------------------------------------


@dataclass
class PeakCounter:
    """Writes per (thing, second): the largest count in one second and what took it, and
    each thing's total over the run (its mean rate)."""

    limit: int = 1  # the guidance: writes per second
    peak: int = 0
    peak_thing: Any = None
    totals: Counter = field(default_factory=Counter)
    _open: dict[int, Counter] = field(default_factory=lambda: defaultdict(Counter))

    def add(self, thing: Any, second: int, amount: int = 1) -> None:
        self._open[second][thing] += amount

    def close_before(self, second: int) -> None:
        """Fold every second before `second` (nothing more will be added to it)."""
        for done in [s for s in self._open if s < second]:
            counts = self._open.pop(done)
            self.totals.update(counts)
            thing, count = max(counts.items(), key=lambda item: item[1])
            if count > self.peak:
                self.peak, self.peak_thing = count, thing

    def hottest(self, seconds: float) -> tuple[Any, float]:
        """The thing of the largest mean rate over `seconds`, and that rate."""
        if not self.totals:
            return None, 0.0
        thing, total = self.totals.most_common(1)[0]
        return thing, total / seconds

    def over(self, seconds: float) -> int:
        """How many things took more than `limit` writes per second on average."""
        return sum(1 for total in self.totals.values() if total > self.limit * seconds)


@dataclass
class Result:
    traffic: Traffic
    shards: int
    batches: int = 0
    events: int = 0
    user_rollup_writes: int = 0
    org_rollup_writes: int = 0
    user_rollups: PeakCounter = field(default_factory=PeakCounter)
    cold_user_rollups: PeakCounter = field(default_factory=PeakCounter)  # home-shard writes
    org_rollups: PeakCounter = field(default_factory=PeakCounter)
    event_entities: PeakCounter = field(default_factory=PeakCounter)
    ranges: dict[str, PeakCounter] = field(default_factory=dict)
    homes: list[int] = field(default_factory=list)  # each instance's home shard

    @property
    def writes(self) -> int:
        return self.events + self.user_rollup_writes + self.org_rollup_writes


class _Clock:
    """The simulated time the pickers read."""

    now = 0.0

    def __call__(self) -> float:
        return self.now


def simulate(
    traffic: Traffic, shards: int, *, hot_seconds: float = HOT_SECONDS, events: bool = True
) -> Result:
    """Replay `traffic` with rollups of `shards` shards; count what the counted seconds
    (after the warm-up) write. `events=False` skips the event entities and index ranges,
    which do not depend on the shard count (a second shard count of one traffic)."""
    clock = _Clock()
    draw = random.Random(traffic.seed + 7919 * shards)
    pickers = [_picker(shards, hot_seconds, clock, draw) for _ in range(traffic.instance_count)]
    composite = composite_indexes()
    rollup_composite = composite_indexes(kind="meter-rollup")
    result = Result(traffic, shards, homes=[picker.home for picker in pickers])
    for name in list(BUILT_IN_RANGES) + [c[0] for c in composite + rollup_composite]:
        result.ranges[name] = PeakCounter(limit=500)
    # Rollups of a day that begins inside the run are created by it (see the docstring).
    first_new_day = day_and_slot(traffic.start)[0] + (0 if _is_midnight(traffic.start) else 1)
    created: set[str] = set()
    last_user_write: dict[tuple[int, Rollup], float] = {}  # (instance, rollup) -> arrival
    for batch in generate(traffic):
        clock.now = batch.arrival
        picker = pickers[batch.instance]
        users, orgs = rollup_writes(batch)
        user_names = [
            key_name(meter, series, day, picker.pick(meter, series, day))
            for meter, series, day in users
        ]
        org_names = [
            key_name(meter, series, day, picker.pick(meter, series, day))
            for meter, series, day in orgs
        ]
        cold = _cold(last_user_write, batch, users, hot_seconds)
        second = math.floor(batch.arrival)  # seconds since the start, warm-up included
        counted = batch.arrival >= traffic.warmup
        new_rollups = _created(created, users, orgs, user_names + org_names, first_new_day)
        if not counted:
            continue
        result.batches += 1
        result.events += len(batch.events)
        result.user_rollup_writes += len(user_names)
        result.org_rollup_writes += len(org_names)
        for name, is_cold in zip(user_names, cold):
            result.user_rollups.add(name, second)
            if is_cold:
                result.cold_user_rollups.add(name, second)
        for name in org_names:
            result.org_rollups.add(name, second)
        if events:
            for event in batch.events:
                result.event_entities.add(event.key_id, second)
                for index, bucket in event_index_ranges(event, composite, traffic.start):
                    result.ranges[index].add(bucket, _bucket_second(bucket))
        for meter, series, day in new_rollups:
            values = {"MeterId": meter, "UserId": series.user_id, "Day": day}
            for index, prefix, _last in rollup_composite:
                bucket = (tuple(values[p] for p in prefix), day, second)
                result.ranges[index].add(bucket, second)
        _close(result, second, traffic.timestamp_lag)
    _close(result, 1 << 62, 0.0)
    return result


def _picker(shards: int, hot_seconds: float, clock: _Clock, draw: random.Random) -> Picker:
    """The service's Picker; above its cap (`MAX_SHARDS`, which the service enforces
    because recompute locks every possible shard key) the same Picker widened to
    `shards`, a what-if the service cannot be configured for."""
    picker = Picker(min(shards, MAX_SHARDS), hot_seconds, clock=clock, draw=draw.randrange)
    if shards > MAX_SHARDS:
        picker.shards, picker.home = shards, draw.randrange(shards)
    return picker


def _cold(
    last_write: dict[tuple[int, Rollup], float], batch: Batch, users: list[Rollup], hot: float
) -> list[bool]:
    """Which of the batch's user rollups its instance did not write within `hot` seconds
    (the Picker sends those to the instance's home shard), recounted here rather than
    read from the Picker, so the cold writes' peak is the rule's, not a pick's."""
    cold = []
    for rollup in users:
        seen = last_write.get((batch.instance, rollup))
        cold.append(seen is None or batch.arrival - seen >= hot)
        last_write[batch.instance, rollup] = batch.arrival
    return cold


def _created(
    created: set[str],
    users: list[Rollup],
    orgs: list[Rollup],
    names: list[str],
    first_new_day: int,
) -> list[Rollup]:
    """The rollups (of a day begun inside the run) this batch writes first: it creates
    them, and their (MeterId, [UserId,] Day) index entries with them."""
    new = []
    for rollup, name in zip(itertools.chain(users, orgs), names):
        if rollup[2] >= first_new_day and name not in created:
            created.add(name)
            new.append(rollup)
    return new


def _bucket_second(bucket: Any) -> int:
    return bucket if isinstance(bucket, int) else bucket[-1]


def _is_midnight(moment: datetime) -> bool:
    return day_and_slot(moment)[1] == 0 and moment.minute == 0 and moment.second == 0


def _close(result: Result, second: int, lag: float) -> None:
    """Fold the seconds nothing more is added to: entities are counted at arrival, index
    ranges by their time value, which trails arrival by up to `lag`."""
    counters = (result.user_rollups, result.cold_user_rollups, result.org_rollups)
    for counter in counters + (result.event_entities,):
        counter.close_before(second)
    for counter in result.ranges.values():
        counter.close_before(second - math.ceil(lag) - 1)


# -- the report ---------------------------------------------------------------------------


def entity_rows(results: list[Result]) -> list[list[str]]:
    rows = []
    for r in results:
        seconds = r.traffic.simulated
        user_name, user_mean = r.user_rollups.hottest(seconds)
        _, cold_mean = r.cold_user_rollups.hottest(seconds)
        _, org_mean = r.org_rollups.hottest(seconds)
        rows.append(
            [
                f"{r.traffic.rate:,.0f}",
                str(r.shards),
                str(r.traffic.instance_count),
                f"{r.events:,}",
                f"{r.batches / seconds:,.0f}",
                f"{r.writes / r.events:.3f}",
                f"{r.user_rollup_writes / r.batches:.1f}",
                f"{r.org_rollup_writes / r.batches:.1f}",
                f"{r.user_rollups.peak} / {user_mean:.1f} (shard {_shard(user_name)})",
                str(r.user_rollups.over(seconds)),
                f"{r.cold_user_rollups.peak} / {cold_mean:.1f}",
                f"{r.org_rollups.peak} / {org_mean:.1f}",
                str(r.org_rollups.over(seconds)),
                str(r.event_entities.peak) if r.event_entities.peak else "(as N above)",
            ]
        )
    return rows


def _shard(name: str | None) -> str:
    return "-" if name is None else str(shard_of(name))


ENTITY_HEADER = [
    "events/s",
    "shards N",
    "instances",
    "events counted",
    "batches/s",
    "entity writes/event",
    "user rollup writes/batch",
    "org rollup writes/batch",
    "user rollups: peak w in 1 s / hottest mean w/s",
    "user rollups > 1 w/s (mean)",
    "user rollups, cold writes only: peak / hottest mean",
    "org rollups: peak w in 1 s / hottest mean w/s",
    "org rollups > 1 w/s (mean)",
    "events: peak w in 1 s",
]


def range_rows(results: list[Result]) -> list[list[str]]:
    """Index ranges do not depend on the shard count: one row per (rate, index)."""
    rows, seen = [], set()
    for r in results:
        if r.traffic.rate in seen:
            continue
        seen.add(r.traffic.rate)
        for name, counter in r.ranges.items():
            if counter.peak == 0:
                continue
            rows.append(
                [
                    f"{r.traffic.rate:,.0f}",
                    name,
                    _describe_range(counter.peak_thing),
                    f"{counter.peak:,}",
                    "over" if counter.peak > counter.limit else "under",
                ]
            )
    return rows


RANGE_HEADER = ["events/s", "index", "busiest range", "entries in 1 s", "vs ~500/s"]


def _describe_range(thing: Any) -> str:
    if isinstance(thing, int):
        return "the org's newest second"
    prefix, parts = thing[0], []
    for value in prefix:
        if isinstance(value, int):  # a meter's index, or its stand-in key id (rollups)
            parts.append(f"meter{value % 5_000_000_000}")
        else:
            parts.append(value or "org-wide")
    if len(thing) == 3:  # a rollup index: (prefix, day, second)
        return f"({', '.join(parts)}, Day) one second of creations"
    return f"({', '.join(parts)}) newest second"


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def describe(traffic: Traffic, shards: list[int]) -> str:
    users = _Zipf(traffic.users, traffic.user_skew)
    meters = _Zipf(traffic.meters, traffic.meter_skew)
    return (
        f"{traffic.users:,} users (Zipf {traffic.user_skew}; the top user sends "
        f"{users.share(0):.1%} of events), {traffic.meters} meters (Zipf {traffic.meter_skew}; "
        f"the top meter takes {meters.share(0):.1%}), dimensions {list(traffic.dimensions)} on "
        f"{traffic.dimension_share:.0%} of meters, batches of {traffic.batch} "
        f"({traffic.batch_shape}), {traffic.idempotent_share:.0%} idempotent, timestamps up to "
        f"{traffic.timestamp_lag:g} s old, start {traffic.start.isoformat()}, shards {shards}, "
        f"instances from ~{EVENTS_PER_INSTANCE:,.0f} events/s each unless given, hot after "
        f"{HOT_SECONDS:g} s, seed {traffic.seed}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Replay one org's traffic through the real key and shard functions and "
        "report peak writes per second on any entity and any narrow index range.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--rates", default="1000,10000,100000", help="events per second per org, comma-separated"
    )
    parser.add_argument(
        "--shards",
        default="1,8,32,64",
        help=f"rollup shard counts N to compare (1: unsharded; the service allows 1 to "
        f"{MAX_SHARDS}, more is a what-if)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=60.0,
        help="simulated seconds per scenario (after the warm-up)",
    )
    parser.add_argument(
        "--max-events",
        type=int,
        default=200_000,
        help="cap on counted events per scenario: fewer seconds at high rates",
    )
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="seconds simulated before counting"
    )
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument(
        "--user-skew", type=float, default=1.1, help="Zipf exponent of users (and dimension values)"
    )
    parser.add_argument("--meters", type=int, default=20)
    parser.add_argument("--meter-skew", type=float, default=1.1)
    parser.add_argument(
        "--dimensions",
        default="5,20",
        help="cardinalities of the dimensions of a meter that has some ('' for none)",
    )
    parser.add_argument(
        "--dimension-share", type=float, default=0.5, help="share of meters with dimensions"
    )
    parser.add_argument("--batch", type=int, default=100, help="events per batch (one Commit)")
    parser.add_argument(
        "--batch-shape",
        choices=("mixed", "user"),
        default="mixed",
        help="mixed: each event's user drawn alone (a backend batching many users); "
        "user: one user per batch",
    )
    parser.add_argument(
        "--instances",
        type=int,
        default=0,
        help="App Engine instances, each with its own Picker; 0: the rate over the events "
        "one instance serves at the target CPU",
    )
    parser.add_argument("--idempotent-share", type=float, default=0.5)
    parser.add_argument(
        "--timestamp-lag",
        type=float,
        default=2.0,
        help="event timestamps trail arrival by up to this many seconds",
    )
    parser.add_argument(
        "--hot-seconds", type=float, default=HOT_SECONDS, help="Picker's hot window"
    )
    parser.add_argument(
        "--start",
        default="2026-12-07T12:00:00",
        help="UTC start; at a midnight, rollup creations are counted",
    )
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args(argv)


def traffic_of(args: argparse.Namespace, rate: float) -> Traffic:
    return Traffic(
        rate=rate,
        seconds=args.seconds,
        max_events=args.max_events,
        warmup=args.warmup,
        users=args.users,
        user_skew=args.user_skew,
        meters=args.meters,
        meter_skew=args.meter_skew,
        dimensions=tuple(int(n) for n in args.dimensions.split(",") if n),
        dimension_share=args.dimension_share,
        batch=args.batch,
        batch_shape=args.batch_shape,
        instances=args.instances,
        idempotent_share=args.idempotent_share,
        timestamp_lag=args.timestamp_lag,
        start=datetime.fromisoformat(args.start).replace(tzinfo=UTC),
        seed=args.seed,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    shard_counts = [int(n) for n in args.shards.split(",")]
    rates = [float(r) for r in args.rates.split(",")]
    results = []
    for rate in rates:
        traffic = traffic_of(args, rate)
        for number, shards in enumerate(shard_counts):
            results.append(
                simulate(traffic, shards, hot_seconds=args.hot_seconds, events=number == 0)
            )
    print(describe(replace(traffic_of(args, rates[0]), rate=rates[0]), shard_counts))
    print()
    print(
        "Entities (peak: the most writes one entity took in one second; mean: its average "
        "over the counted seconds; Datastore's guidance: about 1 write/s per entity)"
    )
    print()
    print(markdown(ENTITY_HEADER, entity_rows(results)))
    print()
    print(
        "Narrow ranges of monotonically increasing index values (entries one range took in "
        "one second; guidance: about 500/s)"
    )
    print()
    print(markdown(RANGE_HEADER, range_rows(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
