"""Revocation takes effect on the very next request, wherever it is issued.

The service runs with Redis as NDB's global cache. An operator revokes from a laptop
(`metering keys revoke` without Redis settings: Memorystore is not reachable from
outside), or through the admin API of an instance whose Redis is down: neither write
can invalidate a cached copy of the key. The key must still be refused at once, which
holds only if `api-key` entities are never served from the global cache.

Nothing here depends on the Datastore flavour, so it runs with the Firestore-mode suite.
"""

from __future__ import annotations

import pytest

from app.emulator import free_port
from tests.support.flavour import firestore_only  # noqa: F401
from tests.support.http import Api
from tests.support.processes import cli_env, run_cli
from tests.test_cache import cached_kinds, new_org

REDIS_GONE = "ignore:Error connecting to global cache:RuntimeWarning"
pytestmark = pytest.mark.usefixtures("firestore_only")


def _warm_key(url: str, admin_token: str) -> tuple[dict, Api]:
    """A new org whose key has just authenticated once through the cached service."""
    org = new_org(url, admin_token)
    api = Api(url, org["apiKey"])
    assert api.get("/v1/billing/meters").status_code == 200
    assert api.get("/v1/billing/meters").status_code == 200
    return org, api


def _revoke_path(org: dict) -> str:
    return f"/v1/admin/orgs/{org['name']}/keys/{org['keyPrefix']}"


@pytest.mark.slow
@pytest.mark.parametrize("redis_setting", ["unset", "unreachable"])
def test_a_key_revoked_by_the_command_without_redis_is_refused_at_once(
    serve, redis_server, config, redis_setting
):
    url = serve(redis_url=redis_server.url)
    org, api = _warm_key(url, config.admin_token)
    env = cli_env(
        DATASTORE_EMULATOR_HOST=config.emulator_host,
        METERING_PROJECT=config.project,
        METERING_HASHID_SALT=config.hashid_salt,
    )
    env.pop("REDIS_CACHE_URL", None)
    if redis_setting == "unreachable":  # Memorystore, seen from an operator's laptop
        env["REDIS_CACHE_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    done = run_cli("keys", "revoke", org["name"], org["keyPrefix"], env=env)
    assert done.returncode == 0, done.stderr
    assert '"revoked": 1' in done.stdout
    assert api.get("/v1/billing/meters").status_code == 401
    assert api.post("/v1/billing/meters", json={"name": "n", "eventName": "n"}).status_code == 401


def test_a_key_revoked_through_an_instance_without_redis_is_refused_at_once(
    serve, redis_server, config
):
    cached = serve(redis_url=redis_server.url)
    org, api = _warm_key(cached, config.admin_token)
    uncached_admin = Api(serve(), config.admin_token)
    assert uncached_admin.delete(_revoke_path(org)).status_code == 200
    assert api.get("/v1/billing/meters").status_code == 401


@pytest.mark.filterwarnings(REDIS_GONE)
def test_a_key_revoked_through_an_instance_whose_redis_is_down_is_refused_at_once(
    serve, redis_server, config
):
    cached = serve(redis_url=redis_server.url)
    org, api = _warm_key(cached, config.admin_token)
    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    admin_without_redis = Api(serve(redis_url=unreachable), config.admin_token)
    assert admin_without_redis.delete(_revoke_path(org)).status_code == 200
    assert api.get("/v1/billing/meters").status_code == 401


def test_an_org_archived_through_an_instance_without_redis_is_refused_at_once(
    serve, redis_server, config
):
    cached = serve(redis_url=redis_server.url)
    org, api = _warm_key(cached, config.admin_token)
    uncached_admin = Api(serve(), config.admin_token)
    assert uncached_admin.delete(f"/v1/admin/orgs/{org['name']}").status_code == 200
    assert api.get("/v1/billing/meters").status_code == 401


def test_a_purged_org_created_again_through_an_instance_without_redis_works_at_once(
    serve, redis_server, config
):
    cached = serve(redis_url=redis_server.url)
    org, api = _warm_key(cached, config.admin_token)
    cached_admin = Api(cached, config.admin_token)
    assert cached_admin.delete(f"/v1/admin/orgs/{org['name']}").status_code == 200
    # Reading the archived org through the cache leaves its deleted copy in Redis.
    assert cached_admin.get(f"/v1/admin/orgs/{org['name']}/keys").status_code == 404
    uncached_admin = Api(serve(), config.admin_token)
    purged = uncached_admin.delete(f"/v1/admin/orgs/{org['name']}", params={"purge": "1"})
    assert purged.status_code == 200 and purged.json()["purgeComplete"] is True
    reborn = uncached_admin.post("/v1/admin/orgs", json={"name": org["name"]})
    assert reborn.status_code == 201, reborn.text
    assert Api(cached, reborn.json()["apiKey"]).get("/v1/billing/meters").status_code == 200
    assert api.get("/v1/billing/meters").status_code == 401


def test_the_org_registry_stays_cached_but_keys_do_not(serve, redis_server, config):
    url = serve(redis_url=redis_server.url)
    _warm_key(url, config.admin_token)
    assert cached_kinds(redis_server) == {"namespace"}
