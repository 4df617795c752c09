"""The dispatcher alone: a backlog of messages to one endpoint, from their commit to the
receiver (the stage `commit -> receipt` of `alerts_exact.py`), old code against new.

One process: Google's Firestore-mode emulator, the app with its background delivery loop
(as in `metering serve`, one worker), and a loopback receiver with a real listen backlog
that answers 200 at once. Each round stores `--messages` `webhook.test` messages for one
endpoint in one commit (as the evaluator stores a chunk's alerts), wakes the loop as that
commit does (`outbox.wake_org`), and measures:

- the time from the commit to each message's first arrival (median, p95, last);
- the Datastore RPCs the process made until every attempt was recorded (commits apart),
  and the CPU seconds of the process meanwhile (the receiver's share included).

`--root` imports the app from another checkout, so one script measures both:

    .venv/bin/python benchmarks/webhooks_backlog.py
    .venv/bin/python benchmarks/webhooks_backlog.py --root /work/wt-base   # old code
"""

from __future__ import annotations

import argparse
import functools
import http.server
import importlib
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=460, help="at most 500: one commit")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--wait", type=float, default=180.0)
    return parser.parse_args(argv)


class Receiver:
    """Answers 200 at once and notes each webhook-id's first arrival (monotonic)."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver.lock:
                    receiver.first.setdefault(self.headers["webhook-id"], time.monotonic())
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            request_queue_size = 128
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(args.root))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from google.cloud import ndb

    from app import create_app
    from app.config import Config
    from app.models import utcnow
    from app.models.webhook import PENDING, WebhookEndpoint, WebhookMessage
    from app.services.webhooks import outbox
    from app.storage import metrics

    # After the app: common's own import of the app then finds `--root`'s.
    common = importlib.import_module("common")

    rpcs: Counter[str] = Counter()
    counting = metrics._count

    def count(usage, rpc_name, request, response):
        rpcs[rpc_name] += 1
        counting(usage, rpc_name, request, response)

    metrics._count = count
    workdir = common.scratch_dir()
    emulator = common.start_emulator("firestore", workdir)
    receiver = Receiver()
    try:
        config = Config(
            project="metering-bench",
            emulator_host=emulator.host,
            hashid_salt="bench-salt",
            admin_token="bench-admin",
            read_budget_per_minute=0,
            unauthenticated_per_minute=0,
            background_delivery_seconds=1.0,
        )
        app = create_app(config)
        client = app.test_client()
        admin = {"Authorization": "Bearer bench-admin"}
        org = client.post("/v1/admin/orgs", json={"name": "bench"}, headers=admin).get_json()
        answer = client.post(
            "/v1/webhooks/endpoints",
            json={"url": receiver.url, "eventTypes": ["webhook.test"]},
            headers={"Authorization": f"Bearer {org['apiKey']}"},
        )
        assert answer.status_code == 201, answer.get_data(as_text=True)
        namespace = org["namespace"]
        ndb_client = app.extensions["ndb"]
        print(f"code: {args.root} ; machine busy since boot {common.machine_busy()}")
        for number in range(args.rounds):
            with ndb_client.context(namespace=namespace):
                (endpoint,) = WebhookEndpoint.query().fetch()
                now = utcnow()
                stored = []
                for index in range(args.messages):
                    event_id = outbox.event_id("bench", str(number), str(index))
                    stored += outbox.messages(
                        [endpoint], "webhook.test", event_id, {"index": index}, now
                    )
                ndb.transaction(functools.partial(ndb.put_multi, stored))  # one commit
            ids = {message.message_id for message in stored}
            rpcs.clear()
            cpu, woken = time.process_time(), time.monotonic()
            outbox.wake_org(namespace)
            deadline = woken + args.wait
            while time.monotonic() < deadline:
                with receiver.lock:
                    if ids <= set(receiver.first):
                        break
                time.sleep(0.02)
            with ndb_client.context(namespace=namespace):
                while time.monotonic() < deadline:  # until every attempt is recorded
                    query = WebhookMessage.query(WebhookMessage.status == PENDING)
                    if not query.fetch(1, keys_only=True):
                        break
                    time.sleep(0.1)
                retried = Counter(
                    str(message.attempts[0]["error"])
                    for message in WebhookMessage.query().fetch()
                    if message.message_id in ids and message.attempt_count > 1
                )
            cpu = time.process_time() - cpu
            with receiver.lock:
                late = sorted(receiver.first[i] - woken for i in ids if i in receiver.first)
            p95 = statistics.quantiles(late, n=20)[-1] if len(late) >= 20 else max(late)
            print(
                f"round {number + 1}: {len(late)}/{len(ids)} received; commit -> receipt median "
                f"{statistics.median(late):.2f}s, p95 {p95:.2f}s, last {late[-1]:.2f}s; "
                f"RPCs {sum(rpcs.values())} (commits {rpcs['commit']}, lookups "
                f"{rpcs['lookup']}, queries {rpcs['run_query']}); CPU {cpu:.1f}s; "
                f"retried {sum(retried.values())} {dict(retried)}",
                flush=True,
            )
    finally:
        receiver.server.shutdown()
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
