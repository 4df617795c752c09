"""What a customer portal token costs (issue 16): signing and verifying one, in CPU, and
a portal summary against the same summary read with an org API key, over HTTP.

- `sign` / `verify`: microseconds per token (`app.services.portal.tokens`), no I/O;
- `http`: `metering serve` (1 worker, 4 threads) on the Firestore-mode emulator; one
  user's day-by-day month summary, read `--requests` times with a portal token
  (`GET /v1/portal/meters/<id>/summary`) and with the org's key
  (`GET /v1/billing/meter-events/summary?userId=...`): latency percentiles as the
  client sees them, and the Datastore RPCs and entities each request cost
  (`X-Datastore-Usage`). A key is looked up on every request (so a revocation applies on
  the next); a token costs no read once its org's policy is cached (2 s).

    .venv/bin/python benchmarks/portal.py [--requests 300] [--no-http]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import UTC, datetime, timedelta

from common import Client, Service, scratch_dir, start_emulator  # puts the repo on sys.path

from app.services.portal import tokens

KEYS = (("bench", "b" * 32),)


def _per_call_us(function, repeat: int) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        function()
    return (time.perf_counter() - started) / repeat * 1e6


def tokens_cpu(repeat: int) -> dict[str, float]:
    claims = tokens.PortalToken("acme", 42, "user-42", ("meter-id-1",), 1, 2**41)
    token = tokens.sign(claims, KEYS)
    return {
        "sign_us": _per_call_us(lambda: tokens.sign(claims, KEYS), repeat),
        "verify_us": _per_call_us(lambda: tokens.verify(token, KEYS), repeat),
        "token_chars": len(token),
    }


def _timed(client: Client, path: str, count: int) -> dict[str, object]:
    latencies: list[float] = []
    usages: set[str] = set()
    for _ in range(count):
        started = time.perf_counter()
        answer = client.request("GET", path)
        latencies.append((time.perf_counter() - started) * 1000)
        if answer.status != 200:
            raise RuntimeError(f"GET {path}: {answer.status} {answer.body[:300]!r}")
        usages.add(answer.usage or "")
    latencies.sort()
    return {
        "median_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 2),
        "datastore": sorted(usages),
    }


def http(requests: int) -> dict[str, object]:
    workdir = scratch_dir()
    emulator = start_emulator("firestore", workdir)
    service = Service(
        emulator.host,
        workers=1,
        threads=4,
        workdir=workdir,
        extra_env={"METERING_PORTAL_SIGNING_KEYS": f"bench:{'b' * 32}"},
    ).start()
    try:
        assert service.api_key is not None
        org = Client(service.url, service.api_key)
        meter = org.post_json(
            "/v1/billing/meters", {"name": "Tokens", "eventName": "tokens", "dimensions": ["model"]}
        )
        now = datetime.now(UTC)
        for day in range(20):
            at = (now - timedelta(days=day, minutes=5)).isoformat()
            org.post_json(
                "/v1/billing/meter-events",
                {
                    "events": [
                        {
                            "meterId": meter["id"],
                            "userId": "user-42",
                            "value": 10 + i,
                            "timestamp": at,
                            "idempotency": f"{day}-{i}",
                            "dimensions": {"model": "m" + str(i % 3)},
                        }
                        for i in range(20)
                    ]
                },
            )
        issued = org.post_json("/v1/portal/tokens", {"userId": "user-42"})
        customer = Client(service.url, issued["token"])
        start = (now - timedelta(days=25)).date().isoformat()
        query = f"periodStart={start}&windowSize=day&timeZone=Europe%2FParis"
        portal_path = f"/v1/portal/meters/{meter['id']}/summary?{query}"
        key_path = f"/v1/billing/meter-events/summary?meterId={meter['id']}&userId=user-42&{query}"
        assert customer.get_json(portal_path)["value"] == org.get_json(key_path)["value"]
        _timed(customer, portal_path, 20), _timed(org, key_path, 20)  # warm both paths
        return {
            "portal_token": _timed(customer, portal_path, requests),
            "org_key": _timed(org, key_path, requests),
        }
    finally:
        service.stop()
        emulator.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--no-http", action="store_true")
    args = parser.parse_args()
    results: dict[str, object] = {"tokens": tokens_cpu(args.repeat)}
    if not args.no_http:
        results["summary"] = http(args.requests)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
