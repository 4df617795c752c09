"""Liveness and readiness over HTTP, with the Datastore up and unreachable."""

from __future__ import annotations

import time

from app import create_app
from app.emulator import free_port
from tests.support.http import Api, error_of
from tests.support.server import LiveServer


def test_healthz_and_readyz_answer_without_credentials(anonymous):
    assert anonymous.get("/healthz").json() == {"status": "ok"}
    ready = anonymous.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ok", "datastore": "ok"}


def test_readyz_fails_fast_when_the_datastore_is_unreachable(config, monkeypatch):
    # make_client exports the emulator address; monkeypatch restores it afterwards.
    monkeypatch.setenv("DATASTORE_EMULATOR_HOST", config.emulator_host)
    nowhere = config.replace(emulator_host=f"127.0.0.1:{free_port()}")
    server = LiveServer(create_app(nowhere)).start()
    try:
        caller = Api(server.url)
        started = time.monotonic()
        answer = caller.get("/readyz")
        assert time.monotonic() - started < 10
        assert answer.status_code == 503
        assert error_of(answer)["code"] == "datastore_unavailable"
        assert caller.get("/healthz").status_code == 200  # alive, just not ready
    finally:
        server.stop()
