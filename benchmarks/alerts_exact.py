"""Alerts end to end: exactly the crossings, each once, signed, within the latency bars.

One run of `python benchmarks/alerts_exact.py` starts Google's Firestore-mode emulator
(which `metering serve` embeds by default; `--emulator legacy`: the legacy one), a
webhook receiver on loopback, and `metering serve` (2 workers x 8 threads, its background
delivery loop on) exactly as a tenant would run it. Then:

1. a sum meter, one webhook endpoint (the receiver) and five alert rules: each user per
   UTC month, each user per Asia/Kolkata day, one user per UTC month, the org per UTC day,
   the org per Asia/Kolkata month;
2. `--clients` threads record `--events` events in batches of `--batch`, users owned one
   client each (so a user's events are recorded in a known order), values 1..10,
   timestamps spread over the last three days (out of order, across day boundaries in
   both zones), every event with an idempotency key; a failed request is sent again,
   unchanged, until it is answered;
3. the receiver verifies every delivery with the `standardwebhooks` package, answers 500
   to the first attempt of `--fail-rate` of the messages, and hangs past the service's
   10 s timeout on a few first attempts; with `--restart`, the service is killed with
   SIGKILL halfway and started again on the same Datastore;
4. a brute force over the recorded events says which (rule, subject, period, threshold)
   crossed; the run waits for the messages and compares: every crossing received, under
   one `webhook-id`, nothing else; latency = receipt of a crossing's first delivery minus
   the 201 of the batch that crossed it (per-user rules, whose order is known).

It prints the figures and exits 1 if the set differs or a latency bar is missed.
"""

from __future__ import annotations

import argparse
import functools
import http.client
import http.server
import json
import os
import random
import signal
import statistics
import sys
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

BARS = {"median_seconds": 2.0, "p95_seconds": 5.0}
KOLKATA = ZoneInfo("Asia/Kolkata")
METER_EVENTS = "/v1/billing/meter-events"


# -- the receiver ---------------------------------------------------------------------


@dataclass
class Delivery:
    webhook_id: str
    at: float
    payload: dict
    wall: float = 0.0  # time.time() of the receipt: compared with the payload's triggeredAt


@dataclass
class Receiver:
    """A webhook receiver on loopback that verifies, records and sometimes fails."""

    secret: str = ""
    fail_rate: float = 0.0
    hangs: int = 0
    deliveries: list[Delivery] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    bad_signatures: int = 0
    refused_first: set[str] = field(default_factory=set)  # ids whose first attempt failed
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> str:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                status = receiver.receive(body, {k.lower(): v for k, v in self.headers.items()})
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            request_queue_size = 128  # a real receiver's backlog, not socketserver's 5

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def receive(self, body: bytes, headers: dict) -> int:
        from standardwebhooks.webhooks import Webhook  # the independent verifier

        now, wall = time.monotonic(), time.time()
        webhook_id = headers.get("webhook-id", "")
        try:
            payload = Webhook(self.secret).verify(body, headers)
        except Exception:  # noqa: BLE001 - any refusal of the verifier counts
            with self.lock:
                self.bad_signatures += 1
            return 400
        with self.lock:
            attempt = self.attempts.get(webhook_id, 0) + 1
            self.attempts[webhook_id] = attempt
            first = attempt == 1
            if first and self.hangs > 0 and random.random() < 0.05:
                self.hangs -= 1
                hang = True
            else:
                hang = False
        if hang or (first and random.random() < self.fail_rate):
            with self.lock:
                self.refused_first.add(webhook_id)
        if hang:
            time.sleep(12)  # past the service's 10 s timeout: a failed attempt
            return 200
        if first and webhook_id in self.refused_first:
            return 500
        with self.lock:
            self.deliveries.append(Delivery(webhook_id, now, payload, wall))
        return 200


# -- the rules and their brute force --------------------------------------------------


