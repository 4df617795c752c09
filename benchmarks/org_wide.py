"""Summaries of all users at 100 and at 100,000 users, and `last` against `sum` by user.

Seeds, on a fresh Firestore-mode emulator and through the service's own ingestion code
(`app.services.events.record_events`, 100-event batches, several threads), three orgs
over the same 30 UTC days:

- `small`: 100 users, `large`: 100,000 users, each with a `sum` meter `tokens` of one
  dimension `model` (4 values). Every user has one event at a random instant of the
  period; a share of the users (1%, at least 10) also has events on every day.
- `by-user`: 5,000 users shaped alike, whose events go to a `last` meter and, the same
  events, to a `sum` meter.

Then it measures, in process (`app.services.summary.summarize`, entities read from
`app.storage.metrics`, the counters behind `X-Datastore-Usage`), each case as the median
of several runs with the orgs interleaved, so machine noise hits both alike:

- before compaction: the period total, and `last` against `sum` grouped by user;
- after folding the org-wide rollups (compaction's own transaction on every shard of
  each, see `--compact`): the period total (30 days, no groupBy), daily windows grouped
  by `model`, daily windows in Asia/Kolkata filtered on one model, the top 10 users
  (`orderBy=-value&limit=10`), and `last` against `sum` by user again (every page of
  1000 users of `groupBy=userId`);
- three probes of the emulator: a query of a kind with no entity (an RPC's fixed
  cost), a rollup query that matches nothing (what the emulator spends scanning the
  kind, which Cloud Datastore's indexes do not), and a lookup of every org-wide rollup
  key of the period (the same 960 entities read by key).

Each time is split into the time spent inside Datastore RPCs (the emulator) and the
rest (`own ms`: decoding and merging, the service's part).

Every answer is compared with a brute force computed from the generated events (totals,
every window and group, every user's value), so the figures also prove exactness. The
bars of the issue are printed; the script exits 0 only when all hold:

- org-wide summaries read at most (days + 2) x shards x dimension combinations + 10
  entities, and take at most 1.5x as long at 100,000 users as at 100;
- `last` grouped by user at 5,000 users takes at most 2x the same summary of `sum`.

    .venv/bin/python benchmarks/org_wide.py [--large 100000] [--small 100] [--runs 9]
"""

from __future__ import annotations

import argparse
import bisect
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from google.cloud import ndb
from google.cloud.datastore_v1.types import query as q

from app import create_app
from app.config import Config
from app.core.cells import Series
from app.datastore import make_client
from app.emulator import Emulator
from app.models import ids
from app.services import compact, events, meters, orgs, recompute, summary
from app.storage import metrics, queries, rollups, rpc, shards

DAYS = 30
MODELS = ("gpt-4", "gpt-4o", "claude", "llama")
ZONE = "Asia/Kolkata"  # +05:30: daily windows that cut UTC days in two
END = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
START = END - timedelta(days=DAYS)
SPAN_US = DAYS * 86_400_000_000
CONSTANT = 10  # entities read besides rollups: the meter, the org-wide marker, slack
TIME_BAR, LAST_BAR = 1.5, 2.0
SHARDS = [8]  # the configured rollup shards, set in run()


# -- the events and their brute force ------------------------------------------------


@dataclass
class Usage:
    """The generated events of one org, kept to compute every answer by brute force."""

    users: int
    active: int
    events: list[tuple[str, datetime, int, str]] = field(default_factory=list)

    def by_group(self, group: Callable[[tuple], Any]) -> dict[Any, tuple[list, list, list]]:
        """group -> (sorted timestamps, prefix counts, prefix sums) for range sums."""
        found: dict[Any, list[tuple[datetime, int]]] = defaultdict(list)
        for event in self.events:
            found[group(event)].append((event[1], event[2]))
        index = {}
        for key, rows in found.items():
            rows.sort()
            sums = [0]
            for _, value in rows:
                sums.append(sums[-1] + value)
            index[key] = ([t for t, _ in rows], list(range(len(rows) + 1)), sums)
        return index


