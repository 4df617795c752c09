"""Test infrastructure: one Google emulator per session, reset before every test.

The emulator kind comes from METERING_TEST_EMULATOR: `firestore` (default; the
Firestore-mode emulator, like today's Cloud Datastore) or `legacy` (the legacy
emulator with --require_indexes and the committed index.yaml, so that a query
without its declared index fails here and not in production).

The app is the real one, served over HTTP on a free port; each test gets fresh
orgs (unique names, so unique namespaces) created through the admin API.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from google.cloud import ndb

from app import create_app
from app.config import Config
from app.datastore import make_client
from app.emulator import Emulator
from tests.support.http import Api
from tests.support.names import unique_org_name
from tests.support.processes import Processes
from tests.support.redis_server import RedisServer
from tests.support.server import LiveServer

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "test-admin-token"


@pytest.fixture(scope="session")
def emulator_kind() -> str:
    return os.environ.get("METERING_TEST_EMULATOR", "firestore")


@pytest.fixture(scope="session")
def emulator(emulator_kind, tmp_path_factory):
    # scripts/check_indexes.py points METERING_TEST_INDEX_FILE at index.yaml minus one index.
    declared = Path(os.environ.get("METERING_TEST_INDEX_FILE") or ROOT / "index.yaml")
    index_file = declared if emulator_kind == "legacy" else None
    log = tmp_path_factory.mktemp("emulator") / "emulator.log"
    with Emulator(emulator_kind, index_file=index_file, log_path=str(log)) as running:
        yield running


@pytest.fixture(autouse=True)
def _reset_emulator(request):
    if "emulator" in request.fixturenames:
        request.getfixturevalue("emulator").reset()


@pytest.fixture(scope="session")
def config(emulator) -> Config:
    # The suite sends thousands of deliberately unauthenticated requests from one address
    # and reads freely: the limits are off here and on in the tests of the limits
    # (tests/test_cost_limit.py), which turn them on for a server of their own.
    return Config(
        project="metering-test",
        emulator_host=emulator.host,
        hashid_salt="test-salt",
        admin_token=ADMIN_TOKEN,
        read_budget_per_minute=0,
        unauthenticated_per_minute=0,
    )


@pytest.fixture(scope="session")
def app(config):
    return create_app(config)


@pytest.fixture(scope="session")
def server(app):
    running = LiveServer(app).start()
    yield running
    running.stop()


@pytest.fixture
def anonymous(server) -> Api:
    """A caller without credentials."""
    return Api(server.url)


@pytest.fixture
def admin(server) -> Api:
    """A caller with the admin token."""
    return Api(server.url, ADMIN_TOKEN)


def _new_org(admin: Api) -> dict:
    answer = admin.post("/v1/admin/orgs", json={"name": unique_org_name()})
    assert answer.status_code == 201, answer.text
    return answer.json()


@pytest.fixture
def org(admin) -> dict:
    """A fresh org: name, namespace and apiKey."""
    return _new_org(admin)


@pytest.fixture
def other_org(admin) -> dict:
    """A second fresh org, to prove isolation."""
    return _new_org(admin)


@pytest.fixture
def api(server, org) -> Api:
    """A caller with the fresh org's API key."""
    return Api(server.url, org["apiKey"])


@pytest.fixture
def other_api(server, other_org) -> Api:
    return Api(server.url, other_org["apiKey"])


@pytest.fixture(scope="session")
def ndb_client(config) -> ndb.Client:
    return make_client(config)


@pytest.fixture
def ndb_context(ndb_client):
    """An NDB context in the default namespace, for looking at what is stored."""
    with ndb_client.context() as context:
        yield context


@pytest.fixture
def procs(tmp_path):
    """Child processes (the CLI, gunicorn) of one test, stopped with their groups after it."""
    running = Processes(tmp_path)
    yield running
    running.cleanup()


@pytest.fixture
def redis_server(tmp_path):
    """A real redis-server of this test's own, on a free loopback port."""
    server = RedisServer(str(tmp_path / "redis.log")).start()
    yield server
    server.kill()


@pytest.fixture
def serve(config):
    """Start the service with changed settings (`serve(redis_url=...)` -> its URL), on a
    port of its own; every one is stopped at the end of the test."""
    servers = []

    def start(**changes) -> str:
        server = LiveServer(create_app(config.replace(**changes))).start()
        servers.append(server)
        return server.url

    yield start
    for server in servers:
        server.stop()
