"""The receiver README.md shows under "Receiving webhooks" works as printed: it accepts a
real delivery of the service (once, however often it comes) and refuses a tampered one."""

from __future__ import annotations

import importlib
import re
import sys

import pytest

from tests.conftest import ROOT
from tests.support.receiver import Receiver
from tests.support.waiting import eventually


def readme_receiver_source() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Receiving webhooks", 1)[1].split("\n## ", 1)[0]
    [source] = [
        block for block in re.findall(r"```python\n(.*?)```", section, re.S) if "Flask" in block
    ]
    return source


@pytest.fixture
def receiver():
    running = Receiver().start()
    yield running
    running.stop()


def test_the_readme_receiver_verifies_a_real_delivery(api, admin, receiver, monkeypatch, tmp_path):
    created = api.post("/v1/webhooks/endpoints", json={"url": receiver.url})
    assert created.status_code == 201, created.text
    endpoint = created.json()
    assert api.post(f"/v1/webhooks/endpoints/{endpoint['id']}/test").status_code == 202

    def received():
        assert admin.get("/v1/cron/deliver").status_code == 200
        return receiver.received

    [delivery] = eventually(received, 30, "the test message")

    monkeypatch.setenv("METERING_WEBHOOK_SECRET", endpoint["secret"])
    (tmp_path / "readme_receiver.py").write_text(readme_receiver_source())
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "readme_receiver", raising=False)
    example = importlib.import_module("readme_receiver")
    client = example.app.test_client()

    def post(body: bytes, **headers: str):
        return client.post("/webhooks/metering", data=body, headers={**delivery.headers, **headers})

    assert post(delivery.body).status_code == 204
    assert post(delivery.body).status_code == 204  # a retry: acknowledged, handled once
    assert example.handled == {delivery.headers["webhook-id"]}
    assert post(delivery.body.replace(b"webhook.test", b"webhook.tost")).status_code == 400
    assert post(delivery.body, **{"webhook-id": "msg_forged"}).status_code == 400
    assert example.handled == {delivery.headers["webhook-id"]}
