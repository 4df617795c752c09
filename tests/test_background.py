"""Compaction in the background of `metering serve` (app/background.py): what App
Engine's cron does, without a cron. Rollups fold on their own and no answer changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from google.cloud import datastore

from app import create_app
from app.config import Config
from tests.support.http import Api
from tests.support.server import LiveServer
from tests.support.waiting import eventually

KINDS = ("meter-rollup", "meter-org-rollup")


def _dirty(config, org) -> int:
    raw = datastore.Client(project=config.project, namespace=org["namespace"])
    return sum(1 for kind in KINDS for e in raw.query(kind=kind).fetch() if e.get("Dirty"))


def test_a_served_service_folds_its_rollups_and_no_answer_changes(
    serve, org, config, emulator_kind
):
    if emulator_kind != "firestore":
        pytest.skip("the legacy emulator leaves no deltas to compact")
    api = Api(serve(background_compaction_seconds=0.3), org["apiKey"])
    meter = api.create_meter(aggregationType="max", dimensions=["region"])
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    for batch in range(4):  # quick batches: the org-wide rollup takes several shards
        api.record(
            *(
                {
                    "meterId": meter["id"],
                    "userId": f"u{user}",
                    "value": batch * 10 + user,
                    "timestamp": (now - timedelta(hours=user)).isoformat(),
                    "dimensions": {"region": "eu" if user % 2 else "us"},
                }
                for user in range(10)
            )
        )
    query = {
        "meterId": meter["id"],
        "periodStart": (now - timedelta(days=1)).isoformat(),
        "periodEnd": (now + timedelta(hours=1)).isoformat(),
        "windowSize": "hour",
        "groupBy": "region",
    }
    before = api.summary(**query)
    eventually(lambda: _dirty(config, org) == 0, timeout=30, what="every rollup folded")
    assert api.summary(**query) == before
    assert before["value"] == 39


def test_only_a_positive_interval_starts_it():
    assert Config.from_env({}).background_compaction_seconds == 0
    assert (
        Config.from_env(
            {"METERING_BACKGROUND_COMPACTION_SECONDS": "2.5"}
        ).background_compaction_seconds
        == 2.5
    )


def test_the_loop_ends_with_its_server(config):
    """A served app's loop stops with it: no thread goes on folding (and drawing random
    numbers) under the tests that follow."""
    app = create_app(config.replace(background_compaction_seconds=0.2))
    compactor = app.extensions["background_compaction"]
    server = LiveServer(app).start()
    assert compactor.thread.is_alive()
    server.stop()
    assert not compactor.thread.is_alive()
    assert "background_compaction" not in app.extensions