@dataclass(frozen=True)
class Rule:
    name: str
    scope: object  # "user" | "org" | {"userId": ...}
    period: str  # day | month
    zone: str
    thresholds: tuple[int, ...]
    id: str = ""

    def document(self, meter_id: str) -> dict:
        return {
            "name": self.name,
            "meterId": meter_id,
            "thresholds": list(self.thresholds),
            "scope": self.scope,
            "period": self.period,
            "timeZone": self.zone,
        }

    def subject(self, user: str) -> str | None:
        if self.scope == "org":
            return None
        if isinstance(self.scope, dict):
            return user if self.scope["userId"] == user else "-"
        return user

    def period_start(self, timestamp: datetime) -> datetime:
        local = timestamp.astimezone(ZoneInfo(self.zone))
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        if self.period == "month":
            start = start.replace(day=1)
        return start


def make_rules(one_user: str) -> list[Rule]:
    return [
        Rule("user month", "user", "month", "UTC", (60, 250, 600)),
        Rule("user day kolkata", "user", "day", "Asia/Kolkata", (25, 80)),
        Rule("one user month", {"userId": one_user}, "month", "UTC", (100, 300)),
        Rule("org day", "org", "day", "UTC", (500, 2000, 5000)),
        Rule("org month kolkata", "org", "month", "Asia/Kolkata", (1500, 6000)),
    ]


Crossing = tuple[str, str | None, datetime, int]  # rule id, user (None: org), period, threshold


class BruteForce:
    """Each (rule, subject, period)'s value, and when each threshold was crossed."""

    def __init__(self, rules: list[Rule]):
        self.rules = rules
        self.values: dict[tuple, int] = {}
        self.crossed_at: dict[Crossing, float] = {}
        self.crossed_wall: dict[Crossing, float] = {}  # time.time() of the same 201
        self.recorded = 0
        self.lock = threading.Lock()
        self.killed_at: float | None = None  # monotonic, with --restart
        self.restarted_at: float | None = None
        self.killed_wall: float | None = None  # time.time() of the same moments
        self.restarted_wall: float | None = None

    def add(self, events: list[dict], acknowledged_at: float) -> None:
        acknowledged_wall = time.time() - (time.monotonic() - acknowledged_at)
        with self.lock:
            self.recorded += len(events)
            for event in events:
                timestamp = datetime.fromisoformat(event["timestamp"])
                for rule in self.rules:
                    subject = rule.subject(event["userId"])
                    if subject == "-":
                        continue
                    key = (rule.id, subject, rule.period_start(timestamp))
                    before = self.values.get(key, 0)
                    after = before + event["value"]
                    self.values[key] = after
                    for threshold in rule.thresholds:
                        if before < threshold <= after:
                            self.crossed_at[(*key, threshold)] = acknowledged_at
                            self.crossed_wall[(*key, threshold)] = acknowledged_wall


# -- recording ------------------------------------------------------------------------


class Target:
    """The service's current address: it changes when the service is restarted."""

    def __init__(self, url: str, api_key: str):
        self.url, self.api_key = url, api_key
        self.up = threading.Event()
        self.up.set()

    def client(self) -> common.Client:
        self.up.wait()
        return common.Client(self.url, self.api_key, timeout=30)


def record(target: Target, meter_id: str, batches: list[list[dict]], brute: BruteForce) -> int:
    """Send each batch until it is answered 201; returns how many sends failed."""
    failures, client = 0, target.client()
    for events in batches:
        body = json.dumps({"events": [{"meterId": meter_id, **event} for event in events]}).encode()
        while True:
            try:
                answer = client.request("POST", METER_EVENTS, body)
            except (OSError, http.client.HTTPException):  # a kill truncates answers too
                answer = None
            if answer is not None and answer.status == 201:
                brute.add(events, time.monotonic())
                break
            failures += 1
            client.close()
            time.sleep(0.2)
            client = target.client()
    client.close()
    return failures


