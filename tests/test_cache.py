"""NDB's global cache on a real redis-server: what it caches, that writes invalidate it,
and that the service keeps working, uncached, when Redis dies mid-test. The shared
rate limit uses the same Redis.

Nothing here depends on the Datastore flavour, so it runs with the Firestore-mode
suite only.
"""

from __future__ import annotations

import time

import pytest
from google.cloud.datastore_v1.types import entity as en

from app import cache
from tests.support.flavour import firestore_only  # noqa: F401
from tests.support.http import Api, error_of
from tests.support.names import unique_org_name
from tests.support.processes import cli_env, run_cli
from tests.test_ratelimit import fresh_minute

NDB_PREFIX = b"NDB30"
REDIS_GONE = "ignore:Error connecting to global cache:RuntimeWarning"
pytestmark = pytest.mark.usefixtures("firestore_only")


def reads(answer) -> int:
    """Entities the request read from the Datastore (its X-Datastore-Usage)."""
    fields = dict(
        part.strip().split("=") for part in answer.headers["X-Datastore-Usage"].split(";")
    )
    return int(fields["read"])


def cached_kinds(redis_server) -> set[str]:
    """The kinds of the entities NDB holds in Redis (its keys are serialized Keys)."""
    kinds = set()
    for name in redis_server.client().keys(NDB_PREFIX + b"*"):
        key = en.Key.pb()()
        key.ParseFromString(name[len(NDB_PREFIX) :])
        kinds.add(key.path[-1].kind)
    return kinds


def new_org(url: str, admin_token: str) -> dict:
    answer = Api(url, admin_token).post("/v1/admin/orgs", json={"name": unique_org_name()})
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_authentication_reads_the_registry_from_redis(serve, redis_server, config):
    url = serve(redis_url=redis_server.url)
    api = Api(url, new_org(url, config.admin_token)["apiKey"])
    first, second = api.get("/v1/billing/meters"), api.get("/v1/billing/meters")
    assert first.status_code == second.status_code == 200
    assert reads(first) - reads(second) == 1  # the namespace; api-keys are never cached
    uncached = Api(serve(), api.key)
    assert reads(uncached.get("/v1/billing/meters")) == reads(first)


def test_only_the_registry_kinds_are_cached(serve, redis_server, config):
    url = serve(redis_url=redis_server.url)
    api = Api(url, new_org(url, config.admin_token)["apiKey"])
    meter = api.create_meter()
    api.record({"meterId": meter["id"], "userId": "u", "value": 3})
    assert api.get(f"/v1/billing/meters/{meter['id']}").status_code == 200
    assert api.summary(meterId=meter["id"], userId="u")["value"] == 3
    assert cached_kinds(redis_server) == cache.CACHED_KINDS


def test_a_revoked_key_is_refused_at_once(serve, redis_server, config):
    url = serve(redis_url=redis_server.url)
    org = new_org(url, config.admin_token)
    api = Api(url, org["apiKey"])
    assert api.get("/v1/billing/meters").status_code == 200  # now cached
    revoked = Api(url, config.admin_token).delete(
        f"/v1/admin/orgs/{org['name']}/keys/{org['keyPrefix']}"
    )
    assert revoked.status_code == 200, revoked.text
    assert api.get("/v1/billing/meters").status_code == 401


@pytest.mark.slow
def test_a_key_revoked_by_the_command_is_refused_at_once(serve, redis_server, config):
    url = serve(redis_url=redis_server.url)
    org = new_org(url, config.admin_token)
    api = Api(url, org["apiKey"])
    assert api.get("/v1/billing/meters").status_code == 200  # now cached
    done = run_cli(
        "keys",
        "revoke",
        org["name"],
        org["keyPrefix"],
        env=cli_env(
            DATASTORE_EMULATOR_HOST=config.emulator_host,
            METERING_PROJECT=config.project,
            METERING_HASHID_SALT=config.hashid_salt,
            REDIS_CACHE_URL=redis_server.url,
        ),
    )
    assert done.returncode == 0, done.stderr
    assert api.get("/v1/billing/meters").status_code == 401


@pytest.mark.filterwarnings(REDIS_GONE)
def test_the_service_keeps_working_uncached_when_redis_dies(serve, redis_server, config):
    url = serve(redis_url=redis_server.url)
    org = new_org(url, config.admin_token)
    api = Api(url, org["apiKey"])
    meter = api.create_meter()
    assert api.get("/v1/billing/meters").status_code == 200
    assert cached_kinds(redis_server)
    redis_server.kill()
    started = time.monotonic()
    listed = api.get("/v1/billing/meters")
    assert listed.status_code == 200 and listed.json()["count"] == 1
    assert reads(listed) >= 2  # the registry comes from the Datastore again
    api.record({"meterId": meter["id"], "userId": "u", "value": 4})
    assert api.summary(meterId=meter["id"], userId="u")["value"] == 4
    other = new_org(url, config.admin_token)
    assert Api(url, other["apiKey"]).get("/v1/billing/meters").status_code == 200
    revoked = Api(url, config.admin_token).delete(
        f"/v1/admin/orgs/{org['name']}/keys/{org['keyPrefix']}"
    )
    assert revoked.status_code == 200
    assert api.get("/v1/billing/meters").status_code == 401
    assert time.monotonic() - started < 15


def test_the_rate_limit_is_shared_through_redis(serve, redis_server, config):
    first = serve(rate_limit_per_minute=3, redis_url=redis_server.url)
    second = serve(rate_limit_per_minute=3, redis_url=redis_server.url)
    key = new_org(first, config.admin_token)["apiKey"]
    fresh_minute()
    codes = [
        Api(url, key).get("/v1/billing/meters").status_code
        for url in (first, second, first, second)
    ]
    assert codes == [200, 200, 200, 429]


@pytest.mark.filterwarnings(REDIS_GONE)
def test_without_redis_the_rate_limit_counts_per_process(serve, redis_server, config):
    url = serve(rate_limit_per_minute=2, redis_url=redis_server.url)
    key = new_org(url, config.admin_token)["apiKey"]
    redis_server.kill()
    fresh_minute()
    codes = [Api(url, key).get("/v1/billing/meters").status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    assert error_of(Api(url, key).get("/v1/billing/meters"))["code"] == "rate_limited"
