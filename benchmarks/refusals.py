"""What refusing a hostile body costs, next to accepting a valid batch (issue 11, item 1).

Starts Google's Firestore-mode emulator and `metering serve --workers 1 --threads 1`
(so requests run one at a time and the service's CPU per request is its own), creates
a meter over HTTP with the demo org's key, then sends each case `--runs` times, after
one untimed warm-up, one request at a time:

- valid batches: 100 small events (unique idempotency keys, so each is stored); 100
  events whose metadata holds the most JSON values 8 KiB allows (2,700 numbers, 2,000
  empty objects, 800 one-field objects or an object of 750 keys, each; 0.5 to 0.7 MB in
  all), the numbers once more with 101-digit userIds (a digit run that long makes the
  service parse every integer through its checking hook); and the largest
  batch, about 1 MB: those 2,000 objects plus 16 dimensions of 150 characters and a
  userId and idempotency key of about 500 characters, in every event;
- hostile bodies of at most the body limit (1 MiB): 349,000 empty events (record and
  cancel), half a million numbers as events (alone, then a NaN, after a 1e400, after a
  101-digit integer), 130,000 objects the last of which names a field twice, 262,000
  strings then a lone surrogate, 1 MB of unknown field names in one event or spread over
  100 events, a 1 MB field name, an `events` object of 80,000 keys, 100 events with two
  bad fields each, a meter's metadata of 8,000 over-long keys, 60 levels of 16 KB field
  names above a NaN, and the same levels each naming its field twice.

For each case it prints the status, the body and answer sizes, the service's CPU per
request (user+system of gunicorn's whole process tree, from /proc, over all runs of the
case / runs) and the median wall time seen by the client. The script exits 1 if any
hostile answer is not a 400 or 413, is 64 KB or more, or costs more service CPU than
the costliest valid batch.

    .venv/bin/python benchmarks/refusals.py [--runs 20]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

EVENTS, CANCEL, METERS = (
    "/v1/billing/meter-events",
    "/v1/billing/meter-events/cancel",
    "/v1/billing/meters",
)
LIMIT = 1 << 20  # METERING_MAX_BODY_BYTES's default
SMALL = 64 * 1024


def compact(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def filled(prefix: bytes, item: bytes, suffix: bytes) -> bytes:
    """`prefix item,item,... suffix`: as many items as the body limit holds."""
    count = (LIMIT - len(prefix) - len(suffix) + 1) // (len(item) + 1)
    return prefix + b",".join([item] * count) + suffix


def valid_cases(meter_id: str, wide_meter_id: str):
    """(name, path, body maker): a new body per request, so every event is new."""
    counter = iter(range(10**9))

    def batch(meter: str, user: str = "u", key_padding: int = 0, **fields):
        def make():
            n = next(counter)
            return compact(
                {
                    "events": [
                        {
                            "meterId": meter,
                            "value": i,
                            **fields,
                            "userId": f"{i % 10}{user}"[:500],
                            "idempotency": f"{n}-{i}-" + "k" * key_padding,
                        }
                        for i in range(100)
                    ]
                }
            )

        return make

    dimensions = {f"d{j:02d}": "v" * 150 for j in range(16)}
    return [
        ("valid: 100 small events", EVENTS, batch(meter_id)),
        (
            "valid: 100 events, metadata of 2,700 numbers",
            EVENTS,
            batch(meter_id, metadata={"m": [0] * 2_700}),
        ),
        (
            "valid: 100 events, metadata of 2,000 objects",
            EVENTS,
            batch(meter_id, metadata={"m": [{}] * 2_000}),
        ),
        (
            "valid: 100 events, metadata of 750 keys",
            EVENTS,
            batch(meter_id, metadata={"m": {f"k{j}": 0 for j in range(750)}}),
        ),
        (
            "valid: 100 events, metadata of 800 one-field objects",
            EVENTS,
            batch(meter_id, metadata={"m": [{"a": 0}] * 800}),
        ),
        (
            "valid: 100 events, metadata of 2,700 numbers, 101-digit userIds",
            EVENTS,
            batch(meter_id, metadata={"m": [0] * 2_700}, user="9" * 101),
        ),
        (
            "valid: the largest batch (1 MB)",
            EVENTS,
            batch(
                wide_meter_id,
                metadata={"m": [{}] * 2_000},
                dimensions=dimensions,
                user="u" * 500,
                key_padding=480,
            ),
        ),
    ]


def hostile_cases(meter_id: str):
    long_name = "n" * (LIMIT - 200)
    level = "p" * 16_000
    names = b",".join(b'"unknown_field_%06d":0' % i for i in range(40_000))
    cases = {
        "349,000 empty events": (EVENTS, filled(b'{"events":[', b"{}", b"]}")),
        "349,000 empty cancellations": (CANCEL, filled(b'{"events":[', b"{}", b"]}")),
        "500,000 numbers as events": (EVENTS, filled(b'{"events":[', b"0", b"]}")),
        "500,000 numbers, then NaN": (EVENTS, filled(b'{"events":[', b"0", b",NaN]}")),
        "1e400, then 500,000 numbers": (EVENTS, filled(b'{"events":[1e400,', b"0", b"]}")),
        "a 101-digit integer, then 500,000 numbers": (
            EVENTS,
            filled(b'{"events":[' + b"9" * 101 + b",", b"0", b"]}"),
        ),
        "130,000 objects, the last naming a field twice": (
            EVENTS,
            filled(b'{"events":[', b'{"a":0}', b',{"a":1,"a":2}]}'),
        ),
        "262,000 strings, then a lone surrogate": (
            EVENTS,
            filled(b'{"events":[', b'"a"', b',"\\ud800"]}'),
        ),
        "1 MB of unknown names, one event": (
            EVENTS,
            b'{"events":[{"userId":"u","value":1,' + names + b"}]}",
        ),
        "100 events of 150 unknown names": (
            EVENTS,
            compact(
                {
                    "events": [
                        {
                            "meterId": meter_id,
                            "userId": "u",
                            "value": 1,
                            **{f"extra_{j:04d}_{'x' * 40}": 0 for j in range(150)},
                        }
                        for _ in range(100)
                    ]
                }
            ),
        ),
        "a 1 MB field name": (
            EVENTS,
            compact({"events": [{"meterId": meter_id, "userId": "u", long_name: 1}]}),
        ),
        "events: an object of 80,000 keys": (
            EVENTS,
            b'{"events":{' + b",".join(b'"k%d":{}' % i for i in range(80_000)) + b"}}",
        ),
        "100 events, 2 bad fields each": (
            EVENTS,
            compact(
                {"events": [{"meterId": meter_id, "userId": 7, "value": "1"} for _ in range(100)]}
            ),
        ),
        "meter metadata: 8,000 long keys": (
            METERS,
            compact(
                {
                    "name": "x",
                    "eventName": "x",
                    "metadata": {"k" * 101 + str(i): 0 for i in range(8_000)},
                }
            ),
        ),
        "60 levels of 16 KB names, NaN": (
            METERS,
            ("".join(f'{{"{level}":' for _ in range(60)) + "NaN" + "}" * 60).encode(),
        ),
        "30 levels naming a field twice": (
            METERS,
            ("".join(f'{{"{level}":1,"{level}":' for _ in range(30)) + "1" + "}" * 30).encode(),
        ),
    }
    return [(name, path, (lambda body=body: body)) for name, (path, body) in cases.items()]


def measure(service, client, path: str, make_body, runs: int) -> dict:
    """Service CPU per request as the whole run's CPU / runs (the kernel counts CPU in
    10 ms ticks, too coarse for one request), wall time as a median."""
    cpu = common.TreeCpu(service.process.pid)
    client.request("POST", path, make_body())  # warm-up, untimed
    bodies = [make_body() for _ in range(runs)]  # made before the CPU is counted
    statuses, sizes, walls = set(), set(), []
    before = cpu.snapshot()
    for body in bodies:
        started = time.perf_counter()
        answer = client.request("POST", path, body)
        walls.append(time.perf_counter() - started)
        statuses.add(answer.status)
        sizes.add(len(answer.body))
    used = common.TreeCpu.used(before, cpu.snapshot()).seconds
    return {
        "status": "/".join(map(str, sorted(statuses))),
        "body": len(bodies[-1]),
        "answer": max(sizes),
        "cpu_ms": used / runs * 1e3,
        "wall_ms": statistics.median(walls) * 1e3,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="timed requests per case")
    args = parser.parse_args(argv)
    workdir = common.scratch_dir()
    print(
        f"metering refusals benchmark — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, load average "
        f"{os.getloadavg()[0]:.2f}; logs in {workdir}",
        flush=True,
    )
    emulator = common.start_emulator("firestore", workdir)
    service = None
    try:
        service = common.Service(emulator.host, 1, 1, workdir).start()
        client = common.Client(service.url, service.api_key, timeout=300)
        meter_id = client.post_json(METERS, {"name": "Tokens", "eventName": "tokens"})["id"]
        wide_id = client.post_json(
            METERS,
            {"name": "Wide", "eventName": "wide", "dimensions": [f"d{j:02d}" for j in range(16)]},
        )["id"]
        valid = valid_cases(meter_id, wide_id)
        rows = [
            (name, measure(service, client, path, make, args.runs))
            for name, path, make in valid + hostile_cases(meter_id)
        ]
    finally:
        if service is not None:
            service.stop()
        emulator.stop()
    print(
        f"\n{args.runs} requests per case, one at a time; service CPU: gunicorn's process "
        "tree (1 worker x 1 thread), whole run / requests; wall: median\n"
    )
    print("| case | status | body bytes | answer bytes | service CPU ms | wall ms |")
    print("|---|---|---:|---:|---:|---:|")
    for name, row in rows:
        print(
            f"| {name} | {row['status']} | {row['body']:,} | {row['answer']:,} | "
            f"{row['cpu_ms']:.1f} | {row['wall_ms']:.1f} |"
        )
    largest = max(row["cpu_ms"] for _, row in rows[1 : len(valid)])
    failures = [
        name
        for name, row in rows[len(valid) :]
        if row["status"] not in ("400", "413") or row["answer"] >= SMALL or row["cpu_ms"] > largest
    ]
    print(
        f"\nhostile answers all 400/413, < {SMALL // 1024} KB and at most the CPU of the "
        f"costliest valid batch ({largest:.1f} ms): "
        + ("yes" if not failures else "NO: " + ", ".join(failures))
    )
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
