"""Streaming export (issue 17): events/s, and memory that does not grow with the export.

Starts Google's Firestore-mode emulator and a real `metering serve` (gunicorn, one
worker, 4 threads), seeds one meter of the `demo` org with `--events` events (default
100,000, written straight into the emulator as the service stores them; 1,000 users, two
dimensions, metadata), then times, at two sizes (the whole period, and a period holding
about a tenth of it):

- HTTP NDJSON: `GET /v1/billing/meter-events/export`, read in 64 KiB chunks and
  counted (the trailer must say complete and give the count); the worker's RSS is
  sampled every 50 ms during the export, and its growth over the RSS before it is
  reported: constant memory means the same growth at both sizes;
- HTTP CSV: the same as CSV (one read of each event: the header comes from the meter);
- CLI: `metering events export demo --meter ID > /dev/null`, its peak RSS (sampled
  every 50 ms) and events/s.

    .venv/bin/python benchmarks/export.py [--events 100000] [--answer-seconds S]
        [--deadline-seconds S]
        [--sizes tenth,whole] [--formats ndjson,csv,cli]

An NDJSON export is followed across answers by its trailers' cursors; each export
reports its answers, the slowest answer and the slowest time to the status line.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Client, Service, metering_command, scratch_dir, start_emulator

EXPORT = "/v1/billing/meter-events/export"
START = datetime.now(UTC).replace(microsecond=0) - timedelta(days=20)
SPAN = timedelta(days=19)
#: Answers in a row that brought nothing (each first page slower than the request
#: deadline) after which an export is reported stalled instead of retried forever.
STALLED_ANSWERS = 3


def _seed(service: Service, events: int) -> str:
    """A meter of the demo org (over HTTP) and its events, written straight into the
    emulator as the service stores them (500 per commit, in a child process: gRPC stays
    out of this one): exporting needs stored events, not the ingestion path, and seeding
    100,000 of them over HTTP on a shared 2-core machine would take most of the run."""
    client = Client(service.url, service.api_key)  # type: ignore[arg-type]
    meter = client.post_json(
        "/v1/billing/meters",
        {"name": "Tokens", "eventName": "tokens", "dimensions": ["model", "region"]},
    )
    context = multiprocessing.get_context("spawn")
    child = context.Process(
        target=_seed_child, args=(service.emulator_host, service.env["METERING_PROJECT"],
                                  meter["id"], events)
    )  # fmt: skip
    child.start()
    child.join()
    assert child.exitcode == 0, child.exitcode
    return meter["id"]


def _seed_child(host: str, project: str, meter_id: str, events: int) -> None:
    os.environ["DATASTORE_EMULATOR_HOST"] = host
    from app.config import Config
    from app.datastore import make_client
    from app.models import ids
    from app.services import events as event_service
    from app.services import ingest
    from app.storage import entities, rpc
    from tests.support.encoding import event_entity

    config = Config(project=project, emulator_host=host)
    ids.configure(config.hashid_salt)
    now = datetime.now(UTC)
    step = SPAN / events
    with make_client(config).context(namespace="demo"):
        code = ids.namespace_code("demo")
        for first in range(0, events, 500):
            mutations = []
            for n in range(first, min(events, first + 500)):
                key_id = event_service.idempotent_id(meter_id, f"seed-{n}")
                entity = event_entity(
                    key_pb=entities.key("meter-event", key_id),
                    public_id=ingest._public_id(key_id, code),
                    meter_id=meter_id,
                    user_id=f"user-{n % 1000}",
                    value=n % 997,
                    timestamp=START + step * n,
                    idempotency=f"seed-{n}",
                    dimensions={"model": f"m{n % 5}", "region": f"r{n % 3}"},
                    metadata={"request": f"req-{n}", "attempt": n % 3},
                    now=now,
                )
                mutations.append(rpc.Mutation(insert=entity))
            rpc.commit(mutations)


def _rss_kib(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):  # it has exited
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class RssSampler:
    """The highest RSS of a process while a block runs (sampled every 50 ms)."""

    def __init__(self, pid: int):
        self.pid, self.before, self.peak = pid, _rss_kib(pid), 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_kib(self.pid))
            self._stop.wait(0.05)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_kib(self.pid))


def _http_export(service: Service, params: dict) -> dict:
    """One export over HTTP, following the trailers' cursors (an NDJSON answer stops at
    its time bound, or when a page's read is cut, and says where to go on): events, wall
    time, answers, the slowest answer and the slowest time to the status line."""
    host, port = service.url.removeprefix("http://").rsplit(":", 1)
    worker = service.worker_pids()[0]
    started = time.monotonic()
    answers, events, cursor, stalled = [], 0, None, 0
    with RssSampler(worker) as rss:
        while True:
            connection = http.client.HTTPConnection(host, int(port), timeout=900)
            asked = time.monotonic()
            query = {**params, **({"cursor": cursor} if cursor else {})}
            connection.request(
                "GET",
                EXPORT + "?" + urlencode(query),
                headers={"Authorization": f"Bearer {service.api_key}"},
            )
            response = connection.getresponse()
            status_after = time.monotonic() - asked
            assert response.status == 200, response.read()[:300]
            newlines, tail = 0, b""
            while chunk := response.read(65536):
                newlines += chunk.count(b"\n")
                tail = (tail + chunk)[-400:]
            connection.close()
            answers.append((round(status_after, 2), round(time.monotonic() - asked, 2)))
            if params.get("format") == "csv":
                events += newlines - 1  # the header row
                break
            trailer = json.loads(tail.strip().splitlines()[-1])["export"]
            assert trailer["count"] == newlines - 1, trailer
            events += trailer["count"]
            print(f"  answer {len(answers)}: {answers[-1]}, {trailer}", flush=True)
            if trailer["complete"]:
                break
            stalled = stalled + 1 if trailer["count"] == 0 else 0
            if stalled == STALLED_ANSWERS:  # no page came within the request deadline
                break
            cursor = trailer["cursor"]
    seconds = time.monotonic() - started
    return {
        "events": events,
        "seconds": round(seconds, 2),
        "events_per_s": round(events / seconds),
        "stalled": stalled == STALLED_ANSWERS,
        "answers": len(answers),
        "slowest_status_s": max(first for first, _whole in answers),
        "slowest_answer_s": max(whole for _first, whole in answers),
        "worker_rss_before_mib": round(rss.before / 1024, 1),
        "worker_rss_growth_mib": round((rss.peak - rss.before) / 1024, 1),
    }


def _cli_export(service: Service, meter_id: str, since: str, until: str) -> dict:
    started = time.monotonic()
    with open(os.devnull, "wb") as sink:
        child = subprocess.Popen(
            [
                *metering_command(),
                "events",
                "export",
                "demo",
                "--meter",
                meter_id,
                "--since",
                since,
                "--until",
                until,
                "--no-progress",
            ],
            env=service.env,
            stdout=sink,
            stderr=subprocess.PIPE,
        )
        with RssSampler(child.pid) as rss:
            _out, err = child.communicate()
    seconds = time.monotonic() - started
    assert child.returncode == 0, err.decode()[-500:]
    report = json.loads(err.decode().strip().splitlines()[-1])
    return {
        "events": report["exported"],
        "seconds": round(seconds, 2),
        "events_per_s": round(report["exported"] / seconds),
        "peak_rss_mib": round(rss.peak / 1024, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument(
        "--answer-seconds",
        type=float,
        default=None,
        help="METERING_EXPORT_ANSWER_SECONDS of the service (its default: 300)",
    )
    parser.add_argument(
        "--deadline-seconds",
        type=float,
        default=None,
        help="METERING_REQUEST_DEADLINE_SECONDS of the service (its default: 30)",
    )
    parser.add_argument("--sizes", default="tenth,whole", help="tenth,whole (both)")
    parser.add_argument("--formats", default="ndjson,csv,cli", help="ndjson,csv,cli (all)")
    args = parser.parse_args()
    workdir = scratch_dir()
    emulator = start_emulator("firestore", workdir)
    extra = {}
    if args.answer_seconds is not None:
        extra["METERING_EXPORT_ANSWER_SECONDS"] = str(args.answer_seconds)
    if args.deadline_seconds is not None:
        extra["METERING_REQUEST_DEADLINE_SECONDS"] = str(args.deadline_seconds)
    service = Service(emulator.host, 1, 4, workdir, extra_env=extra).start()
    try:
        started = time.monotonic()
        meter_id = _seed(service, args.events)
        seeded = time.monotonic() - started
        whole = {"periodStart": START.isoformat(), "periodEnd": (START + SPAN).isoformat()}
        tenth = {"periodStart": START.isoformat(), "periodEnd": (START + SPAN / 10).isoformat()}
        report: dict = {
            "events": args.events,
            "seeded_per_s": round(args.events / seeded),
            "cpus": os.cpu_count(),
        }
        sizes, formats = args.sizes.split(","), args.formats.split(",")
        for name, period in (("tenth", tenth), ("whole", whole)):
            if name not in sizes:
                continue
            report[name] = {}
            for form in formats:
                if form == "cli":
                    figures = _cli_export(
                        service, meter_id, period["periodStart"], period["periodEnd"]
                    )
                else:
                    query = {"meterId": meter_id, "format": form, **period}
                    figures = _http_export(service, query)
                report[name][form] = figures
                print(name, form, json.dumps(figures), flush=True)
        print(json.dumps(report, indent=2))
        return 0
    finally:
        service.stop()
        emulator.stop()


if __name__ == "__main__":
    sys.exit(main())