def generate(users: int, share: float, per_day: int, seed: int, extra: int = 0) -> Usage:
    """One event per user at a random instant; `share` of the users (at least 10) also
    `per_day` events on every day; `extra` more events of random users at random instants.
    Timestamps are unique per user (so `last` is defined without ties), values 1..1000,
    models at random."""
    rng = random.Random(seed)
    active = min(users, max(10, round(users * share)))
    usage = Usage(users, active)
    taken: set[tuple[str, int]] = set()

    def add(user: str, low_us: int, high_us: int) -> None:
        while True:
            offset = rng.randrange(low_us, high_us)
            if (user, offset) not in taken:
                taken.add((user, offset))
                break
        moment = START + timedelta(microseconds=offset)
        usage.events.append((user, moment, rng.randrange(1, 1001), rng.choice(MODELS)))

    for number in range(users):
        add(f"u{number:06d}", 0, SPAN_US)
    for number in range(active):
        for day in range(DAYS):
            for _ in range(per_day):
                add(f"u{number:06d}", day * 86_400_000_000, (day + 1) * 86_400_000_000)
    for _ in range(extra):
        add(f"u{rng.randrange(users):06d}", 0, SPAN_US)
    rng.shuffle(usage.events)  # batches mix users and days, as traffic does
    return usage


def seed(client, namespace: str, config: Config, meter_id: str, usage: Usage, label: str) -> None:
    """Send the events through the service's ingestion code, 100 per batch, 4 threads."""

    def batches():
        for first in range(0, len(usage.events), 100):
            yield [
                {
                    "meterId": meter_id,
                    "userId": user,
                    "value": value,
                    "timestamp": moment,
                    "idempotency": f"{label}-{first + i}",
                    "dimensions": {"model": model},
                }
                for i, (user, moment, value, model) in enumerate(usage.events[first : first + 100])
            ]

    def send(batch):
        with client.context(namespace=namespace):
            outcomes = events.record_events(batch, config)
        assert all(o.status == "created" for o in outcomes), "an event was not created"

    began = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        for _ in pool.map(send, batches()):
            pass
    took = time.perf_counter() - began
    print(
        f"  {label}: {len(usage.events):,} events of {usage.users:,} users "
        f"({usage.active:,} on every day) in {took:.0f}s ({len(usage.events) / took:,.0f}/s)",
        flush=True,
    )


# -- checking answers ----------------------------------------------------------------


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def _range(index, key, low: datetime, high: datetime) -> tuple[int, int]:
    """(count, sum) of the events of group `key` in [low, high)."""
    if key not in index:
        return 0, 0
    times, counts, sums = index[key]
    a, b = bisect.bisect_left(times, low), bisect.bisect_left(times, high)
    return counts[b] - counts[a], sums[b] - sums[a]


def check_total(usage: Usage, answer) -> None:
    count, total = len(usage.events), sum(e[2] for e in usage.events)
    assert (answer.event_count, answer.value) == (count, total), (
        f"period total {answer.event_count}/{answer.value}, brute force {count}/{total}"
    )


def check_windows(usage: Usage, answer, models: frozenset[str] | None = None) -> None:
    """Each (window, model) of the answer against the events in it, and nothing missing."""
    index = usage.by_group(lambda e: e[3])
    listed_count = listed_sum = 0
    for window in answer.result.windows:
        model = window.group_by["model"]
        assert models is None or model in models, f"window of unwanted model {model}"
        low = max(_utc(window.window_start), START)
        high = min(_utc(window.window_end), END)
        count, total = _range(index, model, low, high)
        assert (window.event_count, window.value) == (count, total), (
            f"window {window.window_start} {model}: {window.event_count}/{window.value}, "
            f"brute force {count}/{total}"
        )
        listed_count, listed_sum = listed_count + count, listed_sum + total
    wanted = [e for e in usage.events if models is None or e[3] in models]
    assert (listed_count, listed_sum) == (len(wanted), sum(e[2] for e in wanted)), (
        "the windows miss events"
    )


def check_users(usage: Usage, answer, aggregation: str = "sum") -> list[tuple[str, Any]]:
    """Every user's value against the events; the top 10 users by value."""
    expected: dict[str, Any] = {}
    latest: dict[str, datetime] = {}
    for user, moment, value, _ in usage.events:
        if aggregation == "sum":
            expected[user] = expected.get(user, 0) + value
        elif user not in latest or moment > latest[user]:
            latest[user], expected[user] = moment, value
    got = {w.group_by["userId"]: w.value for w in answer.result.windows}
    assert got == expected, f"{aggregation} by user differs from brute force"
    return sorted(got.items(), key=lambda item: (-item[1], item[0]))[:10]


