"""Org tenants: API keys, admin API, and isolation between orgs."""

from __future__ import annotations

import pytest

from tests.support.http import error_of


def test_admin_creates_an_org_with_a_namespace_and_a_key(admin):
    answer = admin.post("/v1/admin/orgs", json={"name": "acme-corp"})
    assert answer.status_code == 201
    body = answer.json()
    assert body["name"] == "acme-corp" and body["namespace"] == "acme-corp"
    assert body["apiKey"].startswith("mk_") and body["apiKey"].startswith(body["keyPrefix"])


def test_an_org_name_can_be_taken_once(admin):
    assert admin.post("/v1/admin/orgs", json={"name": "twice"}).status_code == 201
    again = admin.post("/v1/admin/orgs", json={"name": "twice"})
    assert again.status_code == 409
    assert error_of(again)["param"] == "name"


@pytest.mark.parametrize(
    "name",
    [
        "",
        "_namespaces",
        "__kind__",
        "Upper",
        "a_b",
        "-lead",
        "trail-",
        "x" * 64,
        "dots.dots",
        "sp ace",
        7,
        None,
    ],
)
def test_org_names_that_could_address_another_namespace_are_refused(admin, name):
    answer = admin.post("/v1/admin/orgs", json={"name": name})
    assert answer.status_code == 400
    assert error_of(answer)["param"] == "name"


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic abc",
        "Bearer mk_not-a-real-key",
        "Bearer test-admin-token",
        "mk_raw-without-scheme",
    ],
)
def test_requests_without_a_valid_key_get_401(anonymous, header):
    headers = {"Authorization": header} if header is not None else {}
    for method, path in [
        ("GET", "/v1/billing/meters"),
        ("POST", "/v1/billing/meters"),
        ("POST", "/v1/billing/meter-events"),
        ("GET", "/v1/billing/meter-events/summary?meterId=x"),
    ]:
        answer = anonymous.request(method, path, headers=headers, json={})
        assert answer.status_code == 401, (method, path, answer.text)
        assert error_of(answer)["code"] == "unauthorized"


def test_admin_api_needs_the_admin_token(anonymous, org):
    assert anonymous.post("/v1/admin/orgs", json={"name": "nope"}).status_code == 401
    as_org = anonymous.as_key(org["apiKey"])
    assert as_org.post("/v1/admin/orgs", json={"name": "nope"}).status_code == 401


def test_an_org_can_hold_several_keys_and_revoke_one(admin, api, org):
    second = admin.post(f"/v1/admin/orgs/{org['name']}/keys").json()
    as_second = api.as_key(second["apiKey"])
    assert as_second.get("/v1/billing/meters").status_code == 200
    revoked = admin.delete(f"/v1/admin/orgs/{org['name']}/keys/{second['keyPrefix']}")
    assert revoked.status_code == 200 and revoked.json() == {"revoked": 1}
    assert as_second.get("/v1/billing/meters").status_code == 401
    assert api.get("/v1/billing/meters").status_code == 200
    listed = admin.get(f"/v1/admin/orgs/{org['name']}/keys").json()
    assert sorted(k["revoked"] for k in listed["keys"]) == [False, True]
    assert all("apiKey" not in k for k in listed["keys"])


def test_keys_are_stored_only_as_hashes(api, org, ndb_context):
    from app.models import ApiKey, ids

    stored = ApiKey.query(ApiKey.org == org["name"], namespace=ids.REGISTRY_NAMESPACE).fetch()
    assert len(stored) == 1
    as_text = repr(stored[0].to_dict()) + stored[0].key.id()
    assert org["apiKey"] not in as_text
    assert org["apiKey"][len(org["keyPrefix"]) :] not in as_text


def test_one_orgs_key_never_reaches_another_orgs_data(api, other_api):
    mine = api.create_meter(eventName="tokens")
    api.record({"meterId": mine["id"], "userId": "u1", "value": 10})
    # The other org sees nothing of it, by list, by id, by event name or in summaries.
    assert other_api.get("/v1/billing/meters").json()["meters"] == []
    assert other_api.get(f"/v1/billing/meters/{mine['id']}").status_code == 404
    assert (
        other_api.patch(f"/v1/billing/meters/{mine['id']}", json={"name": "x"}).status_code == 404
    )
    assert other_api.delete(f"/v1/billing/meters/{mine['id']}").status_code == 404
    summary = other_api.get("/v1/billing/meter-events/summary", params={"meterId": mine["id"]})
    assert summary.status_code == 404
    by_id = other_api.post(
        "/v1/billing/meter-events",
        json={"events": [{"meterId": mine["id"], "userId": "u", "value": 1}]},
    )
    assert by_id.status_code == 400
    by_name = other_api.post(
        "/v1/billing/meter-events",
        json={"events": [{"eventName": "tokens", "userId": "u", "value": 1}]},
    )
    assert by_name.status_code == 400
    # ...and the same event name is free in the other org.
    theirs = other_api.create_meter(eventName="tokens")
    other_api.record({"meterId": theirs["id"], "userId": "u1", "value": 99})
    assert api.summary(meterId=mine["id"])["value"] == 10
    assert other_api.summary(meterId=theirs["id"])["value"] == 99


def test_healthz_needs_no_key(anonymous):
    answer = anonymous.get("/healthz")
    assert answer.status_code == 200 and answer.json() == {"status": "ok"}
