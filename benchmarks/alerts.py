"""Alert latency under `metering serve`: from the 201 of the batch that crossed a threshold
to the receiver getting its `alert.triggered` message (issue 14).

`--clients` threads record usage for a user of their own (`--batches` batches of
`--batch` events of value 1, `--pause` apart), so each knows which of its batches took its
user's month to each threshold of a per-user rule (every `--step`). An org-wide daily rule
in Asia/Kolkata adds the evaluator's work of a second spec. The loopback receiver notes
when each message arrives; every signature is verified with the `standardwebhooks`
package, and each (user, threshold) must arrive, exactly one distinct `webhook-id` each.
Bars (issue 14): median <= 2 s, p95 <= 5 s.

    .venv/bin/python benchmarks/alerts.py            # 8 clients, 20 batches of 10 events
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time

from common import ROOT, Client, Service, scratch_dir, start_emulator

sys.path.insert(0, str(ROOT))

from standardwebhooks import Webhook

from tests.support.receiver import Receiver


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _crossings(receiver: Receiver, secret: str) -> dict[tuple[str, int], list[tuple[str, float]]]:
    """(userId, threshold) -> [(webhook-id, arrival)] of the per-user rule's messages."""
    verifier = Webhook(secret)
    found: dict[tuple[str, int], list[tuple[str, float]]] = {}
    for request in list(receiver.received):
        payload = verifier.verify(request.body, request.headers)
        data = payload["data"]
        if payload["type"] == "alert.triggered" and data["userId"] is not None:
            found.setdefault((data["userId"], data["threshold"]), []).append(
                (request.headers["webhook-id"], request.at)
            )
    return found


def run(service: Service, receiver: Receiver, args) -> tuple[float, float]:
    setup = Client(service.url, service.api_key)
    endpoint = setup.post_json(
        "/v1/webhooks/endpoints", {"url": receiver.url, "eventTypes": ["alert.triggered"]}
    )
    meter = setup.post_json("/v1/billing/meters", {"name": "tokens", "eventName": "tokens"})
    top = args.batches * args.batch
    thresholds = list(range(args.step, top + 1, args.step))[:10]
    setup.post_json(
        "/v1/billing/alerts",
        {
            "name": "per user",
            "meterId": meter["id"],
            "thresholds": thresholds,
            "scope": "user",
            "period": "month",
        },
    )
    setup.post_json(
        "/v1/billing/alerts",
        {
            "name": "org",
            "meterId": meter["id"],
            "thresholds": [top * args.clients // 2],
            "scope": "org",
            "period": "day",
            "timeZone": "Asia/Kolkata",
        },
    )
    time.sleep(args.after_rules)
    crossed_at: dict[tuple[str, int], float] = {}
    lock = threading.Lock()

    def client(number: int) -> None:
        own = Client(service.url, service.api_key)
        user, total = f"client-{number}", 0
        for _ in range(args.batches):
            body = {
                "events": [
                    {"meterId": meter["id"], "userId": user, "value": 1} for _ in range(args.batch)
                ]
            }
            answer = own.request("POST", "/v1/billing/meter-events", json.dumps(body).encode())
            at = time.time()
            assert answer.status == 201, answer.body
            before, total = total, total + args.batch
            with lock:
                for threshold in thresholds:
                    if before < threshold <= total:
                        crossed_at[(user, threshold)] = at
            time.sleep(args.pause)
        own.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got = _crossings(receiver, endpoint["secret"])
        if set(crossed_at) <= set(got):
            break
        time.sleep(0.2)
    got = _crossings(receiver, endpoint["secret"])
    missing = set(crossed_at) - set(got)
    extra = set(got) - set(crossed_at)
    repeated = [k for k, seen in got.items() if len({ident for ident, _ in seen}) != 1]
    waits = [min(at for _, at in got[k]) - crossed_at[k] for k in crossed_at if k in got]
    median, p95 = statistics.median(waits), _percentile(waits, 0.95)
    print(
        f"alerts: {len(crossed_at)} crossings by {args.clients} clients; 201 -> receiver "
        f"median {median * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max {max(waits) * 1000:.0f} "
        f"ms; missing {len(missing)}, unexpected {len(extra)}, "
        f"with more than one webhook-id {len(repeated)}"
    )
    if missing or extra or repeated:
        raise SystemExit("the crossings received are not exactly the crossings made")
    return median, p95


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch", type=int, default=10, help="events per batch")
    parser.add_argument("--step", type=int, default=20, help="the per-user thresholds' step")
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between batches")
    parser.add_argument(
        "--after-rules",
        type=float,
        default=0.0,
        help="seconds between creating the rules and recording (past ~31 s, tallies are no "
        "longer re-read from the summaries at every touch)",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    workdir = scratch_dir()
    emulator = start_emulator("firestore", workdir)
    receiver = Receiver().start()
    service = Service(emulator.host, args.workers, args.threads, workdir).start()
    try:
        median, p95 = run(service, receiver, args)
    finally:
        service.stop()
        receiver.stop()
        emulator.stop()
    ok = median <= 2.0 and p95 <= 5.0
    print(f"bars (median <= 2 s, p95 <= 5 s): {'met' if ok else 'NOT met'}")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