# -- measuring -----------------------------------------------------------------------


class _Waited:
    """Wall time spent inside blocking Datastore RPCs (the emulator's share of a call)."""

    seconds = 0.0


class _TimedTransport:
    """The client's (already counting) transport, with blocking calls timed."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._transport, name)
        if not callable(method) or name.startswith("_"):
            return method

        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                _Waited.seconds += time.perf_counter() - began

        timed.future = getattr(method, "future", None)  # type: ignore[attr-defined]
        return timed


@dataclass
class Org:
    label: str
    namespace: str
    usage: Usage
    meter: Any  # the `sum` meter (and, in `by-user`, the `last` meter in `last`)
    last: Any = None


@dataclass
class Case:
    name: str
    run: Callable[[Any], Any]  # meter -> Summary
    check: Callable[[Usage, Any], Any]
    org_wide: bool


def _timed(client, org: Org, meter, case: Case) -> tuple[float, float, int, int, Any]:
    """(seconds, seconds outside Datastore RPCs, entities read, RPCs, answer) of one call."""
    with client.context(namespace=org.namespace):  # one context per call, as per request
        usage = metrics.start()
        waited = _Waited.seconds
        began = time.perf_counter()
        answer = case.run(meter)
        took = time.perf_counter() - began
        own = took - (_Waited.seconds - waited)
    return took, own, usage.entities_read, usage.rpcs, answer


@dataclass
class Row:
    case: str
    org: str
    users: int
    times: list[float] = field(default_factory=list)
    owns: list[float] = field(default_factory=list)
    reads: int = 0
    rpcs: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def own(self) -> float:
        return statistics.median(self.owns)

    def add(self, took: float, own: float, reads: int, rpcs: int) -> None:
        self.times.append(took)
        self.owns.append(own)
        self.reads, self.rpcs = reads, rpcs


def measure(client, pairs: list[tuple[Org, Any]], case: Case, runs: int) -> list[Row]:
    """Interleaved runs of `case` on each (org, meter); every answer checked once."""
    rows = [
        Row(case.name, f"{org.label}/{meter.aggregation_type}", org.usage.users)
        for org, meter in pairs
    ]
    for attempt in range(runs):
        for row, (org, meter) in zip(rows, pairs):
            took, own, reads, rpcs, answer = _timed(client, org, meter, case)
            row.add(took, own, reads, rpcs)
            if attempt == 0:
                case.check(org.usage, answer)
    return rows


def summarize_all(**options) -> Callable[[Any], Any]:
    def run(meter):
        return summary.summarize(meter.id_, None, START, END, **options)

    return run


class _Pages:
    """Every page of a breakdown by user, as one answer (`result.windows`)."""

    def __init__(self, windows: list[Any]):
        self.result = self
        self.windows = windows


def summarize_pages(limit: int = 1000, **options) -> Callable[[Any], Any]:
    """A breakdown by user read page after page (`limit` users each) to its end."""

    def run(meter):
        windows: list[Any] = []
        cursor = None
        while True:
            page = summary.summarize(
                meter.id_, None, START, END, limit=limit, cursor=cursor, **options
            )
            windows += page.result.windows
            cursor = page.next_cursor
            if cursor is None:
                return _Pages(windows)

    return run


# -- probes of the emulator ----------------------------------------------------------


def probe_empty_query(meter) -> None:
    """A rollup query that matches nothing: the emulator's cost of scanning the kind."""
    query = queries.build("meter-rollup", [("MeterId", q.PropertyFilter.Operator.EQUAL, "none")])
    list(rpc.run_query(query, ndb.get_context().get_namespace()))


def probe_no_kind(meter) -> None:
    """A query of a kind with no entity: an RPC's fixed cost on the emulator."""
    query = queries.build("no-such-kind", [("MeterId", q.PropertyFilter.Operator.EQUAL, "none")])
    list(rpc.run_query(query, ndb.get_context().get_namespace()))


def probe_lookup(meter) -> None:
    """Every org-wide rollup key of the period (all shards, all models), looked up."""
    keys = [key for group in _org_wide_keys(meter) for key in group]
    for first in range(0, len(keys), 1000):
        rpc.lookup(keys[first : first + 1000])


