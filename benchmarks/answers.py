"""What serializing an answer through its marshmallow schema costs against building it by hand.

The views answer through their response schemas (`@response`, app/api/declare.py), except
where this shows the schema's cost matters: per answer, in microseconds of CPU, for

- `record`: a 100-event batch's outcomes (`responses.record_json` against
  `RecordResult().dump`), the recording hot path, against the service's ~180 µs of CPU
  per stored event (docs/benchmarks.md),
- `summary`: a 30-day summary in hourly windows, 720 windows (`events.summary_json`
  against `Summary().dump` of the same answer, the least a schema would cost),
- `meter page`: a page of 100 meters through `MeterPage().dump`, a path that is not hot,
  for scale.

No Datastore is needed: the answers are made of plain objects shaped like the services'.

    .venv/bin/python benchmarks/answers.py [--repeat 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.schemas import responses
from app.schemas.events import summary_json
from app.services.ingest import Outcome

START = datetime(2026, 11, 1, tzinfo=UTC)


def _outcomes(count: int) -> list:
    return [Outcome(f"evt_{index:020d}", "created") for index in range(count)]


def _summary(windows: int):
    meter = SimpleNamespace(id_="mtr_0123456789", name="Input tokens", aggregation_type="sum")
    rows = [
        SimpleNamespace(
            window_start=START + timedelta(hours=h),
            window_end=START + timedelta(hours=h + 1),
            value=h * 1_000_003,
            event_count=h % 7,
            group_by={},
        )
        for h in range(windows)
    ]
    result = SimpleNamespace(value=sum(r.value for r in rows), windows=rows)
    return SimpleNamespace(
        meter=meter,
        user_id="user-42",
        value=result.value,
        event_count=sum(r.event_count for r in rows),
        period_start=START,
        period_end=START + timedelta(days=30),
        grouped=True,
        result=result,
    )


def _meters(count: int) -> dict:
    page = [
        SimpleNamespace(
            id_=f"mtr_{i:010d}",
            name=f"meter {i}",
            event_name=f"m{i}",
            aggregation_type="sum",
            currency="usd",
            dimensions=["model"],
            metadata={"team": "a"},
            unique_by=None,
            deleted=False,
            created_at=START,
            updated_at=START,
        )
        for i in range(count)
    ]
    return {"meters": page, "count": count, "nextCursor": None}


def _cpu_us(function, argument, repeat: int) -> float:
    """Median CPU microseconds of one call, over `repeat` calls."""
    times = []
    for _ in range(repeat):
        began = time.process_time_ns()
        function(argument)
        times.append(time.process_time_ns() - began)
    return statistics.median(times) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=200)
    repeat = parser.parse_args().repeat

    outcomes = _outcomes(100)
    record_schema = responses.RecordResult()
    by_hand = _cpu_us(responses.record_json, outcomes, repeat)
    dumped = _cpu_us(lambda o: record_schema.dump({"events": o, "count": len(o)}), outcomes, repeat)
    print(
        f"record (100 events): by hand {by_hand:.0f} µs, schema {dumped:.0f} µs: "
        f"+{(dumped - by_hand) / 100:.1f} µs per event"
    )

    summary = _summary(720)
    answer = summary_json(summary)
    summary_schema = responses.Summary()
    by_hand = _cpu_us(summary_json, summary, repeat)
    dumped = _cpu_us(summary_schema.dump, answer, repeat)
    print(
        f"summary (720 windows): by hand {by_hand:.0f} µs, schema {dumped:.0f} µs "
        f"(x{dumped / by_hand:.1f})"
    )

    page = _meters(100)
    print(
        f"meter page (100 meters): schema {_cpu_us(responses.MeterPage().dump, page, repeat):.0f}"
        " µs"
    )


if __name__ == "__main__":
    main()
