"""Corrections (issue 17): how fast a range cancel goes, and what an amendment costs.

On a fresh Firestore-mode emulator, in process (the service's own code, no HTTP): seeds
one org's `sum` meter with N events (`events.record_events`, 100-event batches) spread
over U users, 2 models and the last D days, then times

- a dry run over the whole range (`corrections.dry_run`),
- the range cancel of one model's events (`corrections.cancel_range`, pages of
  `--page` events, no time budget: one call runs every page), in events cancelled per
  second and pages,
- `--amends` amendments one after another (`amend.amend_event`), median and p95,

and checks the summaries afterwards against a brute force over the generated events
(the total, and each user's).

    .venv/bin/python benchmarks/corrections.py [--events 20000] [--users 50] [--page 200]
        [--dry-run-only]

The dry run is timed twice: as the service answers it (the range's recent part from
rollups) and read event by event (as before session 8), with RPCs and entities read.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import create_app
from app.config import Config
from app.datastore import make_client
from app.emulator import Emulator
from app.models import ids
from app.services import amend, corrections, events, meters, orgs, summary
from app.storage import rollups, rpc


def _events(count: int, users: int, days: int, now: datetime) -> list[dict]:
    span = days * 86400
    return [
        {
            "userId": f"user-{i % users}",
            "value": i % 97 + 1,
            "timestamp": now - timedelta(seconds=span * (i + 1) / (count + 1)),
            "idempotency": f"bench-{i}",
            "dimensions": {"model": "a" if i % 2 else "b"},
        }
        for i in range(count)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--page", type=int, default=200, help="events per page (200)")
    parser.add_argument("--amends", type=int, default=50)
    parser.add_argument(
        "--dry-run-only", action="store_true", help="seed, compare the dry runs, stop"
    )
    parser.add_argument(
        "--read-ahead",
        type=int,
        default=corrections.READ_AHEAD_EVENTS,
        help="events one range-cancel query reads for several pages (0: one query per "
        "page, as before session 8)",
    )
    args = parser.parse_args()
    corrections.READ_AHEAD_EVENTS = args.read_ahead
    now = datetime.now(UTC).replace(microsecond=0)
    with (
        tempfile.TemporaryDirectory() as scratch,
        Emulator("firestore", log_path=str(Path(scratch) / "emulator.log")) as emulator,
    ):
        config = Config(project="metering-bench", emulator_host=emulator.host, hashid_salt="bench")
        ids.configure(config.hashid_salt)
        client = make_client(config)
        with create_app(config).app_context():
            with client.context():
                namespace = orgs.create_org("corrections").org.namespace
            with client.context(namespace=namespace):
                return _run(config, args, now)


def _run(config: Config, args, now: datetime) -> int:
    meter = meters.create_meter(
        {"name": "Tokens", "eventName": "tokens", "aggregationType": "sum", "dimensions": ["model"]}
    )
    generated = _events(args.events, args.users, args.days, now)
    began = time.perf_counter()
    for start in range(0, len(generated), 100):
        batch = [{**e, "meterId": meter.id_} for e in generated[start : start + 100]]
        events.record_events(batch, config)
    print(f"seeded {len(generated)} events in {time.perf_counter() - began:.1f} s", flush=True)

    period = (now - timedelta(days=args.days + 1), now + timedelta(minutes=1))
    spec = corrections.range_spec(meter.id_, *period, None, {"model": ["a"]})
    preview, _seconds = _dry_runs(config, spec)
    if args.dry_run_only:
        return 0
    began = time.perf_counter()
    with _Counted() as cancel_usage:
        record, done = corrections.cancel_range(
            spec, config.dedupe_window, "bench", args.page, budget_seconds=1e9
        )
    seconds = time.perf_counter() - began
    pages = -(-record.scanned // args.page)
    print(
        f"range cancel: {done.events} events cancelled in {seconds:.1f} s "
        f"({done.events / seconds:.0f} events/s, {record.scanned} read, about {pages} pages "
        f"of {args.page}, {cancel_usage.rpcs} RPCs, read ahead {args.read_ahead}), "
        f"status {record.status}"
    )

    live = [e for e in generated if e["dimensions"]["model"] == "b"]
    stored_ids = [
        outcome.id
        for outcome in events.record_events(
            [{**e, "meterId": meter.id_} for e in live[: args.amends]], config
        )
    ]  # duplicates of the first events: their ids
    latencies = []
    for event_id in stored_ids:
        began = time.perf_counter()
        amend.amend_event(event_id, {"value": 1000}, config, "bench")
        latencies.append((time.perf_counter() - began) * 1000)
    print(
        f"amend: {len(latencies)} amendments, median {statistics.median(latencies):.1f} ms, "
        f"p95 {sorted(latencies)[int(len(latencies) * 0.95) - 1]:.1f} ms"
    )

    expected = {e["userId"]: 0 for e in generated}
    for index, e in enumerate(live):
        expected[e["userId"]] += 1000 if index < args.amends else e["value"]
    total = summary.summarize(meter.id_, None, *period, default_end=period[1]).value
    exact = (
        total == sum(expected.values())
        and (preview.events, done.events) == (len(generated) - len(live),) * 2
    )
    for user, value in expected.items():
        got = summary.summarize(meter.id_, user, *period, default_end=period[1]).value or 0
        exact = exact and got == value
    print(f"summaries equal the brute force: {exact}")
    return 0 if exact else 1


def _dry_runs(config: Config, spec: corrections.RangeSpec):
    """The dry run as the service answers it (from rollups), then the same read event by
    event (as every dry run was before session 8: the meter's rollups taken as keeping no
    sums), side by side: figures, wall time, RPCs and entities read."""
    figures = {}
    for how in ("rollups", "events"):
        usage = _Counted()
        began = time.perf_counter()
        if how == "events":
            with _as_if_no_sums(), usage:
                preview = corrections.dry_run(
                    spec, config.dedupe_window, config.max_event_lead, 1e9
                )
        else:
            with usage:
                preview = corrections.dry_run(
                    spec, config.dedupe_window, config.max_event_lead, 1e9
                )
        seconds = time.perf_counter() - began
        figures[how] = (preview, seconds)
        print(
            f"dry run ({preview.source}): {preview.tally.events} events, value "
            f"{preview.tally.value}, {preview.tally.scanned} events read one by one, "
            f"{seconds:.2f} s, {usage.rpcs} RPCs, {usage.entities_read} entities read",
            flush=True,
        )
    (by_rollups, seconds), (by_events, _s) = figures["rollups"], figures["events"]
    same = (by_rollups.tally.events, by_rollups.tally.value) == (
        by_events.tally.events,
        by_events.tally.value,
    )
    print(f"dry run figures equal both ways: {same}", flush=True)
    return by_rollups.tally, seconds


class _Counted:
    """RPCs and entities read (query results, lookup keys) while the block runs: this
    benchmark runs outside a request, where the service's own counters are off."""

    def __init__(self):
        self.rpcs = self.entities_read = 0

    def __enter__(self):
        self._real = real = rpc._call

        def counted(name, request):
            response = real(name, request)
            self.rpcs += 1
            if name == "run_query":
                self.entities_read += len(response.batch.entity_results)
            elif name == "lookup":
                self.entities_read += len(request.keys)
            return response

        rpc._call = counted
        return self

    def __exit__(self, *_exc):
        rpc._call = self._real


@contextlib.contextmanager
def _as_if_no_sums():
    real = rollups.adds_values
    rollups.adds_values = lambda aggregation: False
    try:
        yield
    finally:
        rollups.adds_values = real


if __name__ == "__main__":
    sys.exit(main())
