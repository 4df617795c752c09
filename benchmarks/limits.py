"""Limit checks under concurrent recording: service-side latency beside the month summary.

One run starts Google's Firestore-mode emulator, a Redis server (NDB's global cache) and
`metering serve` (2 workers x 8 threads) as a tenant would run them, with a sum meter
(4 dimension values) and a monthly limit for every user. It records `--history` events
of the hot user earlier this month (so the month summary has days of rollups to read),
waits until the limit's counters are trusted (the cache period plus the request
deadline), then:

- `--clients` threads each record `--rate` batches of `--batch` events per second (half
  of each batch for the hot user, the rest for other users; `--rate 0`: without pause),
  each event with an idempotency key;
- one more client alternates a limit check and the same user's month summary
  (`--runs` of each).

Latency is the service's own: the `latency` of its access log line for each request
(`app/logs.py`), so the client's and the network's time are not in it. It prints the
median and 99th percentile of both, their ratio, the entities each check read
(`X-Datastore-Usage`), and whether the last check (after the recorders stopped) equals
the brute-force total of what was answered 201, and exits 1 if a bar is missed.

    .venv/bin/python benchmarks/limits.py [--clients 8] [--runs 400] [--history 3000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common

from tests.support.redis_server import RedisServer

BARS = {"check_median_ms": 5.0, "check_p99_ms": 25.0, "ratio_to_summary": 1 / 3}
HOT = "hot-user"
MODELS = ("gpt-4", "gpt-4o", "claude", "llama")
DEADLINE_SECONDS = 10  # the service's request deadline: counters are trusted ~12 s after


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8, help="concurrent recording clients")
    parser.add_argument("--batch", type=int, default=20, help="events per recorded batch")
    parser.add_argument(
        "--rate", type=float, default=5.0, help="batches per second per client (0: no pause)"
    )
    parser.add_argument("--runs", type=int, default=400, help="checks (and summaries) timed")
    parser.add_argument("--history", type=int, default=3000, help="hot user's earlier events")
    return parser.parse_args(argv)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def month_start(now: datetime) -> datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def events(prefix: str, count: int, user_of, moment_of) -> list[dict]:
    return [
        {
            "eventName": "tokens",
            "userId": user_of(n),
            "value": 1 + n % 10,
            "idempotency": f"{prefix}-{n}",
            "timestamp": rfc3339(moment_of(n)),
            "dimensions": {"model": MODELS[n % len(MODELS)]},
        }
        for n in range(count)
    ]


class Recorder(threading.Thread):
    """One client recording until told to stop; keeps the hot user's acknowledged total."""

    def __init__(self, url: str, key: str, number: int, args, stop: threading.Event):
        super().__init__(daemon=True)
        self.client = common.Client(url, key, timeout=60)
        self.number, self.batch, self.stop_event = number, args.batch, stop
        self.pause = 1 / args.rate if args.rate > 0 else 0.0
        self.hot_total = 0
        self.batches = 0
        self.resent = 0

    def run(self) -> None:
        while not self.stop_event.is_set():
            now = datetime.now(UTC)
            batch = events(
                f"c{self.number}-b{self.batches}",
                self.batch,
                lambda n: HOT if n % 2 == 0 else f"user-{self.number}-{n % 7}",
                lambda n, now=now: now,
            )
            self.send(batch)
            self.hot_total += sum(e["value"] for e in batch if e["userId"] == HOT)
            self.batches += 1
            self.stop_event.wait(self.pause)

    def send(self, batch: list[dict]) -> None:
        """Send the batch until it is answered 201, as a client does: a 503 or a cut
        connection may come after its commit, and the same idempotency keys make a resend
        harmless (before, a dead recorder thread left such a batch out of the brute
        force)."""
        for attempt in range(20):
            try:
                self.client.post_json("/v1/billing/meter-events", {"events": batch})
                return
            except (RuntimeError, OSError) as error:
                self.resent += 1
                print(f"recorder {self.number}: resending after {error}", file=sys.stderr)
                time.sleep(min(2.0, 0.1 * 2**attempt))
        raise RuntimeError(f"recorder {self.number}: a batch was refused 20 times")


