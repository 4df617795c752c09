"""How long a slow request really runs: the request deadline against a summary slowed by data.

Seeds one `last` meter with one event for each of N users (uncompacted, so the summary
grouped by user reads the latest event of every user: one query per instant) through a
real `metering serve` (gunicorn, one worker) on a fresh Firestore-mode emulator, with
`METERING_REQUEST_DEADLINE_SECONDS` = D. Then it times that summary, reports its status,
wall time, the overshoot past D and the RPCs it made, and times a cheap request sent
right after, on the same worker. With `--unbounded` it also times the same summary on a
service without a deadline, to show what the deadline saved.

    .venv/bin/python benchmarks/deadline.py [--users 3000] [--deadline 5] [--unbounded]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import USAGE, Client, Service, scratch_dir, start_emulator

DAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)


def _seed(client: Client, users: int) -> str:
    meter = client.post_json(
        "/v1/billing/meters",
        {"name": "Seats", "eventName": f"seats_{time.time_ns()}", "aggregationType": "last"},
    )
    for first in range(0, users, 100):
        client.post_json(
            "/v1/billing/meter-events",
            {
                "events": [
                    {
                        "meterId": meter["id"],
                        "userId": f"user-{n}",
                        "value": n,
                        "timestamp": (DAY + timedelta(seconds=n % 86_000)).isoformat(),
                    }
                    for n in range(first, min(users, first + 100))
                ]
            },
        )
    return meter["id"]


def _timed(client: Client, path: str):
    started = time.monotonic()
    answer = client.request("GET", path)
    return answer, time.monotonic() - started


def _rpcs(answer) -> int:
    match = USAGE.search(answer.usage or "")
    return int(match.group(1)) if match else -1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--deadline", type=float, default=5.0)
    parser.add_argument(
        "--unbounded",
        action="store_true",
        help="also time the summary on a service without a deadline",
    )
    args = parser.parse_args()
    workdir = scratch_dir()
    emulator = start_emulator("firestore", workdir)
    services = []
    try:
        bounded = Service(
            emulator.host,
            1,
            4,
            workdir,
            extra_env={"METERING_REQUEST_DEADLINE_SECONDS": str(args.deadline)},
        ).start()
        services.append(bounded)
        client = Client(bounded.url, bounded.api_key)  # type: ignore[arg-type]
        meter_id = _seed(client, args.users)
        path = "/v1/billing/meter-events/summary?" + urlencode(
            {
                "meterId": meter_id,
                "groupBy": "userId",
                "limit": 1000,  # the largest page of users (answers by user are paged)
                "periodStart": DAY.isoformat(),
                "periodEnd": (DAY + timedelta(days=1)).isoformat(),
            }
        )
        answer, seconds = _timed(client, path)
        after, after_seconds = _timed(client, "/v1/billing/meters")
        report = {
            "users": args.users,
            "deadline_s": args.deadline,
            "summary": {
                "status": answer.status,
                "seconds": round(seconds, 3),
                "overshoot_s": round(seconds - args.deadline, 3),
                "rpcs": _rpcs(answer),
                "deadline_exceeded": answer.status == 503
                and "deadline_exceeded" in answer.body.decode(),
            },
            "next_request": {"status": after.status, "seconds": round(after_seconds, 3)},
        }
        if args.unbounded:
            unbounded = Service(
                emulator.host, 1, 4, workdir, extra_env={"METERING_REQUEST_DEADLINE_SECONDS": "0"}
            ).start()
            services.append(unbounded)
            whole, whole_seconds = _timed(
                Client(unbounded.url, client.headers["Authorization"].removeprefix("Bearer ")), path
            )
            report["unbounded_summary"] = {
                "status": whole.status,
                "seconds": round(whole_seconds, 3),
                "rpcs": _rpcs(whole),
            }
        print(json.dumps(report, indent=2))
        return 0
    finally:
        for service in services:
            service.stop()
        emulator.stop()


if __name__ == "__main__":
    sys.exit(main())
