"""A property test of alert evaluation against a brute force.

Random streams (several users, values, timestamps out of order across day boundaries in
UTC and Asia/Kolkata, dimension values, cancellations), recorded in phases by concurrent
batches, with the evaluator run to quiescence between phases. A phase only records or
only cancels, so within it every tally moves one way and which crossings happen does not
depend on how the evaluator cut its work into chunks. The brute force recomputes every
(rule, subject, period) value from the live events after each phase and steps each
threshold's state; the triggers stored must be exactly its crossings and resolutions.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.alerts import create_rule, rfc3339, run_evaluator, triggers
from tests.support.http import Api
from tests.support.names import unique_org_name

USERS = ("u0", "u1", "u2")
RULES: tuple[tuple[Any, ...], ...] = (
    # (scope, period, zone, filter, notifyOnResolve)
    ("user", "day", "Asia/Kolkata", {}, True),
    ("org", "month", "UTC", {}, False),
    ({"userId": "u1"}, "day", "UTC", {"model": "a"}, True),
)
THRESHOLDS = [5, 15, 30]

event = st.tuples(
    st.sampled_from(USERS),
    st.integers(0, 12),
    st.integers(6, 40 * 60),  # minutes ago: across UTC and Kolkata midnights
    st.sampled_from(("a", "b")),
)
recording = st.tuples(
    st.just("record"), st.lists(st.lists(event, min_size=1, max_size=6), min_size=1, max_size=4)
)
phase = st.one_of(
    recording,
    st.tuples(st.just("cancel"), st.lists(st.integers(0, 10_000), min_size=1, max_size=4)),
)


def _period_start(moment: datetime, period: str, zone: str) -> datetime:
    local = moment.astimezone(ZoneInfo(zone)).date()
    if period == "month":
        local = local.replace(day=1)
    return datetime(local.year, local.month, local.day, tzinfo=ZoneInfo(zone)).astimezone(UTC)


def _values(aggregation: str, rule_spec, live: list[tuple]) -> dict[tuple, int]:
    """(subject, period start) -> value of one rule over the live events."""
    scope, period, zone, wanted, _notify = rule_spec
    values: dict[tuple, int] = {}
    for user, value, at, model in live:
        if isinstance(scope, dict) and user != scope["userId"]:
            continue
        if wanted and wanted.get("model") != model:
            continue
        key = (None if scope == "org" else user, _period_start(at, period, zone))
        if aggregation == "sum":
            values[key] = values.get(key, 0) + value
        elif aggregation == "count":
            values[key] = values.get(key, 0) + 1
        else:
            values[key] = max(values.get(key, 0), value)
    return values


class BruteForce:
    def __init__(self, aggregation: str):
        self.aggregation = aggregation
        self.state: dict[tuple, bool] = {}
        self.found: Counter = Counter()

    def step(self, live: list[tuple]) -> None:
        for index, spec in enumerate(RULES):
            values = _values(self.aggregation, spec, live)
            subjects = set(values) | {k[1:3] for k in self.state if k[0] == index}
            for subject, start in subjects:
                value = values.get((subject, start), 0)
                for threshold in THRESHOLDS:
                    key = (index, subject, start, threshold)
                    triggered = self.state.get(key, False)
                    if not triggered and value >= threshold:
                        self.state[key] = True
                        self.found[(index, subject, start, threshold, "alert.triggered")] += 1
                    elif triggered and value < threshold and spec[4]:
                        self.state[key] = False
                        self.found[(index, subject, start, threshold, "alert.resolved")] += 1


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    aggregation=st.sampled_from(("sum", "count", "max")),
    first=recording,
    more=st.lists(phase, max_size=3),
)
def test_triggers_equal_the_brute_force(server, admin, app, ndb_client, aggregation, first, more):
    phases = [first, *more]
    org = admin.post("/v1/admin/orgs", json={"name": unique_org_name("alerts")}).json()
    api = Api(server.url, org["apiKey"])
    meter = api.create_meter(aggregationType=aggregation, dimensions=["model"])
    rules = [
        create_rule(
            api,
            meter,
            scope=scope,
            period=period,
            timeZone=zone,
            filter=wanted,
            notifyOnResolve=notify,
            thresholds=THRESHOLDS,
        )
        for scope, period, zone, wanted, notify in RULES
    ]
    now = datetime.now(UTC).replace(microsecond=0)
    recorded: list[tuple[str, tuple]] = []  # (event id, (user, value, at, model))
    cancelled: set[str] = set()
    brute = BruteForce(aggregation)
    for kind, work in phases:
        if kind == "record":
            batches = [
                [
                    (user, value, now - timedelta(minutes=ago), model)
                    for user, value, ago, model in b
                ]
                for b in work
            ]

            def send(batch):
                body = [
                    {
                        "meterId": meter["id"],
                        "userId": user,
                        "value": value,
                        "timestamp": rfc3339(at),
                        "dimensions": {"model": model},
                    }
                    for user, value, at, model in batch
                ]
                return list(zip([e["id"] for e in api.record(*body)["events"]], batch))

            with ThreadPoolExecutor(4) as pool:
                for pairs in pool.map(send, batches):
                    recorded += pairs
        else:
            live = [event_id for event_id, _ in recorded if event_id not in cancelled]
            chosen = {live[i % len(live)] for i in work} if live else set()

            def cancel(event_id):
                answer = api.post(
                    "/v1/billing/meter-events/cancel", json={"events": [{"id": event_id}]}
                )
                assert answer.status_code == 200, answer.text

            with ThreadPoolExecutor(4) as pool:
                list(pool.map(cancel, chosen))
            cancelled |= chosen
        run_evaluator(app, ndb_client, org)
        brute.step([e for event_id, e in recorded if event_id not in cancelled])

    stored: Counter = Counter()
    for index, rule in enumerate(rules):
        for t in triggers(api, rule):
            start = datetime.fromisoformat(t["periodStart"].replace("Z", "+00:00"))
            stored[(index, t["userId"], start, t["threshold"], t["type"])] += 1
    assert stored == brute.found