def make_batches(args, users: list[str], now: datetime) -> list[list[list[dict]]]:
    """Per client, its batches: users owned by one client each, events out of order."""
    rng = random.Random(args.seed)
    per_client: list[list[list[dict]]] = [[] for _ in range(args.clients)]
    owned = [users[i :: args.clients] for i in range(args.clients)]
    per_batch = args.events // args.batch
    for number in range(per_batch):
        client = number % args.clients
        events = []
        for _ in range(args.batch):
            moment = now - timedelta(seconds=rng.uniform(0, 3 * 86400))
            events.append(
                {
                    "userId": rng.choice(owned[client]),
                    "value": rng.randint(1, 10),
                    "timestamp": moment.isoformat(timespec="microseconds"),
                    "idempotency": uuid.uuid4().hex,
                }
            )
        per_client[client].append(events)
    return per_client


# -- the run --------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=6000)
    parser.add_argument("--users", type=int, default=48)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--fail-rate", type=float, default=0.1)
    parser.add_argument("--hangs", type=int, default=2)
    parser.add_argument("--restart", action="store_true", help="SIGKILL the service halfway")
    parser.add_argument(
        "--restart-signal",
        choices=["KILL", "TERM"],
        default="KILL",
        help="with --restart, how the service is stopped (TERM: gracefully)",
    )
    parser.add_argument("--wait", type=float, default=120.0, help="seconds to wait for messages")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument(
        "--embedded",
        action="store_true",
        help="let `metering serve --data-dir` start its own emulator, as `make run` does "
        "(with --restart, the stopped or killed service's emulator is taken over by the "
        "next one)",
    )
    parser.add_argument(
        "--emulator",
        choices=["firestore", "legacy"],
        default="firestore",
        help="which of Google's emulators the service runs against (firestore: what "
        "`metering serve` embeds by default)",
    )
    parser.add_argument(
        "--timeline",
        type=int,
        default=0,
        metavar="N",
        help="run the service with METERING_TIMELINE=1 and print, for the N latest clean "
        "per-user crossings, when each step of their way happened (app/timeline.py)",
    )
    parser.add_argument(
        "--rules-age",
        type=float,
        default=0.0,
        help="seconds between creating the rules and recording (35: past the stale-rule "
        "window, so no tally needs a seed: the evaluator's steady state)",
    )
    return parser.parse_args(argv)


def setup(client: common.Client, receiver_url: str, rules: list[Rule]) -> tuple[str, str]:
    """The meter, the endpoint (its secret) and the rules (their ids filled in)."""
    name = f"tokens_{uuid.uuid4().hex[:8]}"
    meter = client.post_json(
        "/v1/billing/meters", {"name": name, "eventName": name, "aggregationType": "sum"}
    )
    endpoint = client.post_json(
        "/v1/webhooks/endpoints", {"url": receiver_url, "eventTypes": ["alert.triggered"]}
    )
    for index, rule in enumerate(rules):
        created = client.post_json("/v1/billing/alerts", rule.document(meter["id"]))
        rules[index] = Rule(**{**rule.__dict__, "id": created["id"]})
    return meter["id"], endpoint["secret"]


def received_crossings(receiver: Receiver) -> dict[Crossing, list[Delivery]]:
    found: dict[Crossing, list[Delivery]] = {}
    for delivery in receiver.deliveries:
        if delivery.payload.get("type") != "alert.triggered":
            continue
        data = delivery.payload["data"]
        key = (
            data["alertId"],
            data["userId"],
            datetime.fromisoformat(data["periodStart"]),
            int(data["threshold"]),
        )
        found.setdefault(key, []).append(delivery)
    return found


