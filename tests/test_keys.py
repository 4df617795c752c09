"""An org's own keys (issue 16): scopes, expiry, last use, and /v1/keys.

Everything goes through the real service over HTTP. Where a test needs a key past its
expiry, it moves the stored `ExpiresAt` into the past in the Datastore (no sleeps): the
service reads what is stored on the next request, as it would after the time passed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.core.scopes import ALL_SCOPES, DEFAULT_SCOPES, ordered
from app.models import ApiKey
from app.services import orgs
from app.services.key_usage import LastUsed
from tests.support.http import Api, error_of

KEYS = "/v1/keys"
METERS = "/v1/billing/meters"
EVENTS = "/v1/billing/meter-events"


def _create(api: Api, expect: int = 201, **body) -> dict:
    answer = api.post(KEYS, json=body)
    assert answer.status_code == expect, answer.text
    return answer.json()


def _listed(api: Api) -> dict[str, dict]:
    answer = api.get(KEYS)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["count"] == len(body["keys"])
    return {key["prefix"]: key for key in body["keys"]}


def _stored(ndb_context, secret: str) -> ApiKey:
    return ApiKey.key_for(orgs.key_digest(secret)).get(use_cache=False)


def _refused(answer, status: int, code: str, param: str | None = None) -> dict:
    assert answer.status_code == status, answer.text
    error = error_of(answer)
    assert error["code"] == code, error
    if param is not None:
        assert error["param"] == param, error
    return error


def test_a_key_is_created_with_scopes_shown_once_and_listed_without_its_secret(api, org):
    new = _create(api, scopes=["events:write", "usage:read"], expiresIn=3600, name="ingest")
    assert new["apiKey"].startswith("mk_") and new["keyPrefix"] == new["apiKey"][:12]
    assert new["scopes"] == ["events:write", "usage:read"]
    expires = datetime.fromisoformat(new["expiresAt"].replace("Z", "+00:00"))
    assert timedelta(minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=1)

    answer = api.get(KEYS)
    assert new["apiKey"] not in answer.text
    listed = _listed(api)
    assert (new["name"], new["createdBy"]) == ("ingest", org["keyPrefix"])
    mine = listed[new["keyPrefix"]]
    assert mine["scopes"] == ["events:write", "usage:read"]
    assert (mine["name"], mine["status"], mine["revoked"]) == ("ingest", "active", False)
    assert mine["expiresAt"] == new["expiresAt"] and mine["lastUsedAt"] is None
    assert mine["createdBy"] == org["keyPrefix"] and mine["createdAt"]
    first = listed[org["keyPrefix"]]  # the org's first key holds every scope
    assert first["scopes"] == ordered(ALL_SCOPES) and "events:backfill" in first["scopes"]
    assert first["expiresAt"] is None and first["createdBy"] is None


def test_a_scoped_key_does_what_its_scopes_allow_and_nothing_else(api):
    meter = api.create_meter()
    writer = api.as_key(_create(api, scopes=["events:write"])["apiKey"])
    writer.record({"meterId": meter["id"], "userId": "u", "value": 3})
    error = _refused(writer.get(METERS), 403, "missing_scope", "scope")
    assert "meters:read" in error["message"]
    error = _refused(
        writer.get(f"{EVENTS}/summary", params={"meterId": meter["id"]}), 403, "missing_scope"
    )
    assert "usage:read" in error["message"]
    _refused(writer.get(KEYS), 403, "missing_scope")
    assert api.summary(meterId=meter["id"])["value"] == 3


def test_a_key_cannot_grant_a_scope_it_does_not_hold(api, admin, org):
    manager = api.as_key(_create(api, scopes=["keys:write", "usage:read"])["apiKey"])
    before = _listed(api)
    error = _refused(
        manager.post(KEYS, json={"scopes": ["usage:read", "meters:write"]}),
        403,
        "missing_scope",
        "scopes[1]",
    )
    assert "meters:write" in error["message"]
    # A key an operator issued with the defaults: events:backfill is not among them.
    plain = admin.post(f"/v1/admin/orgs/{org['name']}/keys").json()
    assert "events:backfill" not in plain["scopes"] and "keys:write" in plain["scopes"]
    refused = api.as_key(plain["apiKey"]).post(KEYS, json={"scopes": ["events:backfill"]})
    error = _refused(refused, 403, "missing_scope", "scopes[0]")
    assert "events:backfill" in error["message"]
    before[plain["keyPrefix"]] = plain
    assert _listed(api).keys() == before.keys()  # nothing was created
    assert _create(manager, scopes=["usage:read"])["scopes"] == ["usage:read"]
    # The org's first key holds every scope: it hands out backfill keys.
    assert _create(api, scopes=["events:write", "events:backfill"])["scopes"] == [
        "events:write",
        "events:backfill",
    ]


def test_a_key_cannot_create_a_key_that_outlives_it(api):
    hour = _create(api, scopes=["keys:write", "meters:read"], expiresIn=3600)
    manager = api.as_key(hour["apiKey"])
    longer = manager.post(KEYS, json={"scopes": ["meters:read"], "expiresIn": 7200})
    error = _refused(longer, 403, "expiry_not_held", "expiresAt")
    assert hour["expiresAt"] in error["message"]
    _refused(manager.post(KEYS, json={"scopes": ["meters:read"]}), 403, "expiry_not_held")
    shorter = _create(manager, scopes=["meters:read"], expiresIn=1800)
    assert shorter["expiresAt"] < hour["expiresAt"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"scopes": ["meters:delete"]}, "scopes[0]"),
        ({"scopes": []}, "scopes"),
        ({}, "scopes"),
        ({"scopes": ["usage:read", "usage:read"]}, "scopes"),
        ({"scopes": ["usage:read"], "expiresAt": "2020-01-01T00:00:00Z"}, "expiresAt"),
        ({"scopes": ["usage:read"], "expiresAt": "2026-13-01"}, "expiresAt"),
        ({"scopes": ["usage:read"], "expiresIn": 0}, "expiresIn"),
        ({"scopes": ["usage:read"], "expiresIn": "90d"}, "expiresIn"),
        ({"scopes": ["usage:read"], "expiresIn": 60, "expiresAt": "2099-01-01T00:00:00Z"}, None),
        ({"scopes": ["usage:read"], "name": "x" * 101}, "name"),
    ],
)
def test_a_bad_key_request_is_refused_naming_the_field_and_creates_nothing(api, body, param):
    error = _refused(api.post(KEYS, json=body), 400, "invalid_request")
    if param is not None:
        assert error["param"] == param, error
    assert len(_listed(api)) == 1


def test_a_revoked_key_is_refused_on_the_next_request(api, other_api):
    victim = _create(api, scopes=["meters:read"])
    caller = api.as_key(victim["apiKey"])
    assert caller.get(METERS).status_code == 200
    # Another org cannot even see it.
    _refused(other_api.delete(f"{KEYS}/{victim['keyPrefix']}"), 404, "not_found")
    assert caller.get(METERS).status_code == 200

    answer = api.delete(f"{KEYS}/{victim['keyPrefix']}")
    assert answer.status_code == 200 and answer.json() == {"revoked": 1}
    _refused(caller.get(METERS), 401, "unauthorized")
    _refused(api.delete(f"{KEYS}/{victim['keyPrefix']}"), 404, "not_found")
    _refused(api.delete(f"{KEYS}/mk_short"), 400, "invalid_request", "prefix")
    listed = _listed(api)[victim["keyPrefix"]]
    assert (listed["status"], listed["revoked"]) == ("revoked", True) and listed["revokedAt"]


def test_a_key_can_revoke_itself(api):
    own = _create(api, scopes=["keys:write"])
    caller = api.as_key(own["apiKey"])
    assert caller.delete(f"{KEYS}/{own['keyPrefix']}").status_code == 200
    _refused(caller.get(KEYS), 401, "unauthorized")


def test_an_expired_key_is_refused_on_the_next_request_saying_it_expired(api, ndb_context):
    new = _create(api, scopes=["meters:read"], expiresIn=3600)
    caller = api.as_key(new["apiKey"])
    assert caller.get(METERS).status_code == 200
    stored = _stored(ndb_context, new["apiKey"])
    stored.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    stored.put()

    for _ in range(2):  # the second is answered from the process's memory of refusals
        error = _refused(caller.get(METERS), 401, "key_expired")
        assert "expired" in error["message"]
    assert _listed(api)[new["keyPrefix"]]["status"] == "expired"


def test_a_key_stored_before_scopes_holds_every_scope_but_backfill(api, org, ndb_context):
    stored = _stored(ndb_context, org["apiKey"])
    stored.scopes = []
    stored.put()
    assert _stored(ndb_context, org["apiKey"]).scopes == []
    assert _listed(api)[org["keyPrefix"]]["scopes"] == ordered(DEFAULT_SCOPES)
    api.create_meter()
    assert api.get(METERS).json()["count"] == 1
    _refused(api.post(KEYS, json={"scopes": ["events:backfill"]}), 403, "missing_scope")


# -- the admin API ---------------------------------------------------------------------


def test_an_operator_issues_keys_with_or_without_scopes(admin, org, api):
    path = f"/v1/admin/orgs/{org['name']}/keys"
    plain = admin.post(path)
    assert plain.status_code == 201, plain.text
    assert plain.json()["scopes"] == ordered(DEFAULT_SCOPES) and plain.json()["expiresAt"] is None

    body = {"scopes": ["events:write", "events:backfill"], "expiresIn": 600, "name": "import"}
    scoped = admin.post(path, json=body)
    assert scoped.status_code == 201, scoped.text
    assert scoped.json()["scopes"] == ["events:write", "events:backfill"]
    listed = admin.get(path).json()["keys"]
    mine = next(key for key in listed if key["prefix"] == scoped.json()["keyPrefix"])
    assert (mine["name"], mine["scopes"]) == ("import", ["events:write", "events:backfill"])
    assert mine["expiresAt"] == scoped.json()["expiresAt"]

    _refused(admin.post(path, json={"scopes": ["everything"]}), 400, "invalid_request", "scopes[0]")
    assert len(admin.get(path).json()["keys"]) == 3
    first = admin.post("/v1/admin/orgs", json={"name": org["name"] + "-2"}).json()
    assert first["scopes"] == ordered(ALL_SCOPES)  # a new org's first key: every scope


# -- last used -----------------------------------------------------------------------


def test_last_use_is_recorded_in_the_background_not_by_the_request(api, app):
    new = _create(api, scopes=["meters:read"])
    caller = api.as_key(new["apiKey"])
    answer = caller.get(METERS)
    assert answer.status_code == 200
    # The request wrote nothing: the use is written by the process's recorder after it.
    assert "written=0" in answer.headers["X-Datastore-Usage"]
    recorder = app.extensions["key_usage"]
    assert recorder.idle(timeout=30)
    used = _listed(api)[new["keyPrefix"]]["lastUsedAt"]
    assert used is not None

    writes = recorder.writes
    for _ in range(5):
        assert caller.get(METERS).status_code == 200
    assert recorder.idle(timeout=30)
    assert recorder.writes == writes  # within the minute: nothing more is written
    assert _listed(api)[new["keyPrefix"]]["lastUsedAt"] == used


def test_last_use_is_written_at_most_once_a_minute_per_key(api, app, ndb_context):
    """The recorder on a clock of its own (not started: `run_once` does what its thread
    does), against the real Datastore."""
    new = _create(api, scopes=["meters:read"])
    digest = orgs.key_digest(new["apiKey"])
    recorder = LastUsed(app.extensions["ndb"], app.extensions["ndb_context_options"], start=False)
    start = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    for seconds in range(0, 60, 5):  # twelve uses in the first minute
        recorder.touch(digest, None, start + timedelta(seconds=seconds))
    assert recorder.run_once() == 1
    assert _stored(ndb_context, new["apiKey"]).last_used_at == start
    recorder.touch(digest, start, start + timedelta(seconds=59))
    assert recorder.run_once() == 0
    recorder.touch(digest, start, start + timedelta(seconds=61))
    assert recorder.run_once() == 1
    assert recorder.writes == 2

    # Another process that read the key before that write does not write it again.
    other = LastUsed(app.extensions["ndb"], app.extensions["ndb_context_options"], start=False)
    other.touch(digest, None, start + timedelta(seconds=62))
    assert other.run_once() == 0
    assert _stored(ndb_context, new["apiKey"]).last_used_at == start + timedelta(seconds=61)


def test_recording_a_use_never_brings_a_revoked_key_back(api, app, ndb_context):
    new = _create(api, scopes=["meters:read"])
    digest = orgs.key_digest(new["apiKey"])
    recorder = LastUsed(app.extensions["ndb"], app.extensions["ndb_context_options"], start=False)
    recorder.touch(digest, None)  # noted by a request that authenticated just before...
    assert api.delete(f"{KEYS}/{new['keyPrefix']}").status_code == 200  # ...the revocation
    assert recorder.run_once() == 0
    stored = _stored(ndb_context, new["apiKey"])
    assert stored.revoked and stored.last_used_at is None
    _refused(api.as_key(new["apiKey"]).get(METERS), 401, "unauthorized")


def test_revoking_by_a_long_text_revokes_nothing_and_says_so(api):
    for text in (api.key, "mk_" + "x" * 3000):  # the whole secret; longer than any index entry
        _refused(api.delete(f"{KEYS}/{text}"), 404, "not_found", "prefix")
    assert api.get(KEYS).status_code == 200
