"""cron.yaml and its handler: who may call it, and that it compacts every org, bounded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import yaml
from google.cloud import datastore

from app import create_app
from tests.conftest import ROOT
from tests.support.http import Api, error_of
from tests.support.server import LiveServer

CRON = {"X-Appengine-Cron": "true"}


def _at(minutes_ago: int) -> str:
    moment = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return moment.isoformat().replace("+00:00", "Z")


def _dirty(config, org) -> int:
    raw = datastore.Client(project=config.project, namespace=org["namespace"])
    return sum(
        1
        for kind in ("meter-rollup", "meter-org-rollup")
        for e in raw.query(kind=kind).fetch()
        if e.get("Dirty")
    )


def _record_spread(api: Api, users: int) -> dict:
    """Events of `users` users over two days: one rollup per user and day."""
    meter = api.create_meter(aggregationType="max")
    api.record(
        *[
            {
                "meterId": meter["id"],
                "userId": f"u{u}",
                "value": u + day,
                "timestamp": _at(day * 24 * 60 + 5),
            }
            for u in range(users)
            for day in range(2)
        ]
    )
    return meter


@pytest.fixture
def production_server(config):
    """The service as on App Engine, where the platform vouches for the cron header."""
    server = LiveServer(create_app(config.replace(production=True))).start()
    yield server
    server.stop()


def test_cron_yaml_names_only_routes_that_answer_app_engine_cron(production_server):
    jobs = yaml.safe_load((ROOT / "cron.yaml").read_text())["cron"]
    assert jobs
    for job in jobs:
        assert job["schedule"] and job["description"]
        answer = Api(production_server.url).get(job["url"], headers=CRON)
        assert answer.status_code == 200, (job["url"], answer.text)


def test_the_cron_header_counts_only_on_app_engine(anonymous, production_server):
    refused = anonymous.get("/v1/cron/compact", headers=CRON)
    assert refused.status_code == 401 and error_of(refused)["code"] == "unauthorized"
    spoofed = Api(production_server.url).get("/v1/cron/compact", headers={"X-Appengine-Cron": "1"})
    assert spoofed.status_code == 401


def test_org_keys_cannot_run_jobs_but_the_admin_token_can(api, admin):
    assert api.get("/v1/cron/compact").status_code == 401
    assert admin.get("/v1/cron/compact").status_code == 200


def test_compaction_covers_every_org_and_changes_no_answer(
    api, other_api, admin, config, org, other_org, emulator_kind
):
    meters = [_record_spread(api, 2), _record_spread(other_api, 3)]
    period = {"periodStart": _at(3 * 24 * 60), "windowSize": "day"}
    before = [
        caller.summary(meterId=m["id"], **period) for caller, m in zip((api, other_api), meters)
    ]
    dirty = _dirty(config, org) + _dirty(config, other_org)
    if emulator_kind == "firestore":  # blind increments leave deltas; legacy has none
        assert dirty == 14  # a rollup per (user, day), and an org-wide one per day
    run = admin.get("/v1/cron/compact").json()
    assert run == {"orgs": 2, "visited": dirty, "compacted": dirty, "complete": True, "failed": []}
    assert _dirty(config, org) == _dirty(config, other_org) == 0
    assert [
        caller.summary(meterId=m["id"], **period) for caller, m in zip((api, other_api), meters)
    ] == before


def test_each_call_stops_at_its_budget_and_the_next_goes_on(config, org, other_org, emulator_kind):
    if emulator_kind != "firestore":
        pytest.skip("the legacy emulator leaves no deltas to compact")
    server = LiveServer(create_app(config.replace(cron_compact_budget=3))).start()
    try:
        _record_spread(Api(server.url, org["apiKey"]), 2)
        _record_spread(Api(server.url, other_org["apiKey"]), 2)
        admin = Api(server.url, config.admin_token)
        # 2 users x 2 days in each org: 4 user rollups and 2 org-wide ones, 12 in all
        runs = [admin.get("/v1/cron/compact").json() for _ in range(4)]
    finally:
        server.stop()
    assert [run["visited"] for run in runs] == [3, 3, 3, 3]
    assert [run["complete"] for run in runs][:3] == [False, False, False]
    assert sum(run["compacted"] for run in runs) == 12
    assert _dirty(config, org) == _dirty(config, other_org) == 0