def main(argv=None) -> int:
    args = parse_args(argv)
    workdir = common.scratch_dir()
    extra = {"METERING_BACKGROUND_DELIVERY_SECONDS": "1"}
    if args.timeline:
        extra["METERING_TIMELINE"] = "1"
    if args.embedded:  # `metering serve --data-dir`, as `make run`: the emulator its own
        emulator, data_dir = None, workdir / "data"
    else:
        emulator, data_dir = common.start_emulator(args.emulator, workdir), None
    host = emulator.host if emulator is not None else None
    service = common.Service(
        host, 2, 8, workdir, extra_env=extra, data_dir=data_dir, embedded_kind=args.emulator
    )
    receiver = Receiver(fail_rate=args.fail_rate, hangs=args.hangs)
    try:
        service.start()  # inside: a service that never got ready still stops the emulator
        assert service.api_key, "metering serve printed no API key"
        users = [f"user-{n}" for n in range(args.users)]
        rules = make_rules(users[0])
        admin = common.Client(service.url, service.api_key)
        meter_id, receiver.secret = setup(admin, receiver.start(), rules)
        brute = BruteForce(rules)
        time.sleep(args.rules_age)
        target = Target(service.url, service.api_key)
        plans = make_batches(args, users, datetime.now(UTC))
        service_cpu = common.TreeCpu(service.process.pid)  # embedded: the emulator too
        emulator_cpu = common.TreeCpu(emulator.process.pid) if emulator else service_cpu
        cpu_before = service_cpu.snapshot(), emulator_cpu.snapshot()
        started = time.monotonic()
        threads = [
            threading.Thread(target=record, args=(target, meter_id, plan, brute), daemon=True)
            for plan in plans
        ]
        for thread in threads:
            thread.start()
        if args.restart:
            service = restart_halfway(service, host, workdir, extra, target, brute, args)
        for thread in threads:
            thread.join()
        recorded_seconds = time.monotonic() - started
        diagnose = functools.partial(explain_missing, target, rules)
        summarize = functools.partial(summary_of, target, meter_id)
        verdict = report(args, receiver, brute, recorded_seconds, diagnose, summarize)
        if args.timeline:
            print_timeline(brute, receiver, workdir, args.timeline)
        if not args.restart:  # the CPU of one service's processes, recording and sending
            used = [
                common.TreeCpu.used(before, tree.snapshot()).seconds
                for tree, before in zip((service_cpu, emulator_cpu), cpu_before)
            ]
            print(
                f"CPU from the first batch to the end: service {used[0]:.1f}s, "
                f"emulator {used[1]:.1f}s"
            )
        return verdict
    finally:
        service.stop()
        if emulator is not None:
            emulator.stop()


def restart_halfway(service, emulator_host, workdir, extra, target, brute, args):
    """SIGKILL the service once half the batches are answered; start it again."""
    while brute.recorded < args.events // 2:
        time.sleep(0.05)
    target.up.clear()
    how = signal.Signals[f"SIG{args.restart_signal}"]
    # KILL: master and workers at once, no goodbye; TERM: a graceful stop (with
    # --embedded, serve stops its emulator, which exports its data, and starts another)
    os.killpg(service.process.pid, how)
    brute.killed_at = time.monotonic()
    brute.killed_wall = time.time()
    service.process.wait()
    print(f"stopped the service with {how.name} after {brute.recorded} events", flush=True)
    again = common.Service(
        emulator_host,
        2,
        8,
        workdir,
        extra_env=extra,
        data_dir=service.data_dir,
        embedded_kind=service.embedded_kind,
    ).start()
    brute.restarted_at = time.monotonic()
    brute.restarted_wall = time.time()
    print(f"restarted in {brute.restarted_at - brute.killed_at:.1f}s", flush=True)
    target.url = again.url
    target.up.set()
    return again


def summary_of(target, meter_id: str, data: dict) -> object:
    """The service's summary over a crossing's subject and period (for an unexpected
    crossing: were events counted twice in the store, or only in the alert tally?)."""
    client = common.Client(target.url, target.api_key)
    try:
        query = urllib.parse.urlencode(
            {
                "meterId": meter_id,
                "periodStart": data["periodStart"],
                "periodEnd": data["periodEnd"],
                **({"userId": data["userId"]} if data.get("userId") else {}),
            }
        )
        return client.get_json(f"/v1/billing/meter-events/summary?{query}").get("value")
    except Exception as error:  # noqa: BLE001  (a diagnosis must not hide the report)
        return f"unknown ({error})"
    finally:
        client.close()


