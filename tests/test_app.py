"""The app factory and its configuration."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app import create_app
from app.config import DEV_HASHID_SALT, Config


def test_config_reads_the_environment():
    config = Config.from_env(
        {
            "DATASTORE_EMULATOR_HOST": "127.0.0.1:9999",
            "GOOGLE_CLOUD_PROJECT": "proj",
            "METERING_HASHID_SALT": "salty",
            "METERING_ADMIN_TOKEN": "tok",
            "METERING_MAX_BATCH_EVENTS": "25",
            "METERING_MAX_EVENT_AGE_DAYS": "7",
            "METERING_MAX_EVENT_LEAD_SECONDS": "60",
            "METERING_MAX_BODY_BYTES": "2048",
        }
    )
    assert config == Config(
        project="proj",
        emulator_host="127.0.0.1:9999",
        hashid_salt="salty",
        admin_token="tok",
        max_batch_events=25,
        max_event_age=timedelta(days=7),
        max_event_lead=timedelta(seconds=60),
        max_body_bytes=2048,
    )


def test_config_defaults_without_environment():
    config = Config.from_env({})
    assert (config.emulator_host, config.hashid_salt, config.admin_token) == (
        None,
        DEV_HASHID_SALT,
        None,
    )
    assert config.max_batch_events == 100 and config.max_event_age == timedelta(days=35)


def test_config_refuses_a_non_numeric_limit():
    with pytest.raises(ValueError, match="METERING_MAX_BATCH_EVENTS"):
        Config.from_env({"METERING_MAX_BATCH_EVENTS": "many"})


def test_the_factory_applies_a_smaller_batch_limit(config, org):
    from tests.support.http import Api, error_of
    from tests.support.server import LiveServer

    server = LiveServer(create_app(config.replace(max_batch_events=2, max_body_bytes=4096))).start()
    try:
        api = Api(server.url, org["apiKey"])
        meter = api.create_meter()
        event = {"meterId": meter["id"], "userId": "u", "value": 1}
        assert api.post("/v1/billing/meter-events", json={"events": [event] * 2}).status_code == 201
        too_many = api.post("/v1/billing/meter-events", json={"events": [event] * 3})
        assert too_many.status_code == 400 and error_of(too_many)["param"] == "events"
        too_big = api.post(
            "/v1/billing/meter-events", json={"events": [dict(event, metadata={"x": "y" * 5000})]}
        )
        assert too_big.status_code == 413 and error_of(too_big)["code"] == "payload_too_large"
    finally:
        server.stop()
