"""Summary cost against usage: 2,000 versus 200,000 events, and against reading every event.

Seeds two meters of one org on a fresh Firestore-mode emulator with the same user, the
same 30 days and the same four dimension values: meter `small` gets 2,000 events, meter
`large` 200,000 (through the service's own ingestion code, in 100-event batches). Then,
interleaved in one run, it times the 30-day summary with hourly windows for that user:

- `rollups`: the service's summary (`app.services.summary.summarize`), after the
  periodic compaction has folded ingestion's deltas (`metering rollups compact`),
- `read-every-event`: the original's method, an NDB query of every event of the period,
  aggregated in Python into the same hourly windows,

and reports median latencies, the entities each one read, and the ratios the issue sets:
large/small <= 1.5 for rollups, read-every-event/rollups >= 50 on the large meter.

    .venv/bin/python benchmarks/summary.py [--large 200000] [--small 2000] [--runs 15]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.config import Config
from app.datastore import make_client
from app.emulator import Emulator
from app.models import MeterEvent, ids, root_key
from app.services import compact, events, meters, orgs, summary
from app.storage import metrics

USER = "heavy-user"
MODELS = ("gpt-4", "gpt-4o", "claude", "llama")
NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
START = NOW - timedelta(days=30)


def _batches(meter_id: str, total: int, seed: int):
    rng = random.Random(seed)
    span = int((NOW - START).total_seconds())
    for first in range(0, total, 100):
        yield [
            {
                "meterId": meter_id,
                "userId": USER,
                "value": rng.randrange(1, 1000),
                "timestamp": START + timedelta(seconds=rng.randrange(span)),
                "idempotency": f"{seed}-{first + i}",
                "dimensions": {"model": rng.choice(MODELS)},
            }
            for i in range(min(100, total - first))
        ]


def _seed(client, namespace: str, config: Config, meter_id: str, total: int, seed: int):
    def send(batch):
        with client.context(namespace=namespace):
            events.record_events(batch, config)

    began = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        for _ in pool.map(send, _batches(meter_id, total, seed)):
            pass
    elapsed = time.perf_counter() - began
    print(f"  seeded {total:,} events in {elapsed:.1f}s ({total / elapsed:,.0f}/s)", flush=True)


def _read_every_event(meter) -> dict:
    """The original's summary: every event of the period into memory, then aggregated."""
    windows: dict[datetime, int] = {}
    query = MeterEvent.query(
        MeterEvent.meter_id == meter.id_,
        MeterEvent.user_id == USER,
        MeterEvent.timestamp >= START,
        MeterEvent.timestamp < NOW,
        ancestor=root_key(),
    )
    for event in query.iter():
        if not event.deleted:
            hour = event.timestamp.replace(minute=0, second=0, microsecond=0)
            windows[hour] = windows.get(hour, 0) + event.value
    return windows


def _rollups(meter) -> dict:
    answer = summary.summarize(meter.id_, USER, START, NOW, window_size="hour")
    return {w.window_start.astimezone(UTC): w.value for w in answer.result.windows if w.event_count}


def _timed(function, meter) -> tuple[float, int, dict]:
    usage = metrics.start()
    began = time.perf_counter()
    result = function(meter)
    return time.perf_counter() - began, usage.entities_read, result


def _measure(client, namespace, meter, function, runs: int) -> tuple[float, int, dict]:
    timings, reads, result = [], 0, None
    with client.context(namespace=namespace):
        for _ in range(runs):
            seconds, reads, result = _timed(function, meter)
            timings.append(seconds)
    return statistics.median(timings), reads, result  # type: ignore[return-value]


def main() -> None:
    global MODELS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=2_000)
    parser.add_argument("--large", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--baseline-runs", type=int, default=3)
    parser.add_argument(
        "--models",
        type=int,
        default=len(MODELS),
        help=f"values of the events' one dimension, so series of the user (default {len(MODELS)})",
    )
    args = parser.parse_args()
    MODELS = MODELS + tuple(f"model-{i}" for i in range(len(MODELS), args.models))  # type: ignore[assignment]
    MODELS = MODELS[: args.models]  # type: ignore[assignment]

    with (
        tempfile.TemporaryDirectory() as scratch,
        Emulator("firestore", log_path=str(Path(scratch) / "emulator.log")) as emulator,
    ):
        config = Config(
            project="metering-bench", emulator_host=emulator.host, hashid_salt="bench-salt"
        )
        ids.configure(config.hashid_salt)
        client = make_client(config)
        metrics.instrument(client)
        with client.context():
            namespace = orgs.create_org("bench").org.namespace
        with client.context(namespace=namespace):
            small = meters.create_meter(
                {"name": "small", "eventName": "small", "dimensions": ["model"]}
            )
            large = meters.create_meter(
                {"name": "large", "eventName": "large", "dimensions": ["model"]}
            )
        print(f"Seeding on the Firestore-mode emulator at {emulator.host}:", flush=True)
        _seed(client, namespace, config, small.id_, args.small, 1)
        _seed(client, namespace, config, large.id_, args.large, 2)
        with client.context(namespace=namespace):
            began = time.perf_counter()
            folded = compact.compact_org()  # what the periodic compaction job does
            print(f"  compacted {folded} rollups in {time.perf_counter() - began:.1f}s")
        _report(client, namespace, small, large, args)


def _report(client, namespace, small, large, args) -> None:
    rows = {}
    for _round in range(2):  # interleave so machine noise hits both alike
        for name, meter in (("small", small), ("large", large)):
            rows[("rollups", name)] = _measure(
                client, namespace, meter, _rollups, args.runs // 2 + 1
            )
    for name, meter in (("small", small), ("large", large)):
        rows[("read-every-event", name)] = _measure(
            client, namespace, meter, _read_every_event, args.baseline_runs
        )
    for name in ("small", "large"):
        assert rows[("rollups", name)][2] == rows[("read-every-event", name)][2], (
            f"the two methods disagree on {name}"
        )
    print(f"\n30-day summary, hourly windows, one user ({len(MODELS)} dimension values)")
    print(f"{'method':<18} {'events':>9} {'median ms':>10} {'entities read':>14}")
    for (method, name), (seconds, reads, _) in rows.items():
        events_count = args.small if name == "small" else args.large
        print(f"{method:<18} {events_count:>9,} {seconds * 1000:>10.1f} {reads:>14,}")
    growth = rows[("rollups", "large")][0] / rows[("rollups", "small")][0]
    speedup = rows[("read-every-event", "large")][0] / rows[("rollups", "large")][0]
    print(f"\nrollups large/small latency: {growth:.2f} (bar: <= 1.5)")
    print(f"read-every-event/rollups on the large meter: {speedup:.0f}x (bar: >= 50)")
    print("both methods gave identical windows on both meters")


if __name__ == "__main__":
    main()