def explain_missing(target, rules: list[Rule], missing: set) -> None:
    """For each crossing never received: whether the service recorded its trigger, and
    what became of its message (the endpoint's log), so a failure says where it stopped."""
    client = common.Client(target.url, target.api_key)
    try:
        names = {rule.id: rule.name for rule in rules}
        triggers = {}
        for rule in rules:
            for trigger in client.get_json(f"/v1/billing/alerts/{rule.id}/triggers?limit=500")[
                "triggers"
            ]:
                key = (
                    rule.id,
                    trigger["userId"],
                    datetime.fromisoformat(trigger["periodStart"]),
                    trigger["threshold"],
                )
                triggers[key] = trigger
        endpoint = client.get_json("/v1/webhooks/endpoints")["endpoints"][0]["id"]
        messages, cursor = {}, ""
        while True:
            page = client.get_json(
                f"/v1/webhooks/endpoints/{endpoint}/messages?limit=100"
                + (f"&cursor={cursor}" if cursor else "")
            )
            messages.update({message["id"]: message for message in page["messages"]})
            cursor = page.get("nextCursor")
            if not cursor:
                break
        for key in sorted(missing, key=str):
            trigger = triggers.get(key)
            where = "no trigger recorded"
            if trigger is not None:
                message = messages.get(trigger["messageId"], {})
                attempts = [(a["statusCode"], a["error"]) for a in message.get("attempts", [])]
                where = (
                    f"trigger value {trigger['value']}; message {message.get('status')}, {attempts}"
                )
            print(
                f"  missing {names[key[0]]} {key[1]} {key[2]:%Y-%m-%d %H:%M} >= {key[3]}: {where}"
            )
    except Exception as error:  # noqa: BLE001  (a diagnosis must not hide the report)
        print(f"  (could not look into the missing crossings: {error})")
    finally:
        client.close()


def report(
    args,
    receiver: Receiver,
    brute: BruteForce,
    recorded_seconds: float,
    diagnose=None,
    summarize=None,
) -> int:
    expected = dict(brute.crossed_at)
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        with receiver.lock:
            found = received_crossings(receiver)
        if set(found) >= set(expected):
            break
        time.sleep(0.5)
    time.sleep(3)  # anything extra that was still on its way
    with receiver.lock:
        found = received_crossings(receiver)
    missing = set(expected) - set(found)
    extra = set(found) - set(expected)
    split = {k: v for k, v in found.items() if len({d.webhook_id for d in v}) > 1}
    redelivered = sum(len(v) - 1 for v in found.values())
    every, clean = [], []  # per-user crossings; clean: first attempt accepted
    for key, at in expected.items():
        if key in found and key[1] is not None:
            every.append(found[key][0].at - at)
            if found[key][0].webhook_id not in receiver.refused_first:
                clean.append(found[key][0].at - at)
    median, p95 = _median_p95(clean)
    print(f"recorded {args.events} events in {recorded_seconds:.1f}s with {args.clients} clients")
    print(f"crossings expected {len(expected)}, received {len(found)}")
    print(f"missing {len(missing)}, unexpected {len(extra)}, split over ids {len(split)}")
    if missing and diagnose is not None:
        diagnose(missing)
    for key in sorted(extra, key=str):
        first = found[key][0]
        final = brute.values.get(tuple(key[:3]))
        stored = summarize is not None and summarize(first.payload["data"])
        print(
            f"  unexpected {key}: its message says value {first.payload['data'].get('value')}, "
            f"the recorded events give {final}, the service's summary {stored}"
        )
    print(f"bad signatures {receiver.bad_signatures}, redeliveries of one id {redelivered}")
    print(
        f"latency of per-user crossings whose first attempt was accepted (n={len(clean)}): "
        f"median {median:.2f}s, p95 {p95:.2f}s"
    )
    print_stages(brute, found, receiver)
    if brute.killed_at is not None:
        print_around_restart(brute, found, receiver)
    every_median, every_p95 = _median_p95(every)
    print(
        f"latency of every per-user crossing, retries after refused attempts included "
        f"(n={len(every)}): median {every_median:.2f}s, p95 {every_p95:.2f}s"
    )
    ok = not missing and not extra and not split and receiver.bad_signatures == 0
    ok = ok and median <= BARS["median_seconds"] and p95 <= BARS["p95_seconds"]
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def print_stages(brute: BruteForce, found: dict, receiver: Receiver) -> None:
    """Where a clean per-user crossing's latency goes: from the batch's 201 to the
    evaluator's commit (the payload's `triggeredAt`, the time the trigger and its message
    were stored) and from that commit to the receipt (the dispatcher). Same machine, so
    one wall clock: the split is the trace of the two stages."""
    evaluation, dispatching = [], []
    for key, acknowledged in brute.crossed_wall.items():
        if key not in found or key[1] is None:
            continue
        first = found[key][0]
        if first.webhook_id in receiver.refused_first:
            continue
        stored = datetime.fromisoformat(first.payload["data"]["triggeredAt"]).timestamp()
        evaluation.append(stored - acknowledged)
        dispatching.append(first.wall - stored)
    for name, values in (
        ("201 -> evaluator's commit", evaluation),
        ("commit -> receipt", dispatching),
    ):
        median, p95 = _median_p95(values)
        print(f"  stage {name}: median {median:.2f}s, p95 {p95:.2f}s")