def service_latencies(log_path: Path, offset: int) -> dict[str, list[float]]:
    """Milliseconds per request path, from the service's access log after `offset`."""
    found: dict[str, list[float]] = {}
    with open(log_path, "rb") as log:
        log.seek(offset)
        for line in log:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            http = record.get("httpRequest")
            if not http or http.get("status") != 200:
                continue
            found.setdefault(http["requestUrl"], []).append(
                float(http["latency"].rstrip("s")) * 1000
            )
    return found


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main(argv=None) -> int:
    args = parse_args(argv)
    workdir = common.scratch_dir()
    emulator = common.start_emulator("firestore", workdir)
    redis = RedisServer(str(workdir / "redis.log")).start()
    extra = {
        "REDIS_CACHE_URL": redis.url,
        "METERING_REQUEST_DEADLINE_SECONDS": str(DEADLINE_SECONDS),
    }
    service = common.Service(emulator.host, 2, 8, workdir, extra_env=extra).start()
    stop = threading.Event()
    try:
        assert service.api_key, "metering serve printed no API key"
        client = common.Client(service.url, service.api_key)
        meter = client.post_json(
            "/v1/billing/meters",
            {"name": "Tokens", "eventName": "tokens", "dimensions": ["model"]},
        )
        client.post_json(
            "/v1/billing/limits", {"meterId": meter["id"], "limit": 10**12, "period": "month"}
        )
        now = datetime.now(UTC)
        start = month_start(now)
        span = max((now - start).total_seconds() - 600, 60)
        history = events(
            "history",
            args.history,
            lambda n: HOT,
            lambda n: start + timedelta(seconds=span * n / args.history),
        )
        for first in range(0, len(history), 100):
            client.post_json("/v1/billing/meter-events", {"events": history[first : first + 100]})
        history_total = sum(e["value"] for e in history)
        time.sleep(DEADLINE_SECONDS + 3)  # until every process counts (index.trust_delay)

        recorders = [
            Recorder(service.url, service.api_key, n, args, stop) for n in range(args.clients)
        ]
        for recorder in recorders:
            recorder.start()
        time.sleep(2)  # recorders in full swing
        check_path = "/v1/billing/limits/check?" + urlencode(
            {"meterId": meter["id"], "userId": HOT}
        )
        summary_path = "/v1/billing/meter-events/summary?" + urlencode(
            {
                "meterId": meter["id"],
                "userId": HOT,
                "periodStart": rfc3339(start),
                "periodEnd": rfc3339((start + timedelta(days=32)).replace(day=1)),
            }
        )
        client.get_json(check_path)  # the first check of (user, month) reads its seed
        offset = service.log_path.stat().st_size
        reads = []
        overran = {"check": 0, "summary": 0}  # 503s (past the deadline on a loaded machine)
        for _ in range(args.runs):
            answer = client.request("GET", check_path)
            assert answer.status in (200, 503), answer.body
            if answer.status == 200:
                reads.append(answer.usage)
            else:
                overran["check"] += 1
            answer = client.request("GET", summary_path)
            assert answer.status in (200, 503), answer.body
            overran["summary"] += answer.status == 503
        stop.set()
        for recorder in recorders:
            recorder.join()
        recorded = sum(r.batches for r in recorders)
        final = client.get_json(check_path)["used"]
        expected = history_total + sum(r.hot_total for r in recorders)
        time.sleep(0.5)  # the access log line of the last request
        latencies = service_latencies(service.log_path, offset)
    finally:
        stop.set()
        service.stop()
        redis.kill()
        emulator.stop()

    checks = latencies.get("/v1/billing/limits/check", [])
    summaries = latencies.get("/v1/billing/meter-events/summary", [])
    figures = {
        "check_median_ms": statistics.median(checks),
        "check_p99_ms": percentile(checks, 0.99),
        "summary_median_ms": statistics.median(summaries),
        "summary_p99_ms": percentile(summaries, 0.99),
    }
    ratio = figures["check_median_ms"] / figures["summary_median_ms"]
    resent = sum(r.resent for r in recorders)
    print(
        f"{args.clients} recording clients, {recorded} batches of {args.batch} while timing"
        f" ({resent} sent again after a 503 or a cut connection)"
    )
    print(f"checks: {len(checks)}, summaries: {len(summaries)} (service-side latency, ms)")
    for label, name in (("limit check  ", "check"), ("month summary", "summary")):
        median, p99 = figures[f"{name}_median_ms"], figures[f"{name}_p99_ms"]
        print(f"  {label}  median {median:.2f}  p99 {p99:.2f}")
    print(f"  check / summary (medians) {ratio:.3f}")
    print(f"  X-Datastore-Usage of checks: {sorted(set(reads))}")
    print(f"answered 503 (past the deadline, not in the figures): {overran}")
    print(f"exact: final check {final} against brute force {expected}: {final == expected}")
    missed = [name for name in ("check_median_ms", "check_p99_ms") if figures[name] > BARS[name]]
    if ratio > BARS["ratio_to_summary"]:
        missed.append("ratio_to_summary")
    if final != expected:
        missed.append("exact")
    if overran["check"]:
        missed.append("checks answered 503")
    if missed:
        print("MISSED: " + ", ".join(missed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