# -- the report ----------------------------------------------------------------------


def print_rows(title: str, rows: list[Row]) -> None:
    print(f"\n{title}")
    print(
        f"{'case':<44} {'org/meter':<14} {'users':>8} {'median ms':>10} {'runs':>5} "
        f"{'own ms':>7} {'entities read':>14} {'RPCs':>6}"
    )
    for row in rows:
        print(
            f"{row.case:<44} {row.org:<14} {row.users:>8,} {row.median * 1000:>10.1f} "
            f"{len(row.times):>5} {row.own * 1000:>7.1f} {row.reads:>14,} {row.rpcs:>6}"
        )


def bars(rows: list[Row], org_wide: set[str], shard_count: int, last_pairs) -> bool:
    ok = True
    bound = (DAYS + 2) * shard_count * len(MODELS) + CONSTANT
    print("\nBars")
    by_case: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_case[row.case].append(row)
    for case, pair in by_case.items():
        if case not in org_wide:
            continue
        small, large = sorted(pair, key=lambda r: r.users)
        ratio = large.median / small.median
        reads_ok, time_ok = large.reads <= bound, ratio <= TIME_BAR
        ok &= reads_ok and time_ok
        print(
            f"  {'MET ' if reads_ok else 'MISS'} {case}: {large.reads} entities read at "
            f"{large.users:,} users (bound ({DAYS} + 2) x {shard_count} shards x "
            f"{len(MODELS)} models + {CONSTANT} = {bound})"
        )
        print(
            f"  {'MET ' if time_ok else 'MISS'} {case}: {large.users:,}/{small.users:,} users "
            f"latency {ratio:.2f} (bar <= {TIME_BAR}; outside Datastore RPCs "
            f"{large.own / small.own:.2f})"
        )
    for label, last_row, sum_row in last_pairs:
        ratio = last_row.median / sum_row.median
        met = ratio <= LAST_BAR
        ok &= met
        print(
            f"  {'MET ' if met else 'MISS'} {label}: last/sum by user at {sum_row.users:,} "
            f"users {ratio:.2f} (bar <= {LAST_BAR}; reads {last_row.reads:,} vs {sum_row.reads:,}, "
            f"RPCs {last_row.rpcs} vs {sum_row.rpcs})"
        )
    return ok


# -- main ----------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=100, help="users of the small org (100)")
    parser.add_argument("--large", type=int, default=100_000, help="users of the large org")
    parser.add_argument("--by-user", type=int, default=5_000, help="users of last vs sum (5000)")
    parser.add_argument("--share", type=float, default=0.01, help="users with events every day")
    parser.add_argument("--per-day", type=int, default=2, help="their events per day (2)")
    parser.add_argument(
        "--small-extra",
        type=int,
        default=0,
        help="more events for the small org's users, at random instants (0): with 160000 "
        "the small org has as many events as the large one, and only the users differ",
    )
    parser.add_argument("--runs", type=int, default=9, help="runs of org-wide cases (9)")
    parser.add_argument("--user-runs", type=int, default=3, help="runs of by-user cases (3)")
    parser.add_argument(
        "--compact",
        choices=("org-wide", "all"),
        default="org-wide",
        help="before the timed runs, fold the org-wide rollups only (default), or every "
        "rollup with compact.compact_org: on the emulator that takes about 50 ms per rollup "
        "and grows with the kind (each fold's keys-only query scans it), hours at 100,000 users",
    )
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory() as scratch,
        Emulator("firestore", log_path=str(Path(scratch) / "emulator.log")) as emulator,
    ):
        config = Config(project="metering-bench", emulator_host=emulator.host, hashid_salt="bench")
        ids.configure(config.hashid_salt)
        client = make_client(config)
        metrics.instrument(client)
        client.stub = _TimedTransport(client.stub)
        print(
            f"Firestore-mode emulator at {emulator.host}; period {START:%Y-%m-%d} to "
            f"{END:%Y-%m-%d} ({DAYS} days), {config.rollup_shards} shards",
            flush=True,
        )
        with create_app(config).app_context():  # page cursors are sealed with its secret
            return run(client, config, args)


