"""Customer portal tokens (issue 16): issued by the org, read-only for one end customer,
verified without a Datastore read, refused when forged, expired or revoked; CORS only
on the portal's reading routes, for the origins the org allows."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest

from app.config import DEV_PORTAL_SIGNING_KEYS, Config
from tests.support.http import Api, error_of

DAY = "2026-12-01"
GOOD_ORIGIN = "https://app.tenant.example"


def _events(api: Api, meter: dict, user: str, values: list[int], model: str = "small"):
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
    api.record(
        *[
            {
                "meterId": meter["id"],
                "userId": user,
                "value": value,
                "timestamp": now,
                "idempotency": f"{user}-{model}-{i}",
                "dimensions": {"model": model},
            }
            for i, value in enumerate(values)
        ]
    )


@pytest.fixture
def usage(api):
    """Two meters; users alice and bob with usage of the first."""
    tokens = api.create_meter(
        name="Tokens", eventName="tokens", dimensions=["model"], metadata={"unit": "token"}
    )
    calls = api.create_meter(name="Calls", eventName="calls", aggregationType="count")
    _events(api, tokens, "alice", [5, 7])
    _events(api, tokens, "alice", [100], model="large")
    _events(api, tokens, "bob", [1000])
    return {"tokens": tokens, "calls": calls}


def _issue(api: Api, expect: int = 201, **body) -> dict:
    answer = api.post("/v1/portal/tokens", json={"userId": "alice", **body})
    assert answer.status_code == expect, answer.text
    return answer.json()


def _as_token(api: Api, token: str) -> Api:
    return api.as_key(token)


def _period() -> dict:
    now = time.gmtime()
    return {
        "periodStart": time.strftime("%Y-%m-%d", time.gmtime(time.time() - 2 * 86400)),
        "periodEnd": time.strftime("%Y-%m-%d", now),
    }


# -- issuing and reading ---------------------------------------------------------------


def test_a_token_reads_its_users_usage_of_its_meters_and_nothing_else(api, usage):
    issued = _issue(api, meterIds=[usage["tokens"]["id"]], expiresIn=600)
    assert issued["token"].startswith("pt_") and issued["userId"] == "alice"
    assert issued["meterIds"] == [usage["tokens"]["id"]]
    customer = _as_token(api, issued["token"])

    listed = customer.get("/v1/portal/meters")
    assert listed.status_code == 200, listed.text
    assert [(m["id"], m["name"], m["unit"]) for m in listed.json()["meters"]] == [
        (usage["tokens"]["id"], "Tokens", "token")
    ]
    assert "metadata" not in listed.json()["meters"][0]

    path = f"/v1/portal/meters/{usage['tokens']['id']}/summary"
    total = customer.get(path, params=_period())
    assert total.status_code == 200, total.text
    assert (total.json()["value"], total.json()["userId"]) == (112, "alice")

    by_model = customer.get(path, params={**_period(), "groupBy": "model"}).json()
    assert sorted((w["groupBy"]["model"], w["value"]) for w in by_model["windows"]) == [
        ("large", 100),
        ("small", 12),
    ]
    by_day = customer.get(
        path, params={**_period(), "windowSize": "day", "timeZone": "Asia/Kolkata"}
    ).json()
    assert sum(w["value"] for w in by_day["windows"]) == 112


def test_user_a_never_sees_user_b(api, usage):
    customer = _as_token(api, _issue(api)["token"])
    path = f"/v1/portal/meters/{usage['tokens']['id']}/summary"
    for params in (
        {"userId": "bob"},
        {"filter[userId]": "bob"},
        {"filter[userId]": ["alice", "bob"]},
    ):
        answer = customer.get(path, params={**_period(), **params})
        assert answer.status_code == 404, (params, answer.text)
        assert error_of(answer)["code"] == "user_not_found"
    for params in ({"userId": "alice"}, {"filter[userId]": "alice"}, {}):
        assert customer.get(path, params={**_period(), **params}).json()["value"] == 112
    by_user = customer.get(path, params={**_period(), "groupBy": "userId"}).json()
    assert [(w["groupBy"]["userId"], w["value"]) for w in by_user["windows"]] == [("alice", 112)]
    by_model = customer.get(path, params={**_period(), "groupBy": "model"}).json()
    assert by_model["value"] == 112  # bob's 1000 nowhere
    assert all(w["value"] != 1000 for w in by_model["windows"])


def test_other_meters_and_other_orgs_meters_are_404(api, other_api, usage):
    customer = _as_token(api, _issue(api, meterIds=[usage["tokens"]["id"]])["token"])
    foreign = other_api.create_meter(name="Theirs", eventName="theirs")
    for meter_id in (usage["calls"]["id"], foreign["id"], "nonsense"):
        answer = customer.get(f"/v1/portal/meters/{meter_id}/summary")
        assert answer.status_code == 404, answer.text
        assert error_of(answer)["code"] == "meter_not_found"
    # a token for all meters still cannot reach another org's
    everything = _as_token(api, _issue(api)["token"])
    assert everything.get(f"/v1/portal/meters/{foreign['id']}/summary").status_code == 404
    names = {m["name"] for m in everything.get("/v1/portal/meters").json()["meters"]}
    assert names == {"Tokens", "Calls"}


def test_issuing_checks_its_body(api, usage, other_api):
    foreign = other_api.create_meter(name="Theirs", eventName="theirs")
    assert (
        error_of(api.post("/v1/portal/tokens", json={"userId": "a", "meterIds": [foreign["id"]]}))[
            "param"
        ]
        == "meterIds[0]"
    )
    for body, param in (
        ({}, "userId"),
        ({"userId": "a", "expiresIn": 86401}, "expiresIn"),
        ({"userId": "a", "expiresIn": "60"}, "expiresIn"),
        ({"userId": "a", "meterIds": []}, "meterIds"),
    ):
        answer = api.post("/v1/portal/tokens", json=body)
        assert answer.status_code == 400 and error_of(answer)["param"] == param, answer.text


# -- forgeries, expiry, revocation -----------------------------------------------------


def _parts(token: str) -> tuple[str, dict, str]:
    head, payload, signature = token.split(".")
    return (
        head,
        json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))),
        signature,
    )


def _encode(head: str, claims: dict, signature: str) -> str:
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{payload}.{signature}"


def _signed(head: str, claims: dict, secret: str) -> str:
    unsigned = _encode(head, claims, "x").rsplit(".", 1)[0]
    digest = hmac.new(secret.encode(), unsigned.encode(), hashlib.sha256).digest()
    return unsigned + "." + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def test_tampered_tokens_are_all_refused(api, other_org, usage):
    token = _issue(api, meterIds=[usage["tokens"]["id"]], expiresIn=600)["token"]
    head, claims, signature = _parts(token)
    other_meter = usage["calls"]["id"]
    forgeries = {
        "user": _encode(head, {**claims, "u": "bob"}, signature),
        "meter": _encode(head, {**claims, "m": [other_meter]}, signature),
        "all meters": _encode(head, {**claims, "m": None}, signature),
        "expiry": _encode(head, {**claims, "e": claims["e"] + 86_400_000}, signature),
        "org": _encode(head, {**claims, "o": other_org["name"]}, signature),
        "signature": token[:-2] + ("AA" if token[-2:] != "AA" else "BB"),
        "last character": token[:-1] + ("B" if token[-1] != "B" else "C"),
        "no signature": f"{head}.{token.split('.')[1]}.",
        "other secret": _signed(head, {**claims, "u": "bob"}, "x" * 40),
        "unknown key id": _signed("pt_other", claims, DEV_PORTAL_SIGNING_KEYS[0][1]),
        "org API key": api.key,
        "garbage": "pt_dev.e30.AAAA",
    }
    for what, forged in forgeries.items():
        answer = api.as_key(forged).get(f"/v1/portal/meters/{other_meter}/summary")
        assert answer.status_code == 401, (what, answer.text)
        assert error_of(answer)["code"] in ("invalid_token", "unauthorized"), what
    # the untouched token still works: the refusals were the tampering's
    assert api.as_key(token).get("/v1/portal/meters").status_code == 200


def test_a_token_signed_with_the_right_key_for_another_org_reads_only_that_org(
    api, other_api, usage
):
    # the signing key is the service's; the org is checked against the registry, so a
    # token whose org number does not match its org's name is refused
    token = _issue(api)["token"]
    head, claims, _ = _parts(token)
    secret = DEV_PORTAL_SIGNING_KEYS[0][1]
    wrong_number = _signed(head, {**claims, "i": claims["i"] + 1}, secret)
    assert api.as_key(wrong_number).get("/v1/portal/meters").status_code == 401


def test_an_expired_token_is_refused_saying_so(api, usage):
    token = _issue(api)["token"]
    head, claims, _ = _parts(token)
    past = _signed(
        head, {**claims, "e": int(time.time() * 1000) - 1}, DEV_PORTAL_SIGNING_KEYS[0][1]
    )
    answer = api.as_key(past).get("/v1/portal/meters")
    assert answer.status_code == 401
    error = error_of(answer)
    assert error["code"] == "token_expired" and "expired" in error["message"]


def test_org_routes_refuse_a_portal_token(api, usage):
    customer = _as_token(api, _issue(api)["token"])
    for method, path in (
        ("GET", "/v1/billing/meters"),
        ("GET", f"/v1/billing/meter-events/summary?meterId={usage['tokens']['id']}"),
        ("POST", "/v1/portal/tokens"),
        ("GET", "/v1/portal/settings"),
        ("POST", "/v1/billing/meter-events"),
    ):
        answer = customer.request(method, path, json={"userId": "alice"})
        assert answer.status_code == 401, (path, answer.text)


def test_revoking_a_users_tokens_or_all_applies_on_the_next_request(api, usage):
    alice, bob = _issue(api)["token"], _issue(api, userId="bob")["token"]
    assert api.as_key(alice).get("/v1/portal/meters").status_code == 200  # cached now
    revoked = api.post("/v1/portal/tokens/revoke", json={"userId": "alice"})
    assert revoked.status_code == 200 and revoked.json()["userId"] == "alice", revoked.text
    refused = api.as_key(alice).get("/v1/portal/meters")
    assert refused.status_code == 401 and error_of(refused)["code"] == "token_revoked"
    assert api.as_key(bob).get("/v1/portal/meters").status_code == 200
    fresh = _issue(api)["token"]  # issued after the revocation: valid
    assert api.as_key(fresh).get("/v1/portal/meters").status_code == 200

    assert api.post("/v1/portal/tokens/revoke", json={}).status_code == 200
    for token in (bob, fresh):
        assert api.as_key(token).get("/v1/portal/meters").status_code == 401
    assert api.as_key(_issue(api)["token"]).get("/v1/portal/meters").status_code == 200


def test_a_revocation_made_elsewhere_applies_within_the_stated_bound(api, serve, usage):
    """Another process (here another app, with its own cache) sees the revocation once
    its copy of the policy is older than METERING_PORTAL_POLICY_CACHE_SECONDS."""
    bound = 0.5
    elsewhere = Api(serve(portal_policy_cache_seconds=bound))
    token = _issue(api)["token"]
    assert elsewhere.as_key(token).get("/v1/portal/meters").status_code == 200
    assert api.post("/v1/portal/tokens/revoke", json={"userId": "alice"}).status_code == 200
    time.sleep(bound)  # the bound itself: what this test proves is that it suffices
    answer = elsewhere.as_key(token).get("/v1/portal/meters")
    assert answer.status_code == 401 and error_of(answer)["code"] == "token_revoked"


def test_archiving_the_org_refuses_its_tokens(api, admin, org, serve, usage):
    bound = 0.3
    elsewhere = Api(serve(portal_policy_cache_seconds=bound))
    token = _issue(api)["token"]
    assert elsewhere.as_key(token).get("/v1/portal/meters").status_code == 200
    assert admin.delete(f"/v1/admin/orgs/{org['name']}").status_code == 200
    time.sleep(bound)  # the org's policy, as another process caches it, is that old at most
    refused = elsewhere.as_key(token).get("/v1/portal/meters")
    assert refused.status_code == 401 and "org is gone" in error_of(refused)["message"]


def test_verifying_a_token_reads_nothing_once_the_policy_is_cached(api, usage):
    customer = _as_token(api, _issue(api, meterIds=[usage["tokens"]["id"]])["token"])
    first = customer.get("/v1/portal/meters").headers["X-Datastore-Usage"]
    assert first.startswith("rpcs=2;")  # the org's policy (one lookup), then the meter
    for _ in range(3):  # then only the meter the answer shows: the token costs nothing
        answer = customer.get("/v1/portal/meters")
        assert answer.headers["X-Datastore-Usage"] == "rpcs=1; read=1; written=0"


# -- CORS -----------------------------------------------------------------------------


def test_preflight_answers_without_a_token(anonymous):
    answer = anonymous.request(
        "OPTIONS",
        "/v1/portal/meters",
        headers={
            "Origin": GOOD_ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert answer.status_code == 204
    assert answer.headers["Access-Control-Allow-Origin"] == GOOD_ORIGIN
    assert "Authorization" in answer.headers["Access-Control-Allow-Headers"]
    assert answer.headers["Access-Control-Allow-Methods"] == "GET"


def test_only_allowed_origins_may_read_and_others_are_refused(api, usage):
    customer = _as_token(api, _issue(api)["token"])
    assert api.get("/v1/portal/settings").json() == {"allowedOrigins": []}
    stored = api.request(
        "PUT",
        "/v1/portal/settings",
        json={"allowedOrigins": [GOOD_ORIGIN + ":443", "http://localhost:3000"]},
    )
    assert stored.status_code == 200, stored.text
    assert stored.json() == {"allowedOrigins": ["http://localhost:3000", GOOD_ORIGIN]}

    allowed = customer.get("/v1/portal/meters", headers={"Origin": GOOD_ORIGIN})
    assert allowed.status_code == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == GOOD_ORIGIN
    for origin in (
        "https://evil.example",
        GOOD_ORIGIN + ":8443",
        "http://app.tenant.example",
        "null",
    ):
        refused = customer.get("/v1/portal/meters", headers={"Origin": origin})
        assert refused.status_code == 403, (origin, refused.text)
        assert error_of(refused)["code"] == "origin_not_allowed"
        assert "Access-Control-Allow-Origin" not in refused.headers
    # no Origin: not a browser's cross-origin call (a tenant's server): no CORS headers
    plain = customer.get("/v1/portal/meters")
    assert plain.status_code == 200 and "Access-Control-Allow-Origin" not in plain.headers


def test_an_expired_tokens_refusal_is_readable_by_an_allowed_origin(api, usage):
    api.request("PUT", "/v1/portal/settings", json={"allowedOrigins": [GOOD_ORIGIN]})
    head, claims, _ = _parts(_issue(api)["token"])
    past = _signed(head, {**claims, "e": 1}, DEV_PORTAL_SIGNING_KEYS[0][1])
    answer = api.as_key(past).get("/v1/portal/meters", headers={"Origin": GOOD_ORIGIN})
    assert answer.status_code == 401
    assert answer.headers["Access-Control-Allow-Origin"] == GOOD_ORIGIN


def test_no_other_route_sends_cors_headers(api, usage):
    for path in ("/v1/billing/meters", "/v1/portal/settings", "/healthz", "/openapi.json"):
        answer = api.get(path, headers={"Origin": GOOD_ORIGIN})
        assert not any(h.lower().startswith("access-control-") for h in answer.headers), path
        preflight = api.request(
            "OPTIONS", path, headers={"Origin": GOOD_ORIGIN, "Access-Control-Request-Method": "GET"}
        )
        assert not any(h.lower().startswith("access-control-") for h in preflight.headers), path


def test_settings_refuse_what_is_not_an_exact_origin(api):
    for origin in (
        "https://a.example/",
        "https://a.example/path",
        "ftp://a.example",
        "a.example",
        "https://user@a.example",
        "*",
    ):
        answer = api.request("PUT", "/v1/portal/settings", json={"allowedOrigins": [origin]})
        assert answer.status_code == 400, (origin, answer.text)
        assert error_of(answer)["param"] == "allowedOrigins[0]"


def test_the_orgs_rate_limit_counts_portal_requests(api, serve, usage):
    limited = Api(serve(rate_limit_per_minute=3))
    customer = limited.as_key(_issue(api)["token"])
    # 7 requests: even across a minute's boundary, one minute sees more than 3
    answers = [customer.get("/v1/portal/meters").status_code for _ in range(7)]
    assert 429 in answers and answers[0] == 200


# -- the signing keys ------------------------------------------------------------------

OLD = ("old", "o" * 32)
NEW = ("new", "n" * 32)


def test_a_key_rotates_without_refusing_the_tokens_it_signed(serve, org, usage):
    before = Api(serve(portal_signing_keys=(OLD,)), org["apiKey"])
    during = Api(serve(portal_signing_keys=(NEW, OLD)), org["apiKey"])
    after = Api(serve(portal_signing_keys=(NEW,)), org["apiKey"])
    old_token, new_token = _issue(before)["token"], _issue(during)["token"]
    assert old_token.startswith("pt_old.") and new_token.startswith("pt_new.")
    assert during.as_key(old_token).get("/v1/portal/meters").status_code == 200
    assert after.as_key(new_token).get("/v1/portal/meters").status_code == 200
    refused = after.as_key(old_token).get("/v1/portal/meters")
    assert refused.status_code == 401 and "unknown signing key" in error_of(refused)["message"]


def test_signing_keys_come_from_the_environment_and_never_default_in_production():
    keys = Config.from_env({"METERING_PORTAL_SIGNING_KEYS": f"new:{'n' * 32}, old:{'o' * 32}"})
    assert keys.portal_signing_keys == (NEW, OLD)
    assert Config.from_env({}).portal_signing_keys == DEV_PORTAL_SIGNING_KEYS
    for bad in ("new", f"new:{'n' * 31}", f"a.b:{'n' * 32}", f"k:{'n' * 32},k:{'o' * 32}"):
        with pytest.raises(ValueError, match="METERING_PORTAL_SIGNING_KEYS"):
            Config.from_env({"METERING_PORTAL_SIGNING_KEYS": bad})
    production = {"GAE_ENV": "standard", "METERING_HASHID_SALT": "s", "METERING_ADMIN_TOKEN": "t"}
    assert Config.from_env(production).portal_signing_keys == ()
    chosen = Config.from_env({**production, "METERING_PORTAL_SIGNING_KEYS": f"new:{'n' * 32}"})
    assert chosen.portal_signing_keys == (NEW,)


def test_without_signing_keys_there_is_no_portal(serve, org, usage):
    disabled = Api(serve(portal_signing_keys=()), org["apiKey"])
    for answer in (
        disabled.post("/v1/portal/tokens", json={"userId": "alice"}),
        disabled.as_key("pt_dev.e30.AAAA").get("/v1/portal/meters"),
    ):
        assert answer.status_code == 404 and error_of(answer)["code"] == "portal_disabled"


def test_a_purged_orgs_tokens_never_open_the_org_re_created_under_its_name(api, admin, org, usage):
    """The re-created org keeps the old one's name and number, which is all a token names:
    the re-creation refuses every token issued before it."""
    old_token = _issue(api)["token"]
    assert _as_token(api, old_token).get("/v1/portal/meters").status_code == 200
    name = org["name"]
    assert admin.delete(f"/v1/admin/orgs/{name}", params={"purge": "true"}).status_code == 200
    again = admin.post("/v1/admin/orgs", json={"name": name})
    assert again.status_code == 201, again.text
    reborn = Api(api.base_url, again.json()["apiKey"])
    refused = _as_token(reborn, old_token).get("/v1/portal/meters")
    assert refused.status_code == 401 and error_of(refused)["code"] == "token_revoked"
    fresh = _as_token(reborn, _issue(reborn)["token"]).get("/v1/portal/meters")
    assert fresh.status_code == 200 and fresh.json()["meters"] == []
