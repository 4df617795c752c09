"""`metering serve` killed with SIGKILL while messages are due or being sent, then started
again: every message arrives, none is lost, and a message sent twice is a retry of the
same `webhook-id` (its lease, taken by the killed worker, expired)."""

from __future__ import annotations

import signal

import pytest
from standardwebhooks import Webhook

from app.emulator import free_port
from app.services.webhooks import dispatch
from tests.conftest import ADMIN_TOKEN
from tests.support.http import Api
from tests.support.names import unique_org_name
from tests.support.processes import cli_env, wait_serving, wait_until
from tests.support.receiver import Receiver

pytestmark = pytest.mark.slow
TIMEOUT_SECONDS = 2  # the lease of a killed sender expires after this + 10 s (LEASE_MARGIN_SECONDS)


def _serve(procs, port: int, env: dict, name: str):
    child = procs.start(
        ["serve", "--port", str(port), "--workers", "1", "--threads", "4"], env, name
    )
    wait_serving(f"http://127.0.0.1:{port}/healthz", 60, name, child)
    return child


def test_a_service_killed_mid_send_and_restarted_delivers_every_message(emulator, procs):
    receiver = Receiver().start()
    port = free_port()
    env = cli_env(
        DATASTORE_EMULATOR_HOST=emulator.host,
        METERING_ADMIN_TOKEN=ADMIN_TOKEN,
        METERING_PROJECT="metering-test",
        METERING_WEBHOOK_TIMEOUT_SECONDS=str(TIMEOUT_SECONDS),
    )
    try:
        first = _serve(procs, port, env, "first")
        base = f"http://127.0.0.1:{port}"
        org = Api(base, ADMIN_TOKEN).post("/v1/admin/orgs", json={"name": unique_org_name()})
        api = Api(base, org.json()["apiKey"])
        endpoint = api.post("/v1/webhooks/endpoints", json={"url": receiver.url}).json()
        receiver.mode, receiver.hang_seconds = "hang", TIMEOUT_SECONDS - 0.5
        ids = {api.post(f"/v1/webhooks/endpoints/{endpoint['id']}/test").json()["id"]}
        wait_until(lambda: len(receiver.received) >= 1, 30, "a send under way")
        first.signal_group(signal.SIGKILL)  # killed mid-send: the message stays leased
        first.wait(10)
        receiver.mode = "ok"
        second = _serve(procs, port, env, "second")
        ids |= {
            api.post(f"/v1/webhooks/endpoints/{endpoint['id']}/test").json()["id"] for _ in range(5)
        }
        wait_until(
            lambda: ids <= {r.headers["webhook-id"] for r in receiver.received[1:]},
            TIMEOUT_SECONDS + dispatch.LEASE_MARGIN_SECONDS + 30,
            "every message delivered after the restart",
            second,
        )
    finally:
        receiver.stop()
    verifier = Webhook(endpoint["secret"])
    for request in receiver.received:
        verifier.verify(request.body, request.headers)
    assert {r.headers["webhook-id"] for r in receiver.received} == ids

    def log() -> list[dict]:
        return api.get(f"/v1/webhooks/endpoints/{endpoint['id']}/messages").json()["messages"]

    # a send's result is recorded after the receiver answered (the senders' group
    # commits): the last one may still read as pending for a moment
    wait_until(lambda: {m["status"] for m in log()} == {"delivered"}, 30, "every attempt recorded")
    assert {m["id"] for m in log()} == ids