def _org(client, label: str, usage: Usage, aggregations: tuple[str, ...]) -> tuple[str, list]:
    with client.context():
        namespace = orgs.create_org(label).org.namespace
    made = []
    with client.context(namespace=namespace):
        for aggregation in aggregations:
            made.append(
                meters.create_meter(
                    {
                        "name": f"{label}-{aggregation}",
                        "eventName": f"{label}-{aggregation}",
                        "aggregationType": aggregation,
                        "dimensions": ["model"],
                    }
                )
            )
    return namespace, made


def run(client, config: Config, args) -> int:
    SHARDS[0] = config.rollup_shards
    began = time.perf_counter()
    print("Generating and seeding (record_events, 100 per batch, 4 threads):", flush=True)
    orgs_: list[Org] = []
    for label, users, number, extra in (
        ("small", args.small, 1, args.small_extra),
        ("large", args.large, 2, 0),
    ):
        usage = generate(users, args.share, args.per_day, number, extra)
        namespace, (meter,) = _org(client, label, usage, ("sum",))
        seed(client, namespace, config, meter.id_, usage, label)
        orgs_.append(Org(label, namespace, usage, meter))
    usage = generate(args.by_user, args.share, args.per_day, 3)
    namespace, (sum_meter, last_meter) = _org(client, "by-user", usage, ("sum", "last"))
    seed(client, namespace, config, sum_meter.id_, usage, "by-user-sum")
    seed(client, namespace, config, last_meter.id_, usage, "by-user-last")
    by_user = Org("by-user", namespace, usage, sum_meter, last_meter)
    print(f"  seeding took {time.perf_counter() - began:.0f}s", flush=True)

    total = Case("period total (30 days)", summarize_all(), lambda u, a: check_total(u, a), True)
    by_user_sum = Case(
        "by user (groupBy=userId, pages of 1000)",
        summarize_pages(group_by=("userId",)),
        lambda u, a: check_users(u, a, "sum"),
        False,
    )
    by_user_last = Case(
        "by user (groupBy=userId, pages of 1000)",
        summarize_pages(group_by=("userId",)),
        lambda u, a: check_users(u, a, "last"),
        False,
    )
    pairs = [(org, org.meter) for org in orgs_]
    rows: list[Row] = []

    print("\nBefore compaction", flush=True)
    uncompacted = measure(client, pairs, _renamed(total, "period total, uncompacted"), args.runs)
    last_before = _last_vs_sum(client, by_user, by_user_sum, by_user_last, args.user_runs)
    print_rows(
        "Before compaction (ingestion's deltas, shards not folded)", uncompacted + last_before
    )

    _compact(client, [*orgs_, by_user], args.compact)

    cases = [
        total,
        Case(
            "daily windows by model",
            summarize_all(window_size="day", group_by=("model",)),
            lambda u, a: check_windows(u, a),
            True,
        ),
        Case(
            f"daily windows in {ZONE}, filter[model]",
            summarize_all(
                window_size="day",
                time_zone=ZONE,
                group_by=("model",),
                filters={"model": frozenset({MODELS[0]})},
            ),
            lambda u, a: check_windows(u, a, frozenset({MODELS[0]})),
            True,
        ),
    ]
    for case in cases:
        rows += measure(client, pairs, case, args.runs)
    top = measure(client, pairs, _top_users(by_user_sum), args.user_runs)
    last_after = _last_vs_sum(client, by_user, by_user_sum, by_user_last, args.user_runs)
    probes = [
        measure(client, pairs, Case(name, probe, lambda u, a: None, False), args.runs)
        for name, probe in (
            ("probe: query of an empty kind", probe_no_kind),
            ("probe: rollup query matching nothing", probe_empty_query),
            ("probe: lookup of every org-wide key", probe_lookup),
        )
    ]
    print_rows("After compaction", rows + top + last_after + [r for p in probes for r in p])
    print("\nEvery answer above equals the brute force computed from the generated events.")
    org_wide = {case.name for case in cases} | {"period total, uncompacted"}
    ok = bars(
        uncompacted + rows,
        org_wide,
        config.rollup_shards,
        [
            ("before compaction", last_before[1], last_before[0]),
            ("after compaction", last_after[1], last_after[0]),
        ],
    )
    verdict = "every bar met" if ok else "a bar was missed"
    print(f"\n{verdict}; {time.perf_counter() - began:.0f}s in all")
    return 0 if ok else 1


