"""The limit check's one round trip (issue 16): the caller's key read in the check's lookup.

A process remembers, of each key it authenticated, only what never changes (org, scopes,
expiry); the limit check then reads the key's entity fresh in the same lookup as its
limits and counters and confirms it before answering. These tests prove that nothing of
what made every request read the key is lost: a revocation (by the CLI's function, over
HTTP, by archiving the org) and an expiry are refused on the very next check, whatever
that check would have answered, and a key can never reach another org's counters
through what the process remembers.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime, timedelta

import pytest

from app.models import ApiKey
from app.services import orgs
from tests.support.http import Api, error_of

LIMITS = "/v1/billing/limits"
CHECK = "/v1/billing/limits/check"
KEYS = "/v1/keys"


def usage_of(answer) -> dict[str, int]:
    header = answer.headers["X-Datastore-Usage"]
    return {name: int(value) for name, value in (p.strip().split("=") for p in header.split(";"))}


def refused(answer, status: int = 401, code: str = "unauthorized") -> dict:
    assert answer.status_code == status, answer.text
    error = error_of(answer)
    assert error["code"] == code, error
    return error


@pytest.fixture
def counting(serve, org) -> Api:
    """The org's caller on a server of its own that trusts counters from the start (its
    steady checks make one lookup; the default server asks the summary engine for the
    first minute after a meter's first limit)."""
    return Api(serve(limit_counting_delay=0.0), org["apiKey"])


@pytest.fixture
def limited(counting) -> dict:
    """A meter with a default limit, and one user's usage of it."""
    return limit_and_use(counting)


def limit_and_use(api: Api, value: int = 7) -> dict:
    meter = api.create_meter()
    answer = api.post(LIMITS, json={"meterId": meter["id"], "limit": 100, "period": "month"})
    assert answer.status_code == 201, answer.text
    api.record({"eventName": "input_tokens", "userId": "alice", "value": value, "idempotency": "a"})
    return meter


def new_key(api: Api, *scopes: str, **fields) -> tuple[Api, dict]:
    answer = api.post(KEYS, json={"scopes": list(scopes) or ["usage:read"], **fields})
    assert answer.status_code == 201, answer.text
    created = answer.json()
    return api.as_key(created["apiKey"]), created


def known_check(caller: Api, meter: dict, user: str = "alice", one_trip: bool = True) -> dict:
    """Two checks: the first lets the process learn the key, the second is the one-trip
    path (one RPC, the key read with the check's entities, once counters are trusted)."""
    params = {"meterId": meter["id"], "userId": user}
    first = caller.get(CHECK, params=params)
    assert first.status_code == 200, first.text
    second = caller.get(CHECK, params=params)
    assert second.status_code == 200, second.text
    if one_trip:
        assert usage_of(second)["rpcs"] == 1, second.headers["X-Datastore-Usage"]
    return second.json()


def test_a_key_revoked_by_the_cli_is_refused_on_its_very_next_check(
    counting, org, limited, ndb_context
):
    caller, created = new_key(counting)
    assert known_check(caller, limited)["used"] == 7
    # What `metering keys revoke` runs: straight to the Datastore, no Redis, no HTTP.
    assert orgs.revoke_key(org["name"], created["keyPrefix"]) == 1
    params = {"meterId": limited["id"], "userId": "alice"}
    for _ in range(2):  # the second from the process's memory of refusals
        refused(caller.get(CHECK, params=params))


def test_a_key_revoked_over_http_or_by_archiving_its_org_is_refused_on_the_next_check(
    counting, admin, org, limited
):
    caller, created = new_key(counting)
    other, _ = new_key(counting)
    for each in (caller, other):
        known_check(each, limited)
    assert counting.delete(f"{KEYS}/{created['keyPrefix']}").status_code == 200
    params = {"meterId": limited["id"], "userId": "alice"}
    refused(caller.get(CHECK, params=params))
    assert other.get(CHECK, params=params).status_code == 200

    assert admin.delete(f"/v1/admin/orgs/{org['name']}").status_code == 200
    refused(other.get(CHECK, params=params))


def test_an_expired_key_is_refused_on_the_next_check_saying_so(counting, limited, ndb_context):
    caller, created = new_key(counting, expiresIn=3600)
    known_check(caller, limited)
    stored = ApiKey.key_for(orgs.key_digest(created["apiKey"])).get(use_cache=False)
    stored.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    stored.put()
    error = refused(
        caller.get(CHECK, params={"meterId": limited["id"], "userId": "alice"}),
        code="key_expired",
    )
    assert "expired" in error["message"]


