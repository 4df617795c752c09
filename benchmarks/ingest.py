"""Ingestion benchmark: the emulator's raw write rate, the service end to end, a hot key.

One run of `python benchmarks/ingest.py` starts Google's Firestore-mode emulator
and, for each service setting (`--configs`, default 2x8), the service exactly as
production runs it: `metering serve --host 127.0.0.1 --port P --workers W
--threads T` with DATASTORE_EMULATOR_HOST set, as its own process group. After
an untimed warm-up it does `--repeat` rounds (default 3), each on a freshly reset
emulator with a new org (`metering orgs create`):

1. raw: N meter-event entities inserted straight into the emulator, 100 per Commit,
   by 8 threads (`tests.support.encoding.event_entity` + `app.storage.rpc.commit` in
   an NDB context, in a child process) -- the emulator's write rate;
   raw+rollups: the same with each batch's rollup increments, i.e. exactly the
   commits the service's fast path sends, without the service;
2. spread: N events through the service: 100-event POST /v1/billing/meter-events
   from 8 client threads (keep-alive connections, bodies built beforehand),
   unique idempotency keys, users drawn at random from 1000;
3. hot: N events for ONE (meter, user) pair, same clients.

For every run it reports events/s, request latency, user+system CPU per event of
the service (gunicorn master + workers, /proc/PID/stat), of the emulator and of
the client, the machine's other load, the summed `X-Datastore-Usage` headers, and
checks the stored totals exactly (summary eventCount and value, for all users
and three single users). It ends with a table and the bars. `--profile` adds one
spread run under py-spy (installed separately) and its top costs per request.

With `--alert-rules N` each measured meter gets N rules first (issue 14's cost bar
compares 20 with 0). By default every measured load is the transient right after the
rules are created: new tallies, and thresholds (`--rule-thresholds dense`) crossed by
about one event in three. `--rule-thresholds quota` sets thresholds crossed rarely, and
`--prime-events N` records N untimed events on the meter (and lets their evaluation
finish) before the measured load, so it goes into a meter that already holds data.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import multiprocessing
import os
import platform
import random
import signal
import statistics
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

BARS = {
    "spread_over_raw": 0.5,  # service events/s >= 0.5 x raw emulator entities/s
    "hot_over_spread": 0.5,  # hot-key events/s >= 0.5 x spread events/s
    "cpu_us_per_event": 250.0,  # service user+system CPU per stored event
    "reads_per_event": 1.0,
    "writes_per_event": 2.0,
}
METER_EVENTS = "/v1/billing/meter-events"
CLOUDEVENTS = "/api/v1/events"  # OpenMeter's ingestion: a JSON array of CloudEvents
PROJECT = "metering-bench"


# -- 1. raw emulator write rate (in a child process: gRPC stays out of this one) ------

RAW_CASES = {  # case name -> what the raw writer commits
    "raw": "meter-event entities as hand-built protobufs, 100 per Commit (the emulator's ceiling)",
    "raw+rollups": "exactly the service's fast-path commits (events + rollup increments)",
    "raw-ndb": "MeterEvent models through NDB put_multi, 100 per call (the ordinary client)",
    "raw-datastore": "the same entities through google-cloud-datastore's Client.put_multi, "
    "100 per call (Google's plain Datastore client)",
}


def _raw_child(
    host: str,
    project: str,
    total: int,
    batch: int,
    threads: int,
    warmup: int,
    case: str,
    ready,
    go,
    results,
) -> None:
    try:
        os.environ["DATASTORE_EMULATOR_HOST"] = host
        from google.cloud import datastore, ndb

        from app.config import Config
        from app.core.cells import Cell, rank, series_of
        from app.datastore import make_client
        from app.models import MeterEvent, ids
        from app.services import events as event_service
        from app.services import ingest
        from app.storage import entities, rollups, rpc
        from tests.support.encoding import event_entity

        config = Config(project=project, emulator_host=host)
        ids.configure(config.hashid_salt)
        client = make_client(config)
        namespace = "bench-raw-" + uuid.uuid4().hex[:8]
        now = datetime.now(UTC)
        rng = random.Random(7)
        meter_id = "rawMeterId"

        with_rollups = case == "raw+rollups"
        for code, space in enumerate((namespace, namespace + "-warm"), start=1):
            ids.remember_namespace(space, code)  # what Model ids encode; no entity needed

        def build_models(space: str, count: int) -> list[list]:
            """`count` MeterEvent models in `batch`-model lists, keyed in `space`."""
            batches = []
            with client.context(namespace=space):
                for b in range(count // batch):
                    batches.append(
                        [
                            MeterEvent(
                                id=event_service.idempotent_id(meter_id, f"raw-{b}-{i}"),
                                meter_id=meter_id,
                                user_id=f"user-{rng.randrange(1000)}",
                                value=rng.randint(1, 1000),
                                timestamp=now,
                                idempotency=f"raw-{b}-{i}",
                            )
                            for i in range(batch)
                        ]
                    )
            return batches

        plain = datastore.Client(project=project) if case == "raw-datastore" else None

        def build_plain(space: str, count: int) -> list[list]:
            """`count` google-cloud-datastore entities shaped like MeterEvent's (their keys
            carry the namespace)."""
            batches = build_models(space, count)
            with client.context(namespace=space):
                return [
                    [
                        datastore.helpers.entity_from_protobuf(ndb.model._entity_to_protobuf(model))
                        for model in models
                    ]
                    for models in batches
                ]

        def build(space: str, count: int) -> list[list]:
            """`count` meter-event inserts in `batch`-entity lists, keyed in `space`."""
            if case == "raw-ndb":
                return build_models(space, count)
            if case == "raw-datastore":
                return build_plain(space, count)
            batches = []
            with client.context(namespace=space):
                for b in range(count // batch):
                    mutations, cells = [], {}  # type: ignore[var-annotated]
                    for i in range(batch):
                        idem = f"raw-{b}-{i}"
                        key_id = event_service.idempotent_id(meter_id, idem)
                        user, value = f"user-{rng.randrange(1000)}", rng.randint(1, 1000)
                        entity = event_entity(
                            key_pb=entities.key("meter-event", key_id),
                            public_id=ingest._public_id(key_id, 1),
                            meter_id=meter_id,
                            user_id=user,
                            value=value,
                            timestamp=now,
                            idempotency=idem,
                            dimensions={},
                            metadata={},
                            now=now,
                        )
                        mutations.append(rpc.Mutation(insert=entity))
                        cells.setdefault(user, Cell()).add_event(value, rank(now, now, key_id))
                    if with_rollups:  # what the service's fast path commits with the events
                        day, slot = rollups.day_and_slot(now)
                        for user, cell in cells.items():
                            series = series_of(user, {})
                            mutations.append(
                                rollups.increments(4242, meter_id, series, day, {slot: cell}, "sum")
                            )
                    batches.append(mutations)
            return batches

        batches = build(namespace, total)
        warm = build(namespace + "-warm", warmup)
        lock = threading.Lock()
        errors: list[str] = []

        def work(queue, space):
            with client.context(namespace=space):
                while True:
                    with lock:
                        mutations = next(queue, None)
                    if mutations is None:
                        return
                    try:
                        if case == "raw-ndb":
                            ndb.put_multi(mutations, use_cache=False)
                        elif case == "raw-datastore":
                            plain.put_multi(mutations)
                        else:
                            rpc.commit(mutations)
                    except Exception as exc:  # noqa: BLE001 -- reported, not hidden
                        errors.append(repr(exc)[:200])

        def run_all(queue, space):
            workers = [threading.Thread(target=work, args=(queue, space)) for _ in range(threads)]
            for thread in workers:
                thread.start()
            for thread in workers:
                thread.join()

        # Warm the emulator's JIT with the same kind of load, in another namespace.
        run_all(iter(warm), namespace + "-warm")
        errors.clear()
        ready.set()
        go.wait()
        cpu0, t0 = common.self_cpu(), time.perf_counter()
        run_all(iter(batches), namespace)
        wall, cpu = time.perf_counter() - t0, common.self_cpu() - cpu0
        results.put(
            {
                "entities": len(batches) * batch,
                "wall": wall,
                "client_cpu": cpu,
                "errors": errors,
                "mutations": sum(len(m) for m in batches),
            }
        )
    except BaseException as exc:  # noqa: BLE001
        ready.set()
        results.put({"fatal": repr(exc)})


def run_raw(emulator, project, total, batch, threads, warmup, config="", run=0, case="raw"):
    """Time `total` raw inserts of one of RAW_CASES by `threads` threads in a child
    process; a CaseResult."""
    ctx = multiprocessing.get_context("spawn")
    ready, go, results = ctx.Event(), ctx.Event(), ctx.Queue()
    child = ctx.Process(
        target=_raw_child,
        args=(emulator.host, project, total, batch, threads, warmup, case, ready, go, results),
    )
    child.start()
    try:
        if not ready.wait(180):
            raise RuntimeError("the raw writer did not get ready")
        emu = common.TreeCpu(emulator.process.pid)
        e0, m0 = emu.snapshot(), common.machine_busy()
        go.set()
        result = results.get(timeout=600)
        e1, m1 = emu.snapshot(), common.machine_busy()
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
            child.join()
    if "fatal" in result:
        raise RuntimeError(f"raw writer failed: {result['fatal']}")
    n, wall = result["entities"], result["wall"]
    emu_used = common.TreeCpu.used(e0, e1).seconds
    busy = (m1[0] - m0[0]) / common.CLK_TCK
    other = max(0.0, busy - emu_used - result["client_cpu"]) / wall
    errors = result["errors"]
    return CaseResult(
        config=config,
        case=case,
        run=run,
        events=n,
        wall=wall,
        rate=n / wall,
        p50_ms=0.0,
        p95_ms=0.0,
        max_ms=0.0,
        failed_requests=len(errors),
        not_created=0,
        reconnects=0,
        service_cpu_us=0.0,
        client_cpu_us=result["client_cpu"] / n * 1e6,
        emulator_cpu_us=emu_used / n * 1e6,
        other_cores=other,
        worker_cpu_split="",
        reads_per_event=0.0,
        writes_per_event=result["mutations"] / n,
        rpcs_per_batch=1.0,
        usage_missing=0,
        stored_ok=not errors,
        stored_detail=f"{len(errors)} failed commits",
        failures=errors[:5],
    )


# -- 2 and 3. the service ------------------------------------------------------------


@dataclass
class Load:
    """What one case sends, and what it must find stored afterwards."""

    name: str
    meter_id: str
    bodies: list[bytes]
    events: int
    value_sum: int
    per_user: dict[str, tuple[int, int]]  # user -> (count, sum)
    aggregation: str = "sum"  # the meter's; values are checked for sum, counts for all
    path: str = METER_EVENTS  # where the bodies go; CLOUDEVENTS answers 204, no outcomes

    def plus(self, later: Load) -> Load:
        """What the meter must hold once this load and then `later` were recorded (no
        bodies: what `verify` expects after a primed round)."""
        per_user = dict(self.per_user)
        for user, (count, total) in later.per_user.items():
            before_count, before_total = per_user.get(user, (0, 0))
            per_user[user] = (before_count + count, before_total + total)
        return Load(
            later.name,
            later.meter_id,
            [],
            self.events + later.events,
            self.value_sum + later.value_sum,
            per_user,
            later.aggregation,
            later.path,
        )


def build_load(
    name: str,
    meter: dict,
    total: int,
    batch: int,
    users: int | None,
    run_tag: str,
    rng: random.Random,
) -> Load:
    """`total` events in `batch`-event bodies; users at random from `users`, or one. The
    `cloudevents` case sends the same events as CloudEvents to OpenMeter's endpoint (a
    native meter reads `type` = its event name and `$.value`)."""
    stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    bodies, value_sum, per_user = [], 0, {}  # type: ignore[var-annotated]
    for b in range(total // batch):
        events = []
        for i in range(batch):
            user = f"user-{rng.randrange(users)}" if users else "hot-user"
            value = rng.randint(1, 1000)
            value_sum += value
            count, sub = per_user.get(user, (0, 0))
            per_user[user] = (count + 1, sub + value)
            if name == "cloudevents":
                events.append(
                    {
                        "specversion": "1.0",
                        "id": f"{run_tag}-{name}-{b}-{i}",
                        "source": "bench",
                        "type": meter["eventName"],
                        "subject": user,
                        "time": stamp,
                        "data": {"value": value},
                    }
                )
                continue
            events.append(
                {
                    "eventName": meter["eventName"],
                    "userId": user,
                    "value": value,
                    "timestamp": stamp,
                    "idempotency": f"{run_tag}-{name}-{b}-{i}",
                }
            )
        document = events if name == "cloudevents" else {"events": events}
        bodies.append(json.dumps(document, separators=(",", ":")).encode())
    return Load(
        name,
        meter["id"],
        bodies,
        len(bodies) * batch,
        value_sum,
        per_user,
        meter.get("aggregationType", "sum"),
        CLOUDEVENTS if name == "cloudevents" else METER_EVENTS,
    )


@dataclass
class CaseResult:
    config: str
    case: str
    run: int
    events: int
    wall: float
    rate: float
    p50_ms: float
    p95_ms: float
    max_ms: float
    failed_requests: int
    not_created: int
    reconnects: int
    service_cpu_us: float
    client_cpu_us: float
    emulator_cpu_us: float
    other_cores: float
    worker_cpu_split: str
    reads_per_event: float
    writes_per_event: float
    rpcs_per_batch: float
    usage_missing: int
    stored_ok: bool
    stored_detail: str
    profiled: bool = False
    failures: list = field(default_factory=list)
    #: Service CPU seconds up to the last answer, and from then until the round's last
    #: alert feed was applied, how long that took (None: not watched, or still pending
    #: after --settle), through the quiet test (per event), and idle CPU per second.
    answer_cpu_s: float | None = None
    evaluation_cpu_s: float | None = None
    evaluation_wall_s: float | None = None
    settled_cpu_us: float | None = None
    idle_cpu_per_s: float | None = None
    idle_cpu_median_per_s: float | None = None
    #: Seconds after the settle until compaction had folded the round's rollups, before
    #: the idle CPU was measured (None: not waited for, or not done in time).
    compacted_after_s: float | None = None


def send_all(service, api_key: str, bodies: list[bytes], clients: int, path=METER_EVENTS):
    """POST every body from `clients` threads; per-request (status, ms, usage, body)."""
    queue = iter(range(len(bodies)))
    lock = threading.Lock()
    records: list[tuple] = [None] * len(bodies)  # type: ignore[list-item]
    reconnects = [0] * clients
    start = threading.Barrier(clients + 1)

    def work(slot: int):
        client = common.Client(service.url, api_key)
        start.wait()
        try:
            while True:
                with lock:
                    index = next(queue, None)
                if index is None:
                    return
                began = time.perf_counter()
                try:
                    answer = client.request("POST", path, bodies[index])
                except OSError as exc:
                    records[index] = (
                        0,
                        (time.perf_counter() - began) * 1e3,
                        None,
                        repr(exc).encode(),
                    )
                    continue
                records[index] = (
                    answer.status,
                    (time.perf_counter() - began) * 1e3,
                    answer.usage,
                    answer.body,
                )
        finally:
            reconnects[slot] = client.reconnects
            client.close()

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    return threads, start, records, reconnects


#: The service counts as quiet once it used less than this share of a core over each of
#: QUIET_STEPS steps in a row. Together they outlast the delivery loop's period (1 s,
#: METERING_BACKGROUND_DELIVERY_SECONDS below): a single 0.5 s step often fell between
#: the last answer and the loop's next round, so the evaluation of a whole round of
#: batches was left out (session 9: 20-rule rounds reading as 0-rule ones, "quiet 0.5s").
QUIET_SHARE, QUIET_STEP, QUIET_STEPS = 0.05, 0.5, 3


#: How often the round's org is asked whether any `alert-feed` is left (`FeedWatch`).
FEED_POLL_SECONDS = 0.1
#: Seconds of no traffic over which the service's idle CPU per second is measured, after
#: the settle (`--idle-seconds`): with rules, the delivery loop's passes cost that much
#: every second, a cost per second, not per event.
IDLE_SECONDS = 5.0
#: How long the idle measurement may wait for compaction to fold the round's rollups
#: first (`--compaction-wait`; default 0: not at all). Each worker's compaction runs
#: every 15 to 45 s and folds a page of the round's ~1,000 dirty rollups a time, bursts of
#: about a second of CPU for about two minutes after a round: inside the idle window
#: they swamp the loops' cost (`benchmarks/idle_loops.py` measures that without them).
COMPACTION_WAIT_SECONDS = 0.0


class FeedWatch:
    """Whether the round's org has an `alert-feed` left, asked of the emulator directly
    (one keys-only ancestor query, strongly consistent): the evaluator deletes each feed
    in the commit that applies it, so none left means the round's evaluation is done.
    Before, `--settle` waited for a CPU-quiet service, and with 20 rules the loops'
    idle passes never went under the quiet share: ~30 s of idle loop counted per round."""

    def __init__(self, emulator_host: str, project: str):
        from app.config import Config
        from app.datastore import make_client

        self.client = make_client(Config(project=project, emulator_host=emulator_host))

    def pending(self, namespace: str) -> bool:
        from app.models import AlertFeed, root_key

        with self.client.context(namespace=namespace):
            query = AlertFeed.query(ancestor=root_key())
            return bool(query.fetch(1, keys_only=True))

    def dirty(self, namespace: str) -> bool:
        """Whether the org has a rollup with deltas left to fold (compaction to come)."""
        from app.services import compact

        with self.client.context(namespace=namespace):
            return bool(compact.dirty_keys(limit=1))

    def wait_compacted(self, namespace: str, limit: float) -> float | None:
        """Seconds until the background compaction folded every rollup of the org (None:
        some still dirty after `limit`)."""
        began = time.perf_counter()
        while self.dirty(namespace):
            if time.perf_counter() - began >= limit:
                return None
            time.sleep(0.5)
        return time.perf_counter() - began

    def wait_applied(self, namespace: str, limit: float) -> float | None:
        """Seconds until no feed of the org is left (None: some still after `limit`)."""
        began = time.perf_counter()
        while self.pending(namespace):
            if time.perf_counter() - began >= limit:
                return None
            time.sleep(FEED_POLL_SECONDS)
        return time.perf_counter() - began


def _idle_cpu(cpu: common.TreeCpu, seconds: float) -> tuple[float, float]:
    """The service's CPU per second over `seconds` of no traffic, in all and the median
    of its 1-second slices: a compaction pass (every 15 to 45 s, folding the round's
    rollups) lands in some windows and not others, and the median leaves it out."""
    steps = max(1, round(seconds))
    slices = []
    began = before = cpu.snapshot()
    for _ in range(steps):
        time.sleep(seconds / steps)
        after = cpu.snapshot()
        used = common.TreeCpu.used(before, after)
        slices.append(used.seconds / max(used.wall, 1e-9))
        before = after
    whole = common.TreeCpu.used(began, before)
    return whole.seconds / max(whole.wall, 1e-9), statistics.median(slices)


def _settled(cpu: common.TreeCpu, limit: float) -> float:
    """Wait until the service is quiet (its evaluation of the last batches done: its
    background loop then costs a few ms a second) or `limit` seconds passed; how long
    (the quiet steps included)."""
    began = time.perf_counter()
    before = cpu.snapshot()
    quiet = 0
    while time.perf_counter() - began < limit:
        time.sleep(QUIET_STEP)
        after = cpu.snapshot()
        busy = common.TreeCpu.used(before, after).seconds >= QUIET_SHARE * QUIET_STEP
        quiet = 0 if busy else quiet + 1
        if quiet >= QUIET_STEPS:
            break
        before = after
    return time.perf_counter() - began


def run_case(
    config: str,
    run: int,
    service,
    emulator,
    api_key: str,
    load: Load,
    clients: int,
    profiled: bool = False,
    when_sent=None,
    settle: float = 0.0,
    feeds: tuple[FeedWatch, str] | None = None,
    idle_seconds: float = 0.0,
    compaction_wait: float = COMPACTION_WAIT_SECONDS,
    primed: Load | None = None,
) -> CaseResult:
    """Send the load, measure it, then check what was stored (`when_sent` runs between;
    with `primed`, the load recorded on the meter before, the check expects both).
    With `settle`, the service's CPU is read once it is quiet again (at most `settle`
    seconds after the last answer): the alert evaluation that follows the batches is
    then counted too (`_settled`). With `feeds` (a watch and the org's namespace), the
    service's CPU is also read when the org's last feed was applied (`FeedWatch`), before
    the quiet test (which then counts what a 0-rule round also gets: compaction); the
    figure per event (`service_cpu_us`) is the one up to that point. With
    `idle_seconds`, the service's CPU per second with no traffic is measured after."""
    svc_cpu, emu_cpu = common.TreeCpu(service.process.pid), common.TreeCpu(emulator.process.pid)
    threads, start, records, reconnects = send_all(
        service, api_key, load.bodies, clients, load.path
    )
    s0, e0, c0, m0 = (
        svc_cpu.snapshot(),
        emu_cpu.snapshot(),
        common.self_cpu(),
        common.machine_busy(),
    )
    t0 = time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - t0
    answered = svc_cpu.snapshot()
    applied_after = None
    applied = answered
    if feeds is not None:
        watch, namespace = feeds
        applied_after = watch.wait_applied(namespace, settle)
        applied = svc_cpu.snapshot()
        if applied_after is not None:
            settle -= applied_after
    settled = _settled(svc_cpu, max(settle, 0.0)) if settle else None
    s1, e1, c1, m1 = (
        svc_cpu.snapshot(),
        emu_cpu.snapshot(),
        common.self_cpu(),
        common.machine_busy(),
    )
    if when_sent is not None:
        when_sent()

    usage = common.Usage()
    failures, not_created, latencies = [], 0, []
    for status, ms, header, body in records:
        latencies.append(ms)
        usage.add_header(header)
        if status != (204 if load.path == CLOUDEVENTS else 201):
            failures.append(f"{status}: {body[:200]!r}")
            continue
        if load.path == CLOUDEVENTS:
            continue  # 204: no outcomes (every event is new: unique ids)
        outcomes = json.loads(body)["events"]
        not_created += sum(1 for o in outcomes if o["status"] != "created")
    idle_per_s = idle_median = compacted_after = None
    if idle_seconds:
        if feeds is not None and compaction_wait:  # compaction's bursts are no idle cost
            compacted_after = feeds[0].wait_compacted(feeds[1], compaction_wait)
        idle_per_s, idle_median = _idle_cpu(svc_cpu, idle_seconds)
    svc = common.TreeCpu.used(s0, s1)
    to_answer = common.TreeCpu.used(s0, answered).seconds
    to_applied = common.TreeCpu.used(s0, applied).seconds
    emu = common.TreeCpu.used(e0, e1)
    client = c1 - c0
    busy = (m1[0] - m0[0]) / common.CLK_TCK
    other = max(0.0, busy - svc.seconds - emu.seconds - client) / wall
    workers = sorted(
        (cpu for pid, cpu in svc.per_pid.items() if pid != service.process.pid), reverse=True
    )
    master = svc.per_pid.get(service.process.pid, 0.0)
    split = "/".join(f"{w:.1f}" for w in workers) + f" (+master {master:.2f}) s"
    if svc.vanished:
        split += f" [{svc.vanished} process(es) exited]"
    if settled is not None:
        split += f"; quiet {settled:.1f}s after the " + (
            "last answer" if feeds is None else "last feed applied"
        )
    stored_ok, detail = verify(service, api_key, load if primed is None else primed.plus(load))
    if primed is not None:
        detail += f" ({primed.events} primed + {load.events} measured)"
    n = load.events
    latencies.sort()
    return CaseResult(
        config=config,
        case=load.name,
        run=run,
        events=n,
        wall=wall,
        rate=n / wall,
        p50_ms=statistics.median(latencies),
        p95_ms=latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
        max_ms=latencies[-1],
        failed_requests=len(failures),
        not_created=not_created,
        reconnects=sum(reconnects),
        service_cpu_us=(to_applied if feeds is not None else svc.seconds) / n * 1e6,
        client_cpu_us=client / n * 1e6,
        emulator_cpu_us=emu.seconds / n * 1e6,
        other_cores=other,
        worker_cpu_split=split,
        reads_per_event=usage.read / n,
        writes_per_event=usage.written / n,
        rpcs_per_batch=usage.rpcs / max(1, usage.responses),
        usage_missing=usage.missing,
        stored_ok=stored_ok,
        stored_detail=detail,
        profiled=profiled,
        failures=failures[:5],
        answer_cpu_s=to_answer,
        evaluation_cpu_s=(to_applied - to_answer) if feeds is not None else None,
        evaluation_wall_s=applied_after,
        settled_cpu_us=svc.seconds / n * 1e6,
        idle_cpu_per_s=idle_per_s,
        idle_cpu_median_per_s=idle_median,
        compacted_after_s=compacted_after,
    )


def _summary(client, meter_id: str, user: str | None = None) -> dict:
    today = datetime.now(UTC).date()
    path = (
        f"{METER_EVENTS}/summary?meterId={meter_id}"
        f"&periodStart={today - timedelta(days=1)}&periodEnd={today + timedelta(days=1)}"
    )
    if user:
        path += f"&userId={user}"
    return client.get_json(path)


def verify(service, api_key: str, load: Load) -> tuple[bool, str]:
    """Whether the summary finds exactly the events and values sent."""
    client = common.Client(service.url, api_key, timeout=300)
    try:
        found = _summary(client, load.meter_id)
        problems = []
        summed = load.aggregation == "sum"
        if found["eventCount"] != load.events or (summed and found["value"] != load.value_sum):
            problems.append(
                f"all users: eventCount {found['eventCount']} value {found['value']}"
                f" (sent {load.events}, {load.value_sum})"
            )
        for user in sorted(load.per_user)[:3]:
            count, total = load.per_user[user]
            one = _summary(client, load.meter_id, user)
            if one["eventCount"] != count or (summed and one["value"] != total):
                problems.append(
                    f"{user}: {one['eventCount']}, {one['value']} (sent {count}, {total})"
                )
        if problems:
            return False, "; ".join(problems)
        return True, (
            f"eventCount={found['eventCount']} value={found['value']} "
            f"(+{min(3, len(load.per_user))} users)"
        )
    except Exception as exc:  # noqa: BLE001 -- a failed check is a result
        return False, f"summary failed: {exc}"
    finally:
        client.close()


def create_meter(service, api_key: str, event_name: str, aggregation: str = "sum") -> dict:
    client = common.Client(service.url, api_key)
    try:
        return client.post_json(
            "/v1/billing/meters",
            {
                "name": event_name.replace("_", " "),
                "eventName": event_name,
                "aggregationType": aggregation,
            },
        )
    finally:
        client.close()


RULE_THRESHOLDS = {  # --rule-thresholds: kind -> what its rules' thresholds are
    "dense": "1,000 x (n+1) for rule n: crossed by about one event in three",
    "quota": "monthly/daily quotas: 100,000 x (n+1) per user, never crossed (a user's "
    "tally gains ~500 per 1,000 events of 1000 users), and 250,000 x (n+1) for the org: "
    "its tally gains ~500 per event, so one org threshold is crossed per ~1,500 events "
    "(~2-3 per 4,000-event load)",
}


def rule_thresholds(kind: str, number: int, scope: str) -> list[int]:
    """Rule `number`'s thresholds of a RULE_THRESHOLDS kind."""
    if kind == "dense":
        return [1000 * (number + 1), 10**12]
    step = 250_000 if scope == "org" else 100_000
    return [step * (number + 1), 10**12]


def create_alert_rules(
    service, api_key: str, meter: dict, count: int, thresholds: str = "dense"
) -> None:
    """`count` alert rules on the meter (issue 14): scopes, periods and zones varied, so
    they make several specs (tallies) as tenants' rules would, with thresholds of a
    RULE_THRESHOLDS kind. Ingestion then writes one `alert-feed` per batch in the
    batch's commit; this measures what that costs it."""
    client = common.Client(service.url, api_key)
    shapes = [("user", "month", "UTC"), ("org", "day", "Asia/Kolkata"), ("user", "day", "UTC")]
    try:
        for number in range(count):
            scope, period, zone = shapes[number % len(shapes)]
            client.post_json(
                "/v1/billing/alerts",
                {
                    "name": f"bench rule {number}",
                    "meterId": meter["id"],
                    "thresholds": rule_thresholds(thresholds, number, scope),
                    "scope": scope,
                    "period": period,
                    "timeZone": zone,
                },
            )
    finally:
        client.close()


def send_untimed(service, api_key: str, load: Load, clients: int) -> None:
    """Send every body of `load` from `clients` threads, untimed; raise if one failed."""
    threads, start, records, _ = send_all(service, api_key, load.bodies, clients, load.path)
    start.wait()
    for thread in threads:
        thread.join()
    bad = [r for r in records if r[0] != (204 if load.path == CLOUDEVENTS else 201)]
    if bad:
        raise RuntimeError(f"{load.name} failed: {bad[0][0]} {bad[0][3][:300]!r}")


def warm_up(
    service, api_key: str, events: int, clients: int, batch: int, rng, meter_name: str
) -> None:
    """Untimed requests on a throwaway meter: every worker imports, probes and connects,
    and the emulator's JIT compiles the insert and transform paths."""
    meter = create_meter(service, api_key, meter_name)
    load = build_load(
        "warmup", meter, max(events, clients * batch), batch, 1000, uuid.uuid4().hex[:8], rng
    )
    send_untimed(service, api_key, load, clients)


#: After the priming load (`--prime-events`), seconds at most to wait until its last alert
#: feed is applied, then until the service is quiet, before the measured load starts.
PRIME_FEEDS_WAIT_SECONDS, PRIME_QUIET_SECONDS = 120.0, 5.0


def prime_meter(
    service, api_key: str, load: Load, clients: int, feeds: tuple[FeedWatch, str] | None
) -> str:
    """Record `load` on its meter, untimed, then wait until the org's last alert feed is
    applied (with `feeds`) and the service is quiet a moment: the measured load then goes
    into a meter that holds data, its tallies and periods already evaluated. What the
    wait found, for the log."""
    send_untimed(service, api_key, load, clients)
    applied = "no feed watch"
    if feeds is not None:
        after = feeds[0].wait_applied(feeds[1], PRIME_FEEDS_WAIT_SECONDS)
        applied = (
            f"last feed applied after {after:.1f}s"
            if after is not None
            else f"WARNING: feeds still pending after {PRIME_FEEDS_WAIT_SECONDS:g}s"
        )
    quiet = _settled(common.TreeCpu(service.process.pid), PRIME_QUIET_SECONDS)
    return f"primed with {load.events} events (untimed); {applied}; then waited {quiet:.1f}s"


def create_org(emulator_host: str, project: str, name: str) -> str:
    """`metering orgs create NAME` against the emulator; the new org's API key."""
    return create_org_with_namespace(emulator_host, project, name)[0]


def create_org_with_namespace(emulator_host: str, project: str, name: str) -> tuple[str, str]:
    """`metering orgs create NAME` against the emulator; the new org's API key and
    namespace."""
    import subprocess

    env = {**os.environ, "DATASTORE_EMULATOR_HOST": emulator_host, "METERING_PROJECT": project}
    done = subprocess.run(
        [*common.metering_command(), "orgs", "create", name],
        env=env,
        cwd=common.ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise RuntimeError(f"metering orgs create {name}: {done.stderr.strip()}")
    issued = json.loads(done.stdout)
    return issued["apiKey"], issued["namespace"]


def run_rounds(args, emulator, workdir, rng, profile_dir=None):
    """Every service setting, `repeat` rounds. All settings' services run side by side
    (idle ones cost nothing), and each round -- on a freshly reset emulator with a new
    org -- measures raw, raw+rollups, then spread and hot for every setting, in an
    order rotated per round: settings see the emulator alike (its JIT keeps warming
    for minutes), and every ratio compares runs taken minutes apart at most."""
    emulator.reset()
    services: dict[str, common.Service] = {}
    results: list[CaseResult] = []
    profile = costs = None
    try:
        warm_key = None  # the demo org's key, printed by the first `serve` only
        for workers, threads in args.settings:
            config = f"{workers}x{threads}"
            services[config] = common.Service(
                emulator.host,
                workers,
                threads,
                workdir,
                project=PROJECT,
                # Ingestion alone unless asked: the delivery loop (alert evaluation) has
                # its own figures (benchmarks/alerts.py).
                extra_env={
                    "METERING_BACKGROUND_DELIVERY_SECONDS": "1" if args.delivery_loop else "0"
                },
            ).start()
            warm_key = warm_key or services[config].api_key
            if warm_key is None:
                raise RuntimeError("metering serve printed no API key for the demo org")
            warm_up(
                services[config],
                warm_key,
                args.warmup_events,
                args.clients,
                args.batch,
                rng,
                f"bench_warmup_{config}",
            )
        # The emulator's JIT keeps speeding up for tens of thousands of writes: warm it
        # with both kinds of raw commits before anything is measured.
        for case in ("raw", "raw+rollups"):
            if args.emulator_warmup >= args.batch:
                warm = run_raw(
                    emulator,
                    PROJECT,
                    args.emulator_warmup,
                    args.batch,
                    args.raw_threads,
                    0,
                    "—",
                    0,
                    case=case,
                )
                print(
                    f"  [emulator warm-up, untimed] {warm.case}: {warm.events} events at "
                    f"{warm.rate:,.0f}/s",
                    flush=True,
                )
        order = list(services)
        watch = FeedWatch(emulator.host, PROJECT) if args.delivery_loop and args.settle else None
        for run in range(1, args.repeat + 1):
            emulator.reset()
            key, namespace = create_org_with_namespace(emulator.host, PROJECT, f"bench-{run}")
            for case in args.raw_cases:
                raw = run_raw(
                    emulator,
                    PROJECT,
                    args.events,
                    args.batch,
                    args.raw_threads,
                    args.raw_warmup,
                    "—",
                    run,
                    case=case,
                )
                results.append(raw)
                print_case(raw)
            shift = (run - 1) % len(order)
            for config in order[shift:] + order[:shift]:
                service = services[config]
                for case in args.cases:
                    meter = create_meter(service, key, f"bench_{case}_{config}", args.aggregation)
                    create_alert_rules(service, key, meter, args.alert_rules, args.rule_thresholds)
                    if args.alert_rules and args.rules_age:
                        time.sleep(args.rules_age)  # past the stale-rule-cache window
                    users = args.users if case in ("spread", "cloudevents") else None
                    feeds = (watch, namespace) if watch is not None else None
                    primed = None
                    if args.prime_events:
                        primed = build_load(
                            case,
                            meter,
                            args.prime_events,
                            args.batch,
                            users,
                            f"r{run}-{config}-prime",
                            rng,
                        )
                        note = prime_meter(service, key, primed, args.clients, feeds)
                        print(f"  [{config} run {run} {case}] {note}", flush=True)
                    load = build_load(
                        case, meter, args.events, args.batch, users, f"r{run}-{config}", rng
                    )
                    result = run_case(
                        config,
                        run,
                        service,
                        emulator,
                        key,
                        load,
                        args.clients,
                        settle=args.settle,
                        feeds=feeds,
                        idle_seconds=args.idle_seconds if args.delivery_loop else 0.0,
                        compaction_wait=args.compaction_wait,
                        primed=primed,
                    )
                    results.append(result)
                    print_case(result)
        if args.request_costs:
            costs = request_costs(args, services[order[0]], emulator, key, rng)
        if profile_dir is not None:
            config = order[0]
            profile = profile_service(
                args, services[config], emulator, key, rng, profile_dir, config, results
            )
    finally:
        for service in services.values():
            service.stop()
    return results, profile, ((order[0], costs) if costs is not None else None)


def request_costs(args, service, emulator, key, rng) -> list[tuple]:
    """Emulator and service CPU per request of a few kinds, 8 clients each: what one
    request costs the emulator besides its Commit (auth lookups, the meter query)."""
    meter = create_meter(service, key, "bench_costs")
    counter = itertools.count()

    def batch(size: int, by_id: bool):
        def make():
            b = next(counter)
            names = {"meterId": meter["id"]} if by_id else {"eventName": meter["eventName"]}
            return json.dumps(
                {
                    "events": [
                        {
                            **names,
                            "userId": f"user-{rng.randrange(args.users)}",
                            "value": 1,
                            "idempotency": f"cost-{b}-{i}",
                        }
                        for i in range(size)
                    ]
                }
            ).encode()

        return make

    kinds = [
        ("auth only: POST with an empty body (400 after auth)", lambda: b"", 1600),
        ("1-event batch naming eventName", batch(1, False), 800),
        ("1-event batch naming meterId", batch(1, True), 800),
        ("100-event batch naming eventName", batch(100, False), 200),
        ("100-event batch naming meterId", batch(100, True), 200),
    ]
    found = []
    for label, make, count in kinds:
        for measured in (False, True):  # the first pass warms this path
            bodies = [make() for _ in range(count if measured else count // 4)]
            svc_cpu = common.TreeCpu(service.process.pid)
            emu_cpu = common.TreeCpu(emulator.process.pid)
            threads, start, records, _ = send_all(service, key, bodies, args.clients)
            s0, e0, t0 = svc_cpu.snapshot(), emu_cpu.snapshot(), time.perf_counter()
            start.wait()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - t0
            s1, e1 = svc_cpu.snapshot(), emu_cpu.snapshot()
            bad = [r for r in records if r[0] not in (201, 400)]
            if bad:
                raise RuntimeError(f"{label}: {bad[0][0]} {bad[0][3][:200]!r}")
        usage = common.Usage()
        for record in records:
            usage.add_header(record[2])
        found.append(
            (
                label,
                common.TreeCpu.used(e0, e1).seconds / count * 1e3,
                common.TreeCpu.used(s0, s1).seconds / count * 1e3,
                count / wall,
                usage.rpcs / max(1, usage.responses),
            )
        )
    return found


def print_request_costs(config: str, costs: list[tuple]) -> None:
    print(f"\nCPU per request by kind ({config}, 8 clients; ms of CPU per request):")
    print("| request | emulator CPU ms | service CPU ms | requests/s | RPCs |")
    print("|---|---|---|---|---|")
    for label, emulator_ms, service_ms, rate, rpcs in costs:
        print(f"| {label} | {emulator_ms:.2f} | {service_ms:.2f} | {rate:,.0f} | {rpcs:.2f} |")


def profile_service(args, service, emulator, key, rng, profile_dir, config, results):
    """One more spread run with py-spy sampling every process of the service."""
    out = profile_dir / f"profile-{config}.txt"
    profiler = common.Profiler(
        service.process.pid, out, rate=args.profile_rate, gil=not args.profile_all_threads
    )
    meter = create_meter(service, key, "bench_profiled")
    load = build_load("spread", meter, args.profile_events, args.batch, args.users, "profiled", rng)
    profiler.start()
    try:
        result = run_case(
            config,
            0,
            service,
            emulator,
            key,
            load,
            args.clients,
            profiled=True,
            when_sent=profiler.stop,
        )
    finally:
        profiler.stop()
    results.append(result)
    print_case(result)
    summary = common.summarize_profile(out, top=args.profile_top)
    return out, summary, result, len(load.bodies)


# -- output ----------------------------------------------------------------------------


def print_case(r: CaseResult) -> None:
    where = f"[{r.config} run {r.run} {r.case}]" + (" (py-spy running)" if r.profiled else "")
    if r.case.startswith("raw"):
        print(
            f"  {where} {r.events} events in {r.wall:.1f}s = {r.rate:,.0f} events/s "
            f"({r.writes_per_event:.2f} entities each); writer CPU {r.client_cpu_us:.0f} "
            f"us/event, emulator {r.emulator_cpu_us:.0f}; "
            f"other load {r.other_cores:.2f} cores; {r.stored_detail}",
            flush=True,
        )
    else:
        print(
            f"  {where} {r.events} events in {r.wall:.1f}s = {r.rate:,.0f} ev/s; service "
            f"CPU {r.service_cpu_us:.0f} us/ev, client {r.client_cpu_us:.0f}, emulator "
            f"{r.emulator_cpu_us:.0f}; other load {r.other_cores:.2f} cores; worker CPU "
            f"{r.worker_cpu_split}; failed {r.failed_requests}; stored "
            f"{'OK' if r.stored_ok else 'WRONG'} {r.stored_detail}",
            flush=True,
        )
    if r.answer_cpu_s is not None and r.evaluation_cpu_s is not None:
        took = (
            f"{r.evaluation_wall_s:.1f}s"
            if r.evaluation_wall_s is not None
            else "still pending at the end of --settle"
        )
        print(
            f"    {where} service CPU {r.answer_cpu_s:.2f}s up to the last answer, then "
            f"{r.evaluation_cpu_s:.2f}s until the last alert feed was applied ({took}): "
            f"{r.service_cpu_us:.0f} us/event up to the last feed applied (the bar's "
            f"figure); {r.settled_cpu_us:.0f} us/event through the quiet test",
            flush=True,
        )
    if r.idle_cpu_per_s is not None:
        print(
            f"    {where} idle service CPU afterwards, no traffic: "
            f"{1000 * r.idle_cpu_per_s:.1f} ms per second (median of 1 s slices "
            f"{1000 * (r.idle_cpu_median_per_s or 0.0):.1f}), measured "
            + (
                f"once compaction was done ({r.compacted_after_s:.1f}s after the settle)"
                if r.compacted_after_s is not None
                else "with compaction maybe under way (not waited for, or not done in time)"
            ),
            flush=True,
        )
    for failure in r.failures:
        print(f"    failure: {failure}", flush=True)


def _round_rates(results, case) -> dict:
    """Rates of one case by (setting, round); raw runs (shared by all settings) by round."""
    if case.startswith("raw"):
        return {r.run: r.rate for r in results if r.case == case}
    return {(r.config, r.run): r.rate for r in results if r.case == case and not r.profiled}


def table(results: list[CaseResult]) -> str:
    head = (
        "| setting | run | case | events | events/s | × raw | × raw+rollups | × raw-ndb | "
        "× raw-datastore | × spread | "
        "p50 ms | p95 ms | service CPU µs/event | client CPU µs/event | "
        "emulator CPU µs/event | other load (cores) | reads/event | writes/event | "
        "RPCs/request | failed requests | stored exact |"
    )
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    raw_of, spread_of = _round_rates(results, "raw"), _round_rates(results, "spread")
    rollups_of = _round_rates(results, "raw+rollups")
    ndb_of = _round_rates(results, "raw-ndb")
    plain_of = _round_rates(results, "raw-datastore")
    for r in results:

        def ratio(of, key=None, r=r):
            key = r.run if key is None else key
            return f"{r.rate / of[key]:.2f}" if key in of and not r.profiled else ""

        if r.case.startswith("raw"):
            name = {
                "raw": "raw: event inserts",
                "raw+rollups": "raw+rollups: the service's commits",
                "raw-ndb": "raw-ndb: NDB put_multi",
                "raw-datastore": "raw-datastore: Client.put_multi",
            }[r.case]
            rows.append(
                f"| {r.config} | {r.run} | {name}, 8 threads | {r.events} | {r.rate:,.0f} | "
                f"{ratio(raw_of)} | {ratio(rollups_of)} | {ratio(ndb_of)} | "
                f"{ratio(plain_of)} | | | | — | "
                f"{r.client_cpu_us:.0f} (writer) | {r.emulator_cpu_us:.0f} | "
                f"{r.other_cores:.2f} | 0 | {r.writes_per_event:.3f} | 1 | "
                f"{r.failed_requests} | {'yes' if r.stored_ok else 'NO'} |"
            )
            continue
        x_spread = ratio(spread_of, (r.config, r.run)) if r.case == "hot" else ""
        name = r.case + (" (under py-spy)" if r.profiled else "")
        rows.append(
            f"| {r.config} | {r.run or '—'} | {name} | {r.events} | {r.rate:,.0f} | "
            f"{ratio(raw_of)} | {ratio(rollups_of)} | {ratio(ndb_of)} | {ratio(plain_of)} | "
            f"{x_spread} | "
            f"{r.p50_ms:.0f} | "
            f"{r.p95_ms:.0f} | {r.service_cpu_us:.0f} | {r.client_cpu_us:.0f} | "
            f"{r.emulator_cpu_us:.0f} | {r.other_cores:.2f} | {r.reads_per_event:.3f} | "
            f"{r.writes_per_event:.3f} | {r.rpcs_per_batch:.2f} | {r.failed_requests} | "
            f"{'yes' if r.stored_ok else 'NO'} |"
        )
    return "\n".join(rows)


def _median(values):
    return statistics.median(values) if values else float("nan")


def bars(results: list[CaseResult]) -> list[tuple[str, bool, str]]:
    """Each bar per setting: ratios on the median over rounds (each round's ratio is of
    back-to-back runs), per-run bars on every run."""
    measured = [r for r in results if not r.profiled]
    spread_of = _round_rates(measured, "spread")
    checks = []
    for config in dict.fromkeys(r.config for r in measured if not r.case.startswith("raw")):
        mine = [r for r in measured if r.config == config]
        service = [r for r in mine if not r.case.startswith("raw")]
        hot = [r for r in mine if r.case == "hot"]
        for case, what in (
            ("raw", "raw emulator (hand-built protobuf commits)"),
            ("raw-ndb", "raw write rate through NDB put_multi"),
            ("raw-datastore", "raw write rate through google-cloud-datastore"),
        ):
            of = _round_rates(measured, case)
            ratios = [r.rate / of[r.run] for r in mine if r.case == "spread" and r.run in of]
            if ratios:
                checks.append(
                    (
                        f"{config}: spread ≥ {BARS['spread_over_raw']} × {what} (median of rounds)",
                        _median(ratios) >= BARS["spread_over_raw"],
                        f"median {_median(ratios):.2f}; rounds "
                        + ", ".join(f"{x:.2f}" for x in ratios),
                    )
                )
        if hot:
            pairs = [
                h.rate / spread_of[(config, h.run)] for h in hot if (config, h.run) in spread_of
            ]
            if pairs:
                checks.append(
                    (
                        f"{config}: hot key ≥ {BARS['hot_over_spread']} × spread "
                        "(median of rounds)",
                        _median(pairs) >= BARS["hot_over_spread"],
                        f"median {_median(pairs):.2f}; rounds "
                        + ", ".join(f"{x:.2f}" for x in pairs),
                    )
                )
            checks.append(
                (
                    f"{config}: hot key: no failed request, exact count and sum",
                    all(h.failed_requests == 0 and h.stored_ok and h.not_created == 0 for h in hot),
                    "; ".join(
                        f"#{h.run} failed {h.failed_requests}, {h.stored_detail}" for h in hot
                    ),
                )
            )
        checks.append(
            (
                f"{config}: every run stored exactly what was sent, no failed request",
                all(r.stored_ok and r.failed_requests == 0 and r.not_created == 0 for r in mine),
                f"{len(mine)} runs",
            )
        )
        cpu = [r.service_cpu_us for r in service]
        checks.append(
            (
                f"{config}: service CPU ≤ {BARS['cpu_us_per_event']:.0f} µs/event (every run)",
                all(x <= BARS["cpu_us_per_event"] for x in cpu),
                f"median {_median(cpu):.0f}; runs "
                + ", ".join(f"{r.case}#{r.run} {r.service_cpu_us:.0f}" for r in service),
            )
        )
        checks.append(
            (
                f"{config}: ≤ {BARS['reads_per_event']:.0f} read and "
                f"≤ {BARS['writes_per_event']:.0f} writes per event (every run)",
                all(
                    r.reads_per_event <= BARS["reads_per_event"]
                    and r.writes_per_event <= BARS["writes_per_event"]
                    and r.usage_missing == 0
                    for r in service
                ),
                ", ".join(
                    f"{r.case}#{r.run} {r.reads_per_event:.3f} r / {r.writes_per_event:.3f} w"
                    for r in service
                ),
            )
        )
    return checks


def best_setting(results: list[CaseResult]) -> list[str]:
    """Settings ranked by median spread throughput, with their other medians."""
    raw_of = _round_rates(results, "raw")
    lines = []
    for config in dict.fromkeys(r.config for r in results if not r.case.startswith("raw")):
        mine = [r for r in results if r.config == config and not r.profiled]
        spread = [r for r in mine if r.case == "spread"]
        hot = [r for r in mine if r.case == "hot"]
        lines.append(
            (
                _median([r.rate for r in spread]),
                (
                    f"{config}: spread median {_median([r.rate for r in spread]):,.0f} ev/s "
                    f"(× raw {_median([r.rate / raw_of[r.run] for r in spread if r.run in raw_of]):.2f})"  # noqa: E501
                    f", hot median {_median([r.rate for r in hot]):,.0f} ev/s, service CPU median "
                    f"{_median([r.service_cpu_us for r in mine]):.0f} µs/event, spread p95 median "
                    f"{_median([r.p95_ms for r in spread]):.0f} ms"
                ),
            )
        )
    return [line for _, line in sorted(lines, key=lambda item: -item[0])]


def print_profile(
    out, summary: common.ProfileSummary, result: CaseResult, batches: int, gil: bool
) -> None:
    per_request_ms = result.service_cpu_us * result.events / batches / 1e3
    mode = "samples of the thread holding the GIL" if gil else "samples of every running thread"
    print(
        f"\nProfile of the service under py-spy ({mode}, gunicorn master and workers): "
        f"{summary.samples} samples over {batches} requests of {result.events // batches} "
        f"events; measured service CPU {per_request_ms:.1f} ms per request "
        f"({result.service_cpu_us:.0f} us/event), split below by sample share. "
        f"Raw stacks: {out}"
    )
    if not summary.samples:
        print("  (no samples: see the .log next to the file)")
        return
    share = lambda n: n / summary.samples  # noqa: E731
    print("  where a request's CPU goes (ms per request, share of samples):")
    for label, count in summary.buckets:
        print(f"    {share(count) * per_request_ms:6.2f} ms  {share(count):5.1%}  {label}")
    print("  top self time (the function running when sampled):")
    for name, count in summary.self_top:
        print(f"    {share(count) * per_request_ms:6.2f} ms  {share(count):5.1%}  {name}")
    print("  top inclusive time of the app's functions (the function anywhere on the stack):")
    for name, count in summary.inclusive_top:
        print(f"    {share(count) * per_request_ms:6.2f} ms  {share(count):5.1%}  {name}")


def print_chunk_sizes(workdir: Path) -> None:
    """Feeds per alert-evaluation chunk over the whole run, from the services' logs (each
    worker logs its chunks' sizes every 10 s: `alert chunks`); a worker's last seconds
    may be missing. A chunk's cost depends on its size (benchmarks/alerts_eval.py
    --chunk-feeds), and the delivery loop's wakes decide it."""
    sizes: collections.Counter[int] = collections.Counter()
    cpu = 0.0
    for path in sorted(workdir.glob("service-*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if "alert chunks: " not in line:
                continue
            try:
                message = json.loads(line)["message"]
                report = json.loads(message.split("alert chunks: ", 1)[1])
                found = report["feedsPerChunk"]
            except (ValueError, KeyError, IndexError):
                continue
            cpu += report.get("cpuSeconds", 0.0)
            for feeds, chunks in found.items():
                sizes[int(feeds)] += chunks
    if not sizes:
        print("\nAlert chunks: none logged (code from before session 9, or none applied)")
        return
    chunks = sum(sizes.values())
    feeds = sum(n * c for n, c in sizes.items())
    shown = ", ".join(f"{n}: {c}" for n, c in sorted(sizes.items()))
    print(
        f"\nAlert chunks (from the services' logs): {chunks} chunks of {feeds} feeds, "
        f"{feeds / chunks:.2f} feeds per chunk; feeds per chunk -> chunks: {shown}; "
        f"the chunks' own thread CPU {cpu:.2f}s ({1000 * cpu / max(feeds, 1):.1f} ms per feed)"
    )


# -- main ------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--events",
        type=int,
        default=20000,
        help="events per case, and entities of the raw run (default 20000)",
    )
    parser.add_argument("--batch", type=int, default=100, help="events per request (100)")
    parser.add_argument("--clients", type=int, default=8, help="client threads (8)")
    parser.add_argument("--raw-threads", type=int, default=8, help="raw writer threads (8)")
    parser.add_argument(
        "--emulator-warmup",
        type=int,
        default=30000,
        help="events of each raw kind written (untimed) before the first "
        "round, to warm the emulator's JIT (30000)",
    )
    parser.add_argument(
        "--raw-warmup",
        type=int,
        default=4000,
        help="entities written (untimed) before the raw run, to warm the emulator's JIT (4000)",
    )
    parser.add_argument(
        "--raw-cases",
        default=",".join(RAW_CASES),
        help="raw writer runs per round, of: "
        + "; ".join(f"{name}: {what}" for name, what in RAW_CASES.items())
        + " (default all; `raw` is required)",
    )
    parser.add_argument(
        "--warmup-events",
        type=int,
        default=4000,
        help="events sent (untimed) to each new service before its rounds (4000)",
    )
    parser.add_argument(
        "--aggregation",
        default="sum",
        help="aggregationType of the measured meters (sum); summaries check "
        "event counts always, values for sum",
    )
    parser.add_argument(
        "--users", type=int, default=1000, help="users the spread case draws from (1000)"
    )
    parser.add_argument(
        "--configs",
        default="2x8",
        help="comma-separated WORKERSxTHREADS settings of `metering serve` "
        "(default 2x8, serve's own default)",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="rounds (raw, spread, hot) per setting (default 3)"
    )
    parser.add_argument(
        "--cases",
        default="spread,hot",
        help="service cases to run: spread,hot (default both), cloudevents (spread's load "
        "as CloudEvents through /api/v1/events)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after the measured rounds, one more spread run on the first "
        "setting under py-spy (needs py-spy) and its top costs",
    )
    parser.add_argument(
        "--profile-events", type=int, default=10000, help="events of the profiled run (10000)"
    )
    parser.add_argument(
        "--request-costs",
        action="store_true",
        help="after the rounds, emulator and service CPU per request of a few "
        "kinds (auth only, 1 and 100 events by eventName or meterId)",
    )
    parser.add_argument("--profile-rate", type=int, default=100, help="py-spy samples/s (100)")
    parser.add_argument(
        "--profile-all-threads",
        action="store_true",
        help="sample every running thread, not only the one holding the GIL",
    )
    parser.add_argument("--profile-top", type=int, default=25)
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--alert-rules",
        type=int,
        default=0,
        help="alert rules created on each measured meter (0): compare 0 and 20 to see what "
        "the usage feed costs ingestion",
    )
    parser.add_argument(
        "--rule-thresholds",
        choices=list(RULE_THRESHOLDS),
        default="dense",
        help="the alert rules' thresholds, rule n of --alert-rules: "
        + "; ".join(f"{kind}: {what}" for kind, what in RULE_THRESHOLDS.items())
        + " (default dense)",
    )
    parser.add_argument(
        "--prime-events",
        type=int,
        default=0,
        help="events recorded (untimed) on each measured meter after its rules and "
        "--rules-age, same users and values as the measured load, before it; then waited "
        "until no alert feed of the org is left (with --delivery-loop and --settle) and "
        "the service is quiet a moment: the measured load goes into a meter that already "
        "holds data, not the transient of new tallies (0: not primed, the default); the "
        "stored check expects primed and measured events",
    )
    parser.add_argument(
        "--rules-age",
        type=float,
        default=0.0,
        help="seconds to wait after creating the rules before recording: past the rule "
        "cache's TTL plus the request deadline (31 s by default) the evaluator no longer "
        "re-reads touched tallies, its steady state",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=0.0,
        help="seconds at most to wait, after a case's last answer, for the service to be "
        "quiet before reading its CPU (0: read at once): with the delivery loop on, the "
        "alert evaluation of the last batches then counts too. With the delivery loop, it "
        "first waits until no alert feed of the round's org is left (its CPU then is the "
        "figure per event), then for the quiet test (compaction), both within this",
    )
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=IDLE_SECONDS,
        help="with --delivery-loop, seconds of no traffic after each round's settle over "
        f"which the service's idle CPU per second is measured ({IDLE_SECONDS:g}; 0: not)",
    )
    parser.add_argument(
        "--compaction-wait",
        type=float,
        default=COMPACTION_WAIT_SECONDS,
        help="with --delivery-loop and --settle, seconds at most to wait before the idle "
        "measurement until compaction has folded every rollup of the round's org (asked "
        "of the emulator): about 2 minutes after a round of 4000 events "
        f"({COMPACTION_WAIT_SECONDS:g}: not waited for; the idle figure then includes "
        "compaction's bursts)",
    )
    parser.add_argument(
        "--delivery-loop",
        action="store_true",
        help="keep `metering serve`'s delivery loop on (alert evaluation and webhook sends "
        "then count in the service's CPU); off by default: ingestion alone",
    )
    args = parser.parse_args(argv)
    args.cases = [c for c in args.cases.split(",") if c]
    if set(args.cases) - {"spread", "hot", "cloudevents"}:
        parser.error("--cases takes spread, hot and/or cloudevents")
    args.raw_cases = [c for c in args.raw_cases.split(",") if c]
    if "raw" not in args.raw_cases or set(args.raw_cases) - set(RAW_CASES):
        parser.error("--raw-cases takes raw and any of " + ", ".join(RAW_CASES))
    args.settings = []
    for item in args.configs.split(","):
        workers, _, threads = item.strip().partition("x")
        args.settings.append((int(workers), int(threads)))
    if args.events < args.batch:
        parser.error("--events must be at least --batch")
    if args.prime_events and args.prime_events < args.batch:
        parser.error("--prime-events must be 0 or at least --batch")
    return args


def source_state() -> str:
    """The commit measured, and whether app/ differs from it."""
    import subprocess

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=common.ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "app"],
            cwd=common.ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "source: not a git checkout"
    return f"source: commit {commit}" + (" + uncommitted changes in app/" if dirty else "")


def _interrupt(*_):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = parse_args(argv)
    # SIGTERM (and SIGHUP) unwind like Ctrl-C, so every process group we started ends.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    rng = random.Random(args.seed)
    workdir = common.scratch_dir()
    started = time.monotonic()
    print(
        f"metering ingest benchmark — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, load average "
        f"{os.getloadavg()[0]:.2f}; {source_state()}; logs in {workdir}",
        flush=True,
    )
    emulator = common.start_emulator("firestore", workdir)
    try:
        print(f"Firestore-mode emulator at {emulator.host}", flush=True)
        results, profile, costs = run_rounds(
            args, emulator, workdir, rng, workdir if args.profile else None
        )
    finally:
        emulator.stop()

    print(
        f"\nIngestion on the Firestore-mode emulator: {args.batch}-event requests from "
        f"{args.clients} client threads, {args.alert_rules} alert rules per meter "
        f"({args.rule_thresholds} thresholds; delivery loop "
        f"{'on' if args.delivery_loop else 'off'}), "
        + (
            f"each meter primed with {args.prime_events} untimed events before its measured load"
            if args.prime_events
            else "measured loads into new meters (not primed)"
        )
        + ", spread over "
        f"{args.users} users or one hot (meter, "
        f"user); {args.repeat} round(s) per setting ({time.monotonic() - started:.0f}s)"
    )
    print(table(results))
    print("\nBars:")
    checks = bars(results)
    for label, ok, detail in checks:
        print(f"  {'MET ' if ok else 'MISS'}  {label}: {detail}")
    if len(args.settings) > 1:
        print("\nSettings, best spread throughput first:")
        for line in best_setting(results):
            print(f"  {line}")
    if args.delivery_loop and args.alert_rules:
        print_chunk_sizes(workdir)
    if costs is not None:
        print_request_costs(*costs)
    if profile is not None:
        out, summary, result, batches = profile
        print_profile(out, summary, result, batches, not args.profile_all_threads)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "cases": [asdict(r) for r in results],
                    "bars": [{"bar": b, "met": ok, "detail": d} for b, ok, d in checks],
                },
                indent=2,
            )
        )
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
