"""Fixtures of the client's tests: the real service behind the fault proxy.

The client does not depend on the Datastore flavour, so its tests run once, in
the Firestore-mode run of the suite (`make test-firestore`), not in the legacy run.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import pytest

from metering_client import MeteringClient, RetryPolicy
from tests.client.fault_proxy import FaultProxy

if os.environ.get("METERING_TEST_EMULATOR", "firestore") != "firestore":
    collect_ignore_glob = ["test_*.py"]

#: Quick retries, so that faults cost the tests little time.
FAST_RETRY = RetryPolicy(initial_delay=0.05, max_delay=0.5, deadline=20.0)


def upstream_of(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname, parts.port  # type: ignore[return-value]


@pytest.fixture
def proxy(server):
    running = FaultProxy(upstream_of(server.url)).start()
    yield running
    running.stop()


@pytest.fixture
def make_client_for():
    """Clients of any service and key; each is closed at the end of the test."""
    made = []

    def make(url: str, api_key: str, **options) -> MeteringClient:
        options = {"retry": FAST_RETRY, "flush_interval": 0.2, **options}
        client = MeteringClient(url, api_key, **options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close(timeout=5)


@pytest.fixture
def make_client(make_client_for, proxy, org):
    """Clients of the fresh org through the proxy."""
    return lambda **options: make_client_for(proxy.url, org["apiKey"], **options)


@pytest.fixture
def metering(make_client) -> MeteringClient:
    return make_client()
