"""What scoped keys cost a request (issue 16): latency and Datastore work of one small read
with the org's first key, a key holding only the scope the route needs, and a key that
lacks it (403), against `metering serve` and Google's emulator; and that the last-use
write is nobody's request (every answer says `written=0`, yet the list shows the use).

    .venv/bin/python benchmarks/keys.py --requests 400 --emulator firestore

Figures go in docs/benchmarks.md by hand.
"""

from __future__ import annotations

import argparse
import statistics
import time

from common import Client, Service, Usage, scratch_dir, start_emulator

PATH = "/v1/billing/meters?limit=1"


def run(client: Client, requests: int) -> tuple[list[float], Usage, set[int]]:
    latencies, usage, statuses = [], Usage(), set()
    for _ in range(requests):
        started = time.perf_counter()
        answer = client.request("GET", PATH)
        latencies.append((time.perf_counter() - started) * 1000)
        usage.add_header(answer.usage)
        statuses.add(answer.status)
    return latencies, usage, statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--emulator", choices=("firestore", "legacy"), default="firestore")
    args = parser.parse_args()
    workdir = scratch_dir()
    emulator = start_emulator(args.emulator, workdir)
    service = Service(emulator.host, workers=1, threads=4, workdir=workdir)
    try:
        service.start()
        first = Client(service.url, service.api_key)
        made = {
            scope: first.post_json("/v1/keys", {"scopes": [scope], "name": f"bench {scope}"})
            for scope in ("meters:read", "usage:read")
        }
        callers = {
            "first key (default scopes)": first,
            "meters:read only": Client(service.url, made["meters:read"]["apiKey"]),
            "usage:read only (403)": Client(service.url, made["usage:read"]["apiKey"]),
        }
        for caller in callers.values():  # warm up: connections, caches, imports
            run(caller, 20)
        print(f"{args.requests} x GET {PATH}, one client at a time, {args.emulator} emulator")
        for label, caller in callers.items():
            latencies, usage, statuses = run(caller, args.requests)
            cuts = statistics.quantiles(latencies, n=100)
            print(
                f"{label:28} status {sorted(statuses)}"
                f"  median {statistics.median(latencies):.2f} ms"
                f"  p99 {cuts[98]:.2f} ms  per request: rpcs {usage.rpcs / usage.responses:.2f}"
                f" read {usage.read / usage.responses:.2f} written {usage.written}"
            )
        time.sleep(1.0)  # the background writer's turn
        listed = {k["prefix"]: k for k in first.get_json("/v1/keys")["keys"]}
        for label, key in made.items():
            print(f"lastUsedAt of the {label} key: {listed[key['keyPrefix']]['lastUsedAt']}")
    finally:
        service.stop()
        emulator.stop()


if __name__ == "__main__":
    main()
