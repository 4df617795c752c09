"""`metering serve` killed with SIGKILL while messages are due or being sent, then started
again: every message arrives, none is lost, and a message sent twice is a retry of the
same `webhook-id` (its lease, taken by the killed worker, expired)."""

from __future__ import annotations

import signal
import time

import pytest
from standardwebhooks import Webhook

from app import background
from app.emulator import free_port
from app.services.webhooks import dispatch
from tests.conftest import ADMIN_TOKEN
from tests.support.alerts import create_rule, minutes_ago
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
    answered and their drain's time is up (session 15: `background.DRAIN_SECONDS`),
    without waiting for the send's timeout (Python joins a thread pool's threads at
    exit; gunicorn then waited its graceful timeout), and the next start delivers the
    message, taken over at its start (`app/storage/journal.py`)."""
    receiver = Receiver().start()
    try:
        first, env, port, _api, _endpoint, sent = _hanging_send(emulator, procs, receiver, 10, 9.0)
        stopped = time.monotonic()
        first.process.send_signal(signal.SIGTERM)
        assert first.wait(10) == 0
        # gunicorn ends a worker's loop within about 2 s, then the drain: not the send's 10 s
        assert time.monotonic() - stopped < background.DRAIN_SECONDS + 3.5
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


def test_a_service_stopped_gracefully_evaluates_and_sends_a_pending_crossing_first(emulator, procs):
    """(Session 15) SIGTERM while a crossing waits for its evaluation round (paced 60 s
    after a caught-up round here): each worker's drain evaluates it in one last round
    and sends it before the service exits, and records the delivery: the next start has
    nothing to send again."""
    receiver = Receiver().start()
    try:
        port = free_port()
        env = cli_env(
            DATASTORE_EMULATOR_HOST=emulator.host,
            METERING_ADMIN_TOKEN=ADMIN_TOKEN,
            METERING_PROJECT="metering-test",
            METERING_ALERT_ROUND_SPACING_SECONDS="60",
        )
        first = _serve(procs, port, env, "first")
        base = f"http://127.0.0.1:{port}"
        org = Api(base, ADMIN_TOKEN).post("/v1/admin/orgs", json={"name": unique_org_name()})
        api = Api(base, org.json()["apiKey"])
        endpoint = api.post(
            "/v1/webhooks/endpoints", json={"url": receiver.url, "eventTypes": ["alert.triggered"]}
        ).json()
        meter = api.create_meter()
        create_rule(api, meter, thresholds=[10])
        event = {"meterId": meter["id"], "userId": "u", "timestamp": minutes_ago(5)}
        api.record({**event, "value": 4})
        time.sleep(2)  # its round (at once: the meter was idle), which starts the pace
        api.record({**event, "value": 7})
        time.sleep(1)
        assert receiver.received == []  # the crossing waits for the pace
        first.process.send_signal(signal.SIGTERM)
        assert first.wait(15) == 0
        [crossing] = receiver.received
        data = Webhook(endpoint["secret"]).verify(crossing.body, crossing.headers)["data"]
        assert (data["threshold"], data["value"]) == (10, 11)
        second = _serve(procs, port, env, "second")
        log = api.get(f"/v1/webhooks/endpoints/{endpoint['id']}/messages").json()["messages"]
        assert [(m["status"], len(m["attempts"])) for m in log] == [("delivered", 1)]
        time.sleep(2)  # a message the start had taken over would have been sent by now
        assert second.process.poll() is None and len(receiver.received) == 1
    finally:
        receiver.stop()