def _org_wide_keys(meter) -> list[list[Any]]:
    """Per (model, day) of the period: the keys of every shard of its org-wide rollup."""
    day0 = rollups.day_and_slot(START)[0]
    return [
        [
            rollups.key(meter.key.id(), Series(shards.ORG_USER, (("model", m),)), day0 + d, shard=s)
            for s in range(SHARDS[0])
        ]
        for m in MODELS
        for d in range(DAYS)
    ]


def _fold(meter, series: Series, day: int, keys: list[Any]) -> bool:
    """Compaction's own transaction (`compact._compact_once`: every shard read, then
    `recompute.rewritten` into shard 0) on the computed keys of all shards."""

    def attempt() -> bool:
        with rpc.transaction() as transaction:
            found = rpc.lookup(keys, transaction)
            stored = [found[k.SerializeToString()] for k in keys if k.SerializeToString() in found]
            if not stored:
                rpc.rollback(transaction)
                return False
            rewritten = recompute.rewritten(
                meter.key.id(), meter.id_, series, day, stored, transaction, set()
            )
            rpc.commit(rewritten, transaction)
            return True

    return bool(rpc.retry_aborted(attempt, "folding"))


def fold_org_wide(meter) -> int:
    """Fold every org-wide rollup of the period, all its shards into shard 0: what
    `compact_org` does to the rollups that org-wide summaries read. The shards' keys are
    computed rather than found by compaction's keys-only query, which on the emulator
    scans the whole kind (about 6 s per fold at 100,000 users)."""
    day0 = rollups.day_and_slot(START)[0]
    folded = 0
    for model in MODELS:
        series = Series(shards.ORG_USER, (("model", model),))
        for day in range(day0, day0 + DAYS):
            keys = [rollups.key(meter.key.id(), series, day, shard=s) for s in range(SHARDS[0])]
            folded += _fold(meter, series, day, keys)
    return folded


def _compact(client, orgs_: list[Org], scope: str) -> None:
    """Fold ingestion's deltas before the timed runs: every rollup (`compact_org`, what
    `metering rollups compact` does) or only the org-wide ones (see --compact)."""
    print(f"\nCompacting ({scope}):", flush=True)
    for org in orgs_:
        with client.context(namespace=org.namespace):
            started = time.perf_counter()
            if scope == "all":
                folded = compact.compact_org()
            else:
                folded = sum(fold_org_wide(m) for m in (org.meter, org.last) if m is not None)
        took = time.perf_counter() - started
        print(f"  {org.label}: {folded:,} rollups in {took:.0f}s", flush=True)


def _renamed(case: Case, name: str) -> Case:
    return Case(name, case.run, case.check, case.org_wide)


def _top_users(case: Case) -> Case:
    """The top 10 users as the API ranks them (orderBy=-value, limit=10), against the top
    10 of a brute force over every user's events (ties by userId)."""

    def check(usage, answer):
        expected = case.check(usage, _Pages(_every_user(usage)))
        got = [(w.group_by["userId"], w.value) for w in answer.result.windows]
        assert got == expected, "top 10 users differ from brute force"

    run = summarize_all(group_by=("userId",), order_by="-value", limit=10)
    return Case("top 10 users (orderBy=-value, limit=10)", run, check, False)


def _every_user(usage: Usage) -> list[Any]:
    """Every user's sum as windows (what `check_users` reads), from the events."""
    totals: dict[str, int] = {}
    for user, _, value, _ in usage.events:
        totals[user] = totals.get(user, 0) + value
    return [SimpleNamespace(group_by={"userId": u}, value=v) for u, v in totals.items()]


def _last_vs_sum(client, org: Org, sum_case: Case, last_case: Case, runs: int) -> list[Row]:
    """The same summary of the `sum` and the `last` meter, interleaved: [sum row, last row]."""
    rows = [
        Row(sum_case.name, "by-user/sum", org.usage.users),
        Row(last_case.name, "by-user/last", org.usage.users),
    ]
    for attempt in range(runs):
        for row, meter, case in ((rows[0], org.meter, sum_case), (rows[1], org.last, last_case)):
            took, own, reads, rpcs, answer = _timed(client, org, meter, case)
            row.add(took, own, reads, rpcs)
            if attempt == 0:
                case.check(org.usage, answer)
    return rows


if __name__ == "__main__":
    sys.exit(main())
