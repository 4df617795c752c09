"""`metering serve` killed with SIGKILL while messages are due or being sent, then started
again: every message arrives, none is lost, and a message sent twice is a retry of the
same `webhook-id` (its lease, taken by the killed worker, expired)."""

from __future__ import annotations

import signal
import time

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


def _hanging_send(emulator, procs, receiver: Receiver, timeout: float, hang: float):
    """A started service whose org's endpoint (the receiver) hangs on its first message:
    (service, env, port, api, endpoint, that message's id), once its send is under way."""
    port = free_port()
    env = cli_env(
        DATASTORE_EMULATOR_HOST=emulator.host,
        METERING_ADMIN_TOKEN=ADMIN_TOKEN,
        METERING_PROJECT="metering-test",
        METERING_WEBHOOK_TIMEOUT_SECONDS=str(timeout),
    )
    first = _serve(procs, port, env, "first")
    base = f"http://127.0.0.1:{port}"
    org = Api(base, ADMIN_TOKEN).post("/v1/admin/orgs", json={"name": unique_org_name()})
    api = Api(base, org.json()["apiKey"])
    endpoint = api.post("/v1/webhooks/endpoints", json={"url": receiver.url}).json()
    receiver.mode, receiver.hang_seconds = "hang", hang
    sent = api.post(f"/v1/webhooks/endpoints/{endpoint['id']}/test").json()["id"]
    wait_until(lambda: len(receiver.received) >= 1, 30, "a send under way")
    return first, env, port, api, endpoint, sent


def test_a_service_killed_mid_send_and_restarted_delivers_every_message(emulator, procs):
    receiver = Receiver().start()
    try:
        first, env, port, api, endpoint, sent = _hanging_send(
            emulator, procs, receiver, TIMEOUT_SECONDS, TIMEOUT_SECONDS - 0.5
        )
        ids = {sent}
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


def test_a_service_stopped_mid_send_exits_at_once_and_the_next_delivers_it(emulator, procs):
    """SIGTERM while a send hangs (session 13): the workers exit once their requests are
    answered, without waiting for the send's timeout (Python joins a thread pool's
    threads at exit; gunicorn then waited its graceful 5 s), and the next start delivers
    the message, released at its start (`app/storage/journal.py`)."""
    receiver = Receiver().start()
    try:
        first, env, port, _api, _endpoint, sent = _hanging_send(emulator, procs, receiver, 10, 9.0)
        stopped = time.monotonic()
        first.process.send_signal(signal.SIGTERM)
        assert first.wait(10) == 0
        assert time.monotonic() - stopped < 3.0  # not the send's 10 s, nor gunicorn's 5 s
        assert "Traceback" not in first.stderr()
        receiver.mode = "ok"
        second = _serve(procs, port, env, "second")
        wait_until(
            lambda: any(r.headers["webhook-id"] == sent for r in receiver.received[1:]),
            30,
            "the message delivered after the restart",
            second,
        )
    finally:
        receiver.stop()
