"""A restart of the service mid-stream loses nothing: gunicorn (`metering serve`) is
killed outright while threads record through the client, then started again."""

from __future__ import annotations

import random
import signal
import threading
import time

import pytest

from app.emulator import free_port
from tests.client.fault_proxy import FaultProxy
from tests.client.test_faults import THREADS, Tally, assert_summaries_match, in_threads
from tests.conftest import ADMIN_TOKEN
from tests.support.http import Api
from tests.support.names import unique_org_name
from tests.support.processes import cli_env, wait_serving, wait_until

pytestmark = pytest.mark.slow


def _serve(procs, port: int, env: dict, name: str):
    child = procs.start(
        ["serve", "--port", str(port), "--workers", "1", "--threads", "4"], env, name
    )
    wait_serving(f"http://127.0.0.1:{port}/healthz", 60, name, child)
    return child


def test_a_service_killed_and_restarted_mid_stream_loses_nothing(
    emulator, procs, tmp_path, make_client_for
):
    port = free_port()
    env = cli_env(
        DATASTORE_EMULATOR_HOST=emulator.host,
        METERING_ADMIN_TOKEN=ADMIN_TOKEN,
        METERING_PROJECT="metering-restart",
    )
    first = _serve(procs, port, env, "first")
    org = (
        Api(f"http://127.0.0.1:{port}", ADMIN_TOKEN)
        .post("/v1/admin/orgs", json={"name": unique_org_name()})
        .json()
    )
    proxy = FaultProxy(("127.0.0.1", port)).start()
    try:
        client = make_client_for(proxy.url, org["apiKey"])
        meter = client.create_meter("Input tokens", "input_tokens", dimensions=["model"])

        restarted = threading.Event()
        tally = Tally()

        def work(seed: int) -> None:  # record before, during and after the restart
            rng = random.Random(seed)
            while not restarted.is_set():
                tally.record(client, rng)
                time.sleep(0.01)
            for _ in range(50):
                tally.record(client, rng)
                time.sleep(0.01)

        def restart(_seed: int) -> None:
            wait_until(lambda: tally.recorded() >= 400, 60, "events before the restart")
            first.signal_group(signal.SIGKILL)  # killed outright, requests in flight
            first.wait(10)
            _serve(procs, port, env, "second")
            restarted.set()

        in_threads(lambda seed: restart(seed) if seed == THREADS else work(seed), THREADS + 1)
        client.close(timeout=120)
        assert client.stats.retries > 0  # the restart was felt
        assert client.stats.created + client.stats.duplicates == tally.recorded()
        assert_summaries_match(make_client_for(proxy.url, org["apiKey"]), meter.id, tally)
    finally:
        proxy.stop()