@pytest.mark.parametrize(
    "params",
    [
        {"userId": "alice"},  # 400: neither meterId nor eventName
        {"meterId": "no-such-meter", "userId": "alice"},  # 404 before any lookup
        {"eventName": "nothing_records_this", "userId": "alice"},  # 404 after a query
    ],
)
def test_a_revoked_key_gets_401_not_the_answer_its_check_would_have_had(
    counting, org, limited, ndb_context, params
):
    caller, created = new_key(counting)
    known_check(caller, limited)
    assert caller.get(CHECK, params=params).status_code in (400, 404)
    orgs.revoke_key(org["name"], created["keyPrefix"])
    refused(caller.get(CHECK, params=params))


def test_a_revoked_key_without_the_scope_gets_401_not_403(counting, org, limited, ndb_context):
    narrow, narrow_created = new_key(counting, "meters:read")
    params = {"meterId": limited["id"], "userId": "alice"}
    assert narrow.get(LIMITS).status_code == 200  # the process knows this key too
    refused(narrow.get(CHECK, params=params), 403, "missing_scope")
    orgs.revoke_key(org["name"], narrow_created["keyPrefix"])
    refused(narrow.get(CHECK, params=params))


def test_a_key_never_reads_another_orgs_counters_through_what_the_process_remembers(
    app, api, other_api, org, other_org
):
    """Org B has a limit and usage of its own. Even if this process's memory of A's key
    named org B (it never can: a key's org is written once, with the key), the check
    would read the key's entity with B's counters and refuse before answering."""
    b_meter = other_api.create_meter()
    answer = other_api.post(
        LIMITS, json={"meterId": b_meter["id"], "limit": 100, "period": "month"}
    )
    assert answer.status_code == 201, answer.text
    other_api.record(
        {"eventName": "input_tokens", "userId": "alice", "value": 40, "idempotency": "b"}
    )
    b_params = {"meterId": b_meter["id"], "userId": "alice"}
    assert other_api.get(CHECK, params=b_params).json()["used"] == 40

    # A's own key, known to the process: B's meter is not found in A's org. (This is the
    # session's server, whose app the test can reach; it asks the summary engine in a
    # limit's first minute, after the same one lookup with the key.)
    known_check(api, limit_and_use(api), one_trip=False)
    refused(api.get(CHECK, params=b_params), 404, "meter_not_found")

    # A wrong memory: A's key remembered as B's.
    known = app.extensions["known_keys"]
    digest = orgs.key_digest(org["apiKey"])
    b_caller = known.get(orgs.key_digest(other_org["apiKey"]))
    assert known.get(digest) is not None and b_caller is not None
    known.forget(digest)
    known.remember(dataclasses.replace(b_caller, digest=digest, prefix=org["apiKey"][:12]))
    answer = api.get(CHECK, params=b_params)
    refused(answer)
    assert "40" not in answer.text


def test_the_check_follows_the_scopes_as_stored_not_as_remembered(counting, limited, ndb_context):
    """No route changes a key's scopes; were they edited in the Datastore, the check
    would still decide on the stored ones (read with its entities), as every route does."""
    caller, created = new_key(counting, "usage:read", "meters:read")
    known_check(caller, limited)
    stored = ApiKey.key_for(orgs.key_digest(created["apiKey"])).get(use_cache=False)
    stored.scopes = ["meters:read"]
    stored.put()
    params = {"meterId": limited["id"], "userId": "alice"}
    for _ in range(2):  # the first from the lookup, the second from the corrected memory
        refused(caller.get(CHECK, params=params), 403, "missing_scope")


def test_a_revoked_key_gets_401_not_429_when_its_org_is_over_its_rate_limit(
    serve, counting, org, limited, ndb_context
):
    _, created = new_key(counting)
    if time.time() % 60 > 30:  # its four requests within one window, even on a slow machine
        time.sleep(60 - time.time() % 60 + 0.1)
    limited_url = serve(rate_limit_per_minute=2, limit_counting_delay=0.0)
    caller = Api(limited_url, created["apiKey"])
    known_check(caller, limited)  # the org's 2 requests of the minute in that process
    params = {"meterId": limited["id"], "userId": "alice"}
    refused(caller.get(CHECK, params=params), 429, "rate_limited")
    orgs.revoke_key(org["name"], created["keyPrefix"])
    refused(caller.get(CHECK, params=params))
