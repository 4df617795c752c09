"""Org names and the end of an org's life, against the real service and the CLI.

- A name the pattern's `$` let through (`"evil\\n"`) is refused, and a registry entry an
  older release wrote with such a name breaks neither its keys' requests (401, not 500)
  nor the cron job for the other orgs; `metering orgs check` lists it.
- Deleting an org archives it (keys refused on the next request, data kept, name
  reserved); a purge deletes its data in pages, resumably, and frees the name.
"""

from __future__ import annotations

import hashlib
import json
import signal
import time

import pytest
from google.cloud import datastore

from app.models import ApiKey, Namespace
from app.services import orgs as org_service
from tests.support.http import Api, error_of
from tests.support.names import unique_org_name
from tests.support.processes import cli_env, run_cli
from tests.test_cron import _dirty, _record_spread

BAD_NAME = "evil\n"
BAD_KEY = "mk_" + "b" * 40


def _entities(config, namespace: str) -> int:
    """Entities of every kind in the namespace, straight from the Datastore."""
    query = datastore.Client(project=config.project, namespace=namespace).query()
    query.keys_only()
    return sum(1 for _ in query.fetch())


def _plant_bad_org(ndb_context) -> None:
    """What an older release stored for `POST /v1/admin/orgs {"name": "evil\\n"}`."""
    int_id = Namespace.allocate_ids(1)[0].id()
    Namespace(key=Namespace.key_for(BAD_NAME), name=BAD_NAME, int_id=int_id).put()
    digest = hashlib.sha256(BAD_KEY.encode()).hexdigest()
    ApiKey(key=ApiKey.key_for(digest), org=BAD_NAME, prefix=BAD_KEY[:12]).put()


def _cli_env(config) -> dict:
    env = cli_env(
        DATASTORE_EMULATOR_HOST=config.emulator_host,
        METERING_PROJECT=config.project,
        METERING_HASHID_SALT=config.hashid_salt,
    )
    env.pop("REDIS_CACHE_URL", None)
    return env


def _with_data(server, org: dict, events: int = 30) -> dict:
    """A meter with events in the org, and a second key."""
    api = Api(server.url, org["apiKey"])
    meter = api.create_meter()
    api.record(
        *[
            {"meterId": meter["id"], "userId": f"u{i % 7}", "value": i, "idempotency": f"e{i}"}
            for i in range(events)
        ]
    )
    return meter


# -- names -------------------------------------------------------------------------


@pytest.mark.parametrize("name", [BAD_NAME, "evil\r", "evil\n\n", "a\nb", "ok-\n"])
def test_a_name_with_a_line_break_is_refused_and_stores_nothing(admin, name, ndb_context):
    answer = admin.post("/v1/admin/orgs", json={"name": name})
    assert answer.status_code == 400, answer.text
    assert error_of(answer)["param"] == "name"
    assert Namespace.query(namespace="_namespaces").fetch(keys_only=True) == []


def test_a_key_of_an_org_with_a_bad_name_is_refused_not_a_server_error(anonymous, ndb_context):
    _plant_bad_org(ndb_context)
    answer = anonymous.as_key(BAD_KEY).get("/v1/billing/meters")
    assert answer.status_code == 401, answer.text


