"""Paced evaluation rounds (issue 14, session 12): once a round of the background loop has
caught up with an org's feeds, its next round of that org waits until
METERING_ALERT_ROUND_SPACING_SECONDS after the first began, so that the feeds of that
time are applied in one chunk; a round that left feeds is followed at once, and calls
without a pace (the cron route, these tests' evaluator runs) are never held."""

from __future__ import annotations

import time

import pytest

from app import create_app
from app.config import Config
from app.services.alerts import evaluate
from tests.support.alerts import create_rule, minutes_ago, triggers
from tests.support.http import Api
from tests.support.receiver import Receiver
from tests.support.server import LiveServer
from tests.support.waiting import eventually


def _record(api, meter: dict, user: str) -> None:
    api.record({"meterId": meter["id"], "userId": user, "value": 12, "timestamp": minutes_ago(5)})


def test_a_round_after_one_that_caught_up_waits_for_the_pace(app, ndb_client, org, api):
    meter = api.create_meter()
    rule = create_rule(api, meter, thresholds=[10])
    _record(api, meter, "a")
    with app.app_context(), ndb_client.context(namespace=org["namespace"]):
        assert evaluate.evaluate_org(100, pace=60.0) == 1
        _record(api, meter, "b")
        _record(api, meter, "c")
        assert evaluate.evaluate_org(100, pace=60.0) == 0  # paced: the feeds wait
        assert evaluate.evaluate_org(100) == 2  # no pace (the cron's call): both, at once
    assert sorted(t["userId"] for t in triggers(api, rule)) == ["a", "b", "c"]


def test_a_round_is_paced_from_when_it_began(app, ndb_client, org, api):
    meter = api.create_meter()
    create_rule(api, meter, thresholds=[10])
    _record(api, meter, "a")
    with app.app_context(), ndb_client.context(namespace=org["namespace"]):
        began = time.monotonic()
        assert evaluate.evaluate_org(100, pace=1.5) == 1
        _record(api, meter, "b")
        if time.monotonic() - began < 1.2:  # else this machine is too slow to tell
            assert evaluate.evaluate_org(100, pace=1.5) == 0
        time.sleep(max(0.0, began + 1.6 - time.monotonic()))
        assert evaluate.evaluate_org(100, pace=1.5) == 1


def test_a_round_that_left_feeds_is_followed_at_once(app, ndb_client, org, api):
    """A round stopped by its budget (or its time) did not catch up: a backlog is
    evaluated round after round, never held by the pace."""
    meter = api.create_meter()
    create_rule(api, meter, thresholds=[10])
    for user in ("a", "b", "c"):
        _record(api, meter, user)
    with app.app_context(), ndb_client.context(namespace=org["namespace"]):
        assert evaluate.evaluate_org(1, pace=60.0) == 1
        assert evaluate.evaluate_org(1, pace=60.0) == 1
        assert evaluate.evaluate_org(5, pace=60.0) == 1  # the last: caught up
        _record(api, meter, "d")
        assert evaluate.evaluate_org(5, pace=60.0) == 0


def test_the_spacing_is_read_from_the_environment():
    assert Config.from_env({}).alert_round_spacing_seconds == 1.0
    spaced = Config.from_env({"METERING_ALERT_ROUND_SPACING_SECONDS": "0.25"})
    assert spaced.alert_round_spacing_seconds == 0.25


@pytest.fixture
def receiver():
    running = Receiver().start()
    yield running
    running.stop()


PACE = 3.0


def test_the_background_loop_spaces_an_orgs_rounds(config, org, receiver):
    """The served loop: a batch recorded right after a round caught up is applied once
    the pace has passed since that round began, not at its wake. (On a machine too slow
    to apply the first batch within the pace, the second is applied at once: the bound
    below still holds.)"""
    app = create_app(
        config.replace(background_delivery_seconds=60, alert_round_spacing_seconds=PACE)
    )
    server = LiveServer(app).start()
    try:
        api = Api(server.url, org["apiKey"])
        assert api.post("/v1/webhooks/endpoints", json={"url": receiver.url}).status_code == 201
        meter = api.create_meter()
        rule = create_rule(api, meter, thresholds=[10])
        first = time.monotonic()
        _record(api, meter, "a")
        eventually(lambda: len(triggers(api, rule)) == 1, 30, "the first crossing")
        time.sleep(0.5)  # the round that applied it has caught up and ended
        _record(api, meter, "b")
        eventually(lambda: len(triggers(api, rule)) == 2, 30, "the second crossing")
        assert time.monotonic() - first >= PACE
    finally:
        server.stop()


def test_a_meter_that_crosses_often_gets_chunks_that_fit_before_they_are_planned(
    app, ndb_client, org, api, monkeypatch
):
    """(Session 12) A chunk is cut, before its plan, to the feeds whose commit should fit
    under MAX_MUTATIONS at the meter's last crossings per feed: planning a chunk whole,
    finding it too big, and planning its halves again was most of a dense chunk's CPU.
    Every crossing is still written once."""
    monkeypatch.setattr(evaluate, "MAX_MUTATIONS", 40)
    monkeypatch.setattr(evaluate, "BUCKET_RESERVE", 10)
    meter = api.create_meter()
    rule = create_rule(api, meter, thresholds=[1, 2, 3, 4, 5])

    def batch(number: int) -> None:  # four new users, each crossing all five thresholds
        api.record(
            *({"meterId": meter["id"], "userId": f"u{number}-{n}", "value": 5} for n in range(4))
        )

    batch(0)
    halved: list[int] = []
    halves = evaluate._halves

    def counted(meter_id, rules, feeds, settings, seeds):
        halved.append(len(feeds))
        return halves(meter_id, rules, feeds, settings, seeds)

    monkeypatch.setattr(evaluate, "_halves", counted)
    with app.app_context(), ndb_client.context(namespace=org["namespace"]):
        assert evaluate.evaluate_org(100) == 1
        assert evaluate._held_of(meter["id"]).crossings_per_feed == 20
        for number in range(1, 7):
            batch(number)
        assert evaluate.evaluate_org(100) == 6
    assert halved == []  # one feed per chunk fits: (40 - 10) // (1 + 20)
    assert len(triggers(api, rule)) == 7 * 4 * 5