def print_around_restart(brute: BruteForce, found: dict, receiver: Receiver) -> None:
    """The clean per-user latencies split by when the crossing's batch was answered:
    before the kill (those still to evaluate wait for the restart), or after it."""
    killed = brute.killed_at
    assert killed is not None
    before: list[float] = []
    after: list[float] = []
    waited: list[float] = []  # answered before the kill, received after: when, from the restart
    in_time = 0
    for key, acknowledged in brute.crossed_at.items():
        if key not in found or key[1] is None:
            continue
        first = found[key][0]
        in_time += acknowledged < killed and first.at < killed
        if acknowledged < killed <= first.at and brute.restarted_at is not None:
            waited.append(first.at - brute.restarted_at)
        if first.webhook_id in receiver.refused_first:
            continue
        (before if acknowledged < killed else after).append(first.at - acknowledged)
    for name, values in (("answered before the kill", before), ("after the restart", after)):
        median, p95 = _median_p95(values)
        print(f"  {name} (n={len(values)}): median {median:.2f}s, p95 {p95:.2f}s")
    print(f"  per-user crossings answered before the kill and received before it: {in_time}")
    if waited:
        waited.sort()
        print(
            f"  the others (n={len(waited)}) arrived after the restart: first at "
            f"{waited[0]:+.2f}s, median {statistics.median(waited):+.2f}s, last {waited[-1]:+.2f}s"
        )


def read_timeline(workdir: Path) -> list[dict]:
    """The timeline lines (`app/timeline.py`) of every service run in `workdir`, by time."""
    lines = []
    for path in sorted(workdir.glob("service-*.log")):
        for text in path.read_text(errors="replace").splitlines():
            if '"timeline"' not in text:
                continue
            try:
                lines.append(json.loads(text)["timeline"])
            except (ValueError, KeyError):
                continue
    return sorted(lines, key=lambda line: line["at"])


