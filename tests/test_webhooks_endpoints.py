"""Webhook endpoints over HTTP: create (secret shown once), list, get, update, delete,
rotate, bad input, the event types, and URL safety in a production-configured app."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from openapi_spec_validator import validate

from app import create_app
from app.services.webhooks import signing
from tests.support.http import Api, error_of
from tests.support.server import LiveServer

HOOK = "http://127.0.0.1:9/hook"


def _create(api, **fields) -> dict:
    answer = api.post("/v1/webhooks/endpoints", json={"url": HOOK, **fields})
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_an_endpoint_is_created_with_its_secret_shown_once(api):
    created = _create(api, description="billing", eventTypes=["meter.created"])
    assert created["secret"].startswith("whsec_")
    assert created["url"] == HOOK and created["description"] == "billing"
    assert created["eventTypes"] == ["meter.created"]
    assert created["enabled"] is True and created["disabledReason"] is None
    fetched = api.get(f"/v1/webhooks/endpoints/{created['id']}")
    assert fetched.status_code == 200
    assert "secret" not in fetched.json()
    assert fetched.json() == {k: v for k, v in created.items() if k != "secret"}
    listed = api.get("/v1/webhooks/endpoints").json()
    assert listed["count"] == 1 and listed["nextCursor"] is None
    assert "secret" not in listed["endpoints"][0]


def test_no_event_types_means_all(api):
    assert _create(api)["eventTypes"] is None


def test_the_list_pages(api):
    made = [_create(api)["id"] for _ in range(3)]
    first = api.get("/v1/webhooks/endpoints", params={"limit": 2}).json()
    assert first["count"] == 2 and first["nextCursor"]
    rest = api.get(
        "/v1/webhooks/endpoints", params={"limit": 2, "cursor": first["nextCursor"]}
    ).json()
    assert sorted(e["id"] for e in first["endpoints"] + rest["endpoints"]) == sorted(made)
    assert rest["nextCursor"] is None


def test_update_and_delete(api):
    created = _create(api)
    changed = api.patch(
        f"/v1/webhooks/endpoints/{created['id']}",
        json={"description": "new", "eventTypes": ["webhook.test"], "enabled": False},
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["description"], body["eventTypes"], body["enabled"]) == (
        "new",
        ["webhook.test"],
        False,
    )
    deleted = api.delete(f"/v1/webhooks/endpoints/{created['id']}")
    assert deleted.status_code == 200 and deleted.json()["id"] == created["id"]
    assert api.get(f"/v1/webhooks/endpoints/{created['id']}").status_code == 404
    assert api.get("/v1/webhooks/endpoints").json()["count"] == 0


def test_rotation_answers_a_new_secret(api):
    created = _create(api)
    rotated = api.post(f"/v1/webhooks/endpoints/{created['id']}/rotate-secret")
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["secret"].startswith("whsec_")
    assert rotated.json()["secret"] != created["secret"]


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"url": "not a url"}, "url", "URL"),
        ({"url": "ftp://example.com/x"}, "url", "URL"),
        ({}, "url", "required"),
        ({"url": HOOK, "eventTypes": ["meter.exploded"]}, "eventTypes[0]", "must be one of"),
        ({"url": HOOK, "eventTypes": []}, "eventTypes", ""),
        ({"url": HOOK, "description": "x" * 501}, "description", "500"),
        ({"url": HOOK, "colour": "red"}, "colour", "unknown field"),
    ],
)
def test_bad_input_names_the_field_and_stores_nothing(api, body, param, words):
    answer = api.post("/v1/webhooks/endpoints", json=body)
    assert answer.status_code == 400, answer.text
    error = error_of(answer)
    assert error["param"] == param and words in error["message"]
    assert api.get("/v1/webhooks/endpoints").json()["count"] == 0


def test_an_unknown_endpoint_is_404(api, other_api):
    created = _create(api)
    assert other_api.get(f"/v1/webhooks/endpoints/{created['id']}").status_code == 404
    assert api.get("/v1/webhooks/endpoints/nope").status_code == 404
    answer = api.post(f"/v1/webhooks/endpoints/{created['id']}/messages/msg_x/retry")
    assert answer.status_code == 404 and error_of(answer)["code"] == "message_not_found"


def test_the_event_types_are_listed_with_their_schemas(api, server):
    listed = api.get("/v1/webhooks/event-types").json()["eventTypes"]
    names = {entry["type"] for entry in listed}
    assert names == {
        "alert.triggered",
        "alert.resolved",
        "meter.created",
        "meter.updated",
        "meter.archived",
        "webhook.test",
    }
    meter = next(e for e in listed if e["type"] == "meter.created")["schema"]
    assert "eventName" in meter["properties"]["data"]["properties"]  # the Meter, inline
    document = Api(server.url).get("/openapi.json").json()
    validate(document)
    assert set(document["webhooks"]) == names
    body = document["webhooks"]["alert.triggered"]["post"]["requestBody"]
    data = body["content"]["application/json"]["schema"]["properties"]["data"]
    assert "threshold" in data["properties"]


@pytest.fixture
def production_api(config, admin):
    """A caller of the service configured as on App Engine (production)."""
    server = LiveServer(create_app(config.replace(production=True))).start()
    org = admin.post("/v1/admin/orgs", json={"name": f"prod-{id(server)}"}).json()
    yield Api(server.url, org["apiKey"])
    server.stop()


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://example.com/hook", "https"),
        ("https://127.0.0.1/hook", "not a public address"),
        ("https://localhost/hook", "not a public address"),
        ("https://169.254.169.254/latest/meta-data", "not a public address"),
        ("https://[::1]/hook", "not a public address"),
        ("https://10.1.2.3/hook", "not a public address"),
        ("https://[::ffff:192.168.0.1]/hook", "not a public address"),
    ],
)
def test_production_refuses_an_unsafe_url(production_api, url, words):
    answer = production_api.post("/v1/webhooks/endpoints", json={"url": url})
    assert answer.status_code == 400, answer.text
    error = error_of(answer)
    assert error["param"] == "url" and error["code"] == "unsafe_url"
    assert words in error["message"]
    assert production_api.get("/v1/webhooks/endpoints").json()["count"] == 0


def test_development_allows_a_loopback_http_receiver(api):
    assert _create(api, url="http://127.0.0.1:8123/x")["url"] == "http://127.0.0.1:8123/x"


def test_a_rotated_secret_signs_for_24_hours_then_stops():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    old = signing.new_secret()
    secrets, new = signing.rotated([{"secret": old, "expiresAt": None}], now)
    assert signing.live_secrets(secrets, now + timedelta(hours=23)) == [new, old]
    assert signing.live_secrets(secrets, now + timedelta(hours=24, seconds=1)) == [new]
    again, newest = signing.rotated(secrets, now + timedelta(hours=25))
    assert [entry["secret"] for entry in again] == [newest, new]  # the expired one dropped


def test_an_org_has_at_most_twenty_endpoints(api):
    for _ in range(20):
        _create(api)
    answer = api.post("/v1/webhooks/endpoints", json={"url": HOOK})
    assert answer.status_code == 400
    assert error_of(answer)["code"] == "too_many_endpoints"
    assert api.get("/v1/webhooks/endpoints", params={"limit": 100}).json()["count"] == 20


def test_event_types_null_subscribes_to_all_again(api):
    created = _create(api, eventTypes=["webhook.test"])
    changed = api.patch(f"/v1/webhooks/endpoints/{created['id']}", json={"eventTypes": None})
    assert changed.status_code == 200 and changed.json()["eventTypes"] is None