def test_cron_skips_a_bad_name_reports_it_and_compacts_the_others(
    api, other_api, admin, config, org, other_org, ndb_context, caplog
):
    _plant_bad_org(ndb_context)
    for caller in (api, other_api):
        _record_spread(caller, 2)
    dirty = _dirty(config, org) + _dirty(config, other_org)
    answer = admin.get("/v1/cron/compact")
    assert answer.status_code == 200, answer.text
    run = answer.json()
    assert run["failed"] == [BAD_NAME]
    assert run["orgs"] == 3 and run["compacted"] == dirty
    assert any(repr(BAD_NAME) in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
    assert _dirty(config, org) == _dirty(config, other_org) == 0


def test_cron_isolates_an_org_whose_compaction_fails(
    api, other_api, admin, config, org, other_org, emulator_kind, caplog
):
    if emulator_kind != "firestore":
        pytest.skip("the legacy emulator leaves no deltas to compact")
    _record_spread(api, 2)
    _record_spread(other_api, 2)
    # A dirty rollup no release could decode: compacting this org raises.
    raw = datastore.Client(project=config.project, namespace=org["namespace"])
    broken = datastore.Entity(raw.key("synckey", 1, "meter-rollup", "broken"))
    broken.update({"Dirty": True})
    raw.put(broken)
    answer = admin.get("/v1/cron/compact")
    assert answer.status_code == 200, answer.text
    run = answer.json()
    assert run["failed"] == [org["name"]] and run["complete"] is False
    assert _dirty(config, other_org) == 0
    failures = [r for r in caplog.records if r.levelname == "ERROR" and r.exc_info]
    assert any(org["name"] in r.getMessage() for r in failures)


@pytest.mark.slow
def test_orgs_check_lists_bad_names_until_they_are_deleted(config, ndb_context, org):
    _plant_bad_org(ndb_context)
    env = _cli_env(config)
    found = run_cli("orgs", "check", env=env)
    assert found.returncode == 1, found.stderr
    assert '"evil\\n"' in found.stdout and '"api-key"' in found.stdout
    assert org["name"] not in found.stdout
    assert "metering orgs delete" in found.stderr
    deleted = run_cli("orgs", "delete", BAD_NAME, env=env)
    assert deleted.returncode == 0, deleted.stderr
    assert '"revokedKeys": 1' in deleted.stdout
    clean = run_cli("orgs", "check", env=env)
    assert clean.returncode == 0, clean.stderr
    assert '"live": true' not in clean.stdout


# -- deletion over HTTP --------------------------------------------------------------


def test_deleting_an_org_revokes_its_keys_keeps_its_data_and_reserves_its_name(
    server, admin, org, other_org, config
):
    _with_data(server, org)
    second = admin.post(f"/v1/admin/orgs/{org['name']}/keys").json()["apiKey"]
    stored = _entities(config, org["namespace"])
    assert stored > 30

    answer = admin.delete(f"/v1/admin/orgs/{org['name']}")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "name": org["name"],
        "archived": True,
        "revokedKeys": 2,
        "purged": 0,
        "purgeComplete": False,
    }
    for key in (org["apiKey"], second):
        assert Api(server.url, key).get("/v1/billing/meters").status_code == 401
    assert _entities(config, org["namespace"]) == stored
    again = admin.post("/v1/admin/orgs", json={"name": org["name"]})
    assert again.status_code == 409 and error_of(again)["code"] == "org_archived"
    assert "archived" in error_of(again)["message"]
    assert admin.post(f"/v1/admin/orgs/{org['name']}/keys").status_code == 404
    assert admin.get("/v1/cron/compact").json()["orgs"] == 1
    assert Api(server.url, other_org["apiKey"]).get("/v1/billing/meters").status_code == 200

    repeated = admin.delete(f"/v1/admin/orgs/{org['name']}")
    assert repeated.status_code == 200 and repeated.json()["revokedKeys"] == 0
    assert admin.delete("/v1/admin/orgs/no-such-org").status_code == 404
    assert admin.delete("/v1/admin/orgs/evil%0A").status_code == 404


def test_a_purge_over_http_goes_in_bounded_calls_to_zero_and_frees_the_name(
    server, admin, org, config, monkeypatch
):
    from app.api import admin as admin_api

    _with_data(server, org, events=60)
    stored = _entities(config, org["namespace"])
    monkeypatch.setattr(admin_api, "PURGE_PER_REQUEST", 50)
    monkeypatch.setattr(org_service, "PURGE_PAGE", 20)
    calls = []
    while not calls or not calls[-1]["purgeComplete"]:
        answer = admin.delete(f"/v1/admin/orgs/{org['name']}", params={"purge": "true"})
        assert answer.status_code == 200, answer.text
        calls.append(answer.json())
        assert len(calls) <= stored // 50 + 2
    assert all(call["purged"] <= 50 for call in calls)
    assert sum(call["purged"] for call in calls) == stored
    assert _entities(config, org["namespace"]) == 0

    reborn = admin.post("/v1/admin/orgs", json={"name": org["name"]})
    assert reborn.status_code == 201, reborn.text
    fresh = Api(server.url, reborn.json()["apiKey"])
    assert fresh.get("/v1/billing/meters").json()["count"] == 0
    assert Api(server.url, org["apiKey"]).get("/v1/billing/meters").status_code == 401


def test_purge_refuses_a_bad_query_flag(admin, org):
    answer = admin.delete(f"/v1/admin/orgs/{org['name']}", params={"purge": "maybe"})
    assert answer.status_code == 400 and error_of(answer)["param"] == "purge"
    assert admin.post(f"/v1/admin/orgs/{org['name']}/keys").status_code == 201