def print_feeds_applied_twice(lines: list[dict]) -> None:
    """Each alert feed whose key id is in more than one committed chunk (the evaluator's
    `chunk committed` lines): a feed applied twice, which an unexpected crossing whose
    message says more than the recorded events would come from."""
    commits: dict[int, list[dict]] = {}
    for line in lines:
        if line["step"] == "chunk committed":
            for feed_id in line.get("feed_ids") or []:
                commits.setdefault(feed_id, []).append(line)
    twice = {feed_id: found for feed_id, found in commits.items() if len(found) > 1}
    print(f"alert feeds in more than one committed chunk: {len(twice)} of {len(commits)}")
    for feed_id, found in list(twice.items())[:10]:
        where = ", ".join(f"pid {line['pid']} at {line['at']:.3f}" for line in found)
        print(f"  feed {feed_id}: {where}")


def print_timeline(brute: BruteForce, receiver: Receiver, workdir: Path, worst: int) -> None:
    """For the `worst` latest clean per-user crossings: the seconds from their batch's 201
    to each step the service logged for their message (the chunk that committed it, the
    feeds read before that chunk, its hand-off, the send) and to the receipt; then the
    service's own steps around the restart."""
    lines = read_timeline(workdir)
    if not lines:
        print("timeline: the service logged none (METERING_TIMELINE)")
        return
    print_feeds_applied_twice(lines)
    steps: dict[str, dict[str, float]] = {}
    last_read: dict[tuple[int, str], dict] = {}
    for line in lines:
        where = (line["pid"], line["thread"])
        if line["step"] == "feeds read":
            last_read[where] = line
        ids = line.get("messages") or ([line["message"]] if "message" in line else [])
        for message in ids:
            mine = steps.setdefault(str(message).rpartition(".")[0], {})
            mine.setdefault(line["step"], line["at"])
            if line["step"] == "chunk committed" and where in last_read:
                mine.setdefault("feeds read", last_read[where]["at"])
                mine.setdefault("chunk pid", line["pid"])
    with receiver.lock:
        found = received_crossings(receiver)
    late = []
    for key, acknowledged in brute.crossed_wall.items():
        if key in found and key[1] is not None:
            first = found[key][0]
            if first.webhook_id not in receiver.refused_first:
                late.append((first.wall - acknowledged, acknowledged, first))
    late.sort(key=lambda item: item[0], reverse=True)
    order = ("feeds read", "chunk committed", "leased", "queued", "sending", "sent")
    print(
        f"timeline of the {min(worst, len(late))} latest clean per-user crossings "
        "(seconds from the batch's 201):"
    )
    for latency, acknowledged, first in late[:worst]:
        mine = steps.get(first.webhook_id, {})
        marks = [f"{step} {mine[step] - acknowledged:+.2f}" for step in order if step in mine]
        pid = f" pid {mine['chunk pid']:.0f}" if "chunk pid" in mine else ""
        stop = (
            f" (stop {brute.killed_wall - acknowledged:+.2f})"
            if brute.killed_wall is not None
            else ""
        )
        print(f"  {latency:5.2f}s{stop}: " + ", ".join(marks) + f", received {latency:+.2f}{pid}")
    if brute.killed_wall is None:
        return
    killed = brute.killed_wall
    print(
        f"  the service's steps from the restart (seconds from the stop; restarted at "
        f"{(brute.restarted_wall or killed) - killed:+.2f}):"
    )
    for line in lines:
        if line["at"] < killed - 2 or line["at"] > killed + 6:
            continue
        idle = line["step"] == "evaluation pass" and line["seconds"] < 0.01
        shown = ("loops started", "releasing", "released", "evaluation pass", "leased")
        if not idle and line["step"] in shown + ("chunk committed", "feeds read"):
            fields = {k: v for k, v in line.items() if k not in ("step", "at", "thread")}
            if "messages" in fields:
                fields["messages"] = len(fields["messages"])
            print(f"    {line['at'] - killed:+.2f} {line['step']} {fields}")


def _median_p95(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    if len(values) < 20:
        return statistics.median(values), max(values)
    return statistics.median(values), statistics.quantiles(values, n=20)[-1]


if __name__ == "__main__":
    sys.exit(main())
