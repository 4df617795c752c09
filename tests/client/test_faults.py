"""Exactly once through faults: many threads record through a proxy that drops
connections (before and after the service did the work), cuts answers, delays,
and answers 503 and 429; the summaries must equal what was recorded, exactly.
"""

from __future__ import annotations

import random
import threading
from collections import Counter

import httpx

from tests.client.fault_proxy import Chaos

THREADS, EVENTS_PER_THREAD = 8, 300
USERS, MODELS = ("ann", "bob", "cy", "dee", "eve"), ("small", "large")


class Tally:
    """The brute-force totals of what was recorded, per (user, model)."""

    def __init__(self):
        self.totals: Counter = Counter()
        self.counts: Counter = Counter()
        self._lock = threading.Lock()

    def record(self, client, rng: random.Random) -> None:
        user, model, value = rng.choice(USERS), rng.choice(MODELS), rng.randint(1, 1000)
        client.record("input_tokens", user, value, dimensions={"model": model})
        with self._lock:
            self.totals[(user, model)] += value
            self.counts[(user, model)] += 1

    def recorded(self) -> int:
        with self._lock:
            return sum(self.counts.values())


def in_threads(work, count: int = THREADS) -> None:
    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)


def assert_summaries_match(client, meter_id: str, tally: Tally) -> None:
    totals, counts = tally.totals, tally.counts
    whole = client.summary(meter_id)
    assert (whole.value, whole.event_count) == (sum(totals.values()), sum(counts.values()))
    grouped = client.summary(meter_id, group_by=["userId", "model"])
    got = {
        (w.group_by["userId"], w.group_by["model"]): (w.value, w.event_count)
        for w in grouped.windows
    }
    assert got == {key: (totals[key], counts[key]) for key in totals}
    for user in USERS:
        mine = client.summary(meter_id, user_id=user, filters={"model": "large"})
        assert mine.value == totals[(user, "large")] or (
            mine.value in (0, None) and totals[(user, "large")] == 0
        )


def test_many_threads_record_through_faults_and_nothing_is_lost_or_doubled(make_client, proxy):
    proxy.delay_seconds = 2.5  # longer than the client's timeout: the service still stores it
    chaos = Chaos(
        rates={
            "drop_before": 0.08,
            "drop_after": 0.1,
            "cut_after": 0.05,
            "delay": 0.06,
            "503": 0.08,
            "429": 0.03,
        },
        seed=7,
    )
    proxy.plan = chaos
    client = make_client(timeout=httpx.Timeout(2.0))
    meter = client.create_meter("Input tokens", "input_tokens", dimensions=["model"])

    tally = Tally()

    def work(seed: int) -> None:
        rng = random.Random(seed)
        for number in range(EVENTS_PER_THREAD):
            tally.record(client, rng)
            if seed == 0 and number == EVENTS_PER_THREAD // 2:
                chaos.outage("503", 1.5)  # every request fails for a while

    in_threads(work)
    client.close(timeout=120)

    faults = proxy.faults
    assert (
        min(faults[f] for f in ("drop_before", "drop_after", "cut_after", "delay", "503", "429"))
        >= 1
    ), faults
    assert client.stats.duplicates > 0  # batches stored before were sent again
    assert client.stats.created + client.stats.duplicates == THREADS * EVENTS_PER_THREAD
    proxy.plan = lambda request: "pass"
    assert_summaries_match(make_client(), meter.id, tally)