def test_an_interrupted_purge_is_finished_by_the_next_one(
    server, admin, org, config, ndb_client, monkeypatch
):
    _with_data(server, org, events=40)
    assert admin.delete(f"/v1/admin/orgs/{org['name']}").status_code == 200
    stored = _entities(config, org["namespace"])
    monkeypatch.setattr(org_service, "PURGE_PAGE", 10)

    class Killed(Exception):
        pass

    def die_after_first_page(count):
        raise Killed(count)

    with ndb_client.context(), pytest.raises(Killed):
        org_service.purge_org(org["name"], progress=die_after_first_page)
    assert 0 < _entities(config, org["namespace"]) == stored - 10
    reuse = admin.post("/v1/admin/orgs", json={"name": org["name"]})
    assert reuse.status_code == 409 and error_of(reuse)["code"] == "org_archived"
    with ndb_client.context():
        finished = org_service.purge_org(org["name"])
    assert finished.complete and finished.deleted == stored - 10
    assert _entities(config, org["namespace"]) == 0


def test_a_purge_steps_over_the_datastore_s_own_statistics(
    server, admin, org, config, emulator_kind, monkeypatch
):
    if emulator_kind != "legacy":
        pytest.skip("only the legacy emulator lets a test write a reserved kind")
    raw = datastore.Client(project=config.project, namespace=org["namespace"])
    stat = datastore.Entity(raw.key("__Stat_Ns_Total__", "total_entity_usage"))
    stat["count"] = 1
    raw.put(stat)  # sorts first: a kindless query returns it before the org's data
    _with_data(server, org, events=20)
    monkeypatch.setattr(org_service, "PURGE_PAGE", 7)
    answer = admin.delete(f"/v1/admin/orgs/{org['name']}", params={"purge": "true"})
    assert answer.status_code == 200 and answer.json()["purgeComplete"] is True
    assert _entities(config, org["namespace"]) == 1 and raw.get(stat.key) is not None


def test_a_live_org_cannot_be_purged_without_being_archived(org, ndb_client):
    from app.errors import Conflict

    with ndb_client.context(), pytest.raises(Conflict):
        org_service.purge_org(org["name"])


# -- deletion with the CLI -----------------------------------------------------------


def _plant_filler(config, namespace: str, count: int) -> None:
    """Many small entities in the org, written in commits of 500."""
    raw = datastore.Client(project=config.project, namespace=namespace)
    for start in range(0, count, 500):
        batch = []
        for i in range(start, min(count, start + 500)):
            entity = datastore.Entity(raw.key("filler", f"f{i:06d}"))
            entity["n"] = i
            batch.append(entity)
        raw.put_multi(batch)


@pytest.mark.slow
def test_the_command_purges_an_org_to_zero_with_a_progress_bar(server, org, config):
    _with_data(server, org)
    env = _cli_env(config)
    done = run_cli("orgs", "delete", org["name"], "--purge", env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"purging {org['name']}" in done.stderr
    assert '"purgeComplete": true' in done.stdout
    assert _entities(config, org["namespace"]) == 0
    assert Api(server.url, org["apiKey"]).get("/v1/billing/meters").status_code == 401


@pytest.mark.slow
def test_a_purge_killed_midway_is_finished_by_running_it_again(server, org, config, procs):
    _with_data(server, org)
    _plant_filler(config, org["namespace"], 6000)
    stored = _entities(config, org["namespace"])
    raw = datastore.Client(project=config.project, namespace=org["namespace"])
    first_filler = raw.key("filler", "f000000")  # in the first page (keys in order)
    env = _cli_env(config)
    child = procs.start(["orgs", "delete", org["name"], "--purge"], env, "purge")
    deadline = time.monotonic() + 60
    while raw.get(first_filler) is not None:
        assert child.process.poll() is None, child.stderr()
        assert time.monotonic() < deadline, "the purge did not start"
        time.sleep(0.02)
    child.signal_group(signal.SIGKILL)
    child.wait(10)
    left = _entities(config, org["namespace"])
    assert 0 < left < stored, (left, stored)
    assert Api(server.url, org["apiKey"]).get("/v1/billing/meters").status_code == 401

    again = run_cli("orgs", "delete", org["name"], "--purge", env=env, timeout=120)
    assert again.returncode == 0, again.stderr
    finished = json.loads(again.stdout)
    # A commit the killed process had already sent may land after `left` was counted.
    assert 0 < finished["purged"] <= left and finished["purgeComplete"] is True
    assert _entities(config, org["namespace"]) == 0


@pytest.mark.slow
def test_deleting_an_unknown_org_is_one_line_error(config):
    done = run_cli("orgs", "delete", unique_org_name(), env=_cli_env(config))
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.startswith("Error: ") and "not found" in done.stderr
