"""Structured logs: one JSON object per line in Cloud Logging's shape, a request id on
every answer, and no API key, token or event payload in any line."""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid

import pytest

from app.logs import JsonFormatter, scrub, scrub_fields, trace_fields
from tests.support.flavour import firestore_only  # noqa: F401
from tests.support.http import Api

pytestmark = pytest.mark.usefixtures("firestore_only")
TRACE = "logging.googleapis.com/trace"


def test_the_trace_header_becomes_cloud_loggings_trace_fields():
    trace_id = "105445aa7843bc8bf206b12000100000"
    assert trace_fields(f"{trace_id}/1;o=1", "proj") == {
        TRACE: f"projects/proj/traces/{trace_id}",
        "logging.googleapis.com/spanId": "1",
        "logging.googleapis.com/trace_sampled": True,
    }
    assert trace_fields(trace_id, "proj") == {TRACE: f"projects/proj/traces/{trace_id}"}
    for garbage in (None, "", "not-a-trace", f"{trace_id}/x", "a" * 31):
        assert trace_fields(garbage, "proj") == {}


def test_credentials_are_scrubbed_from_any_message():
    key = "mk_" + "Ab1-_" * 8
    assert scrub(f"key {key} and Authorization: Bearer s3cr3t!") == (
        "key [redacted] and Authorization: [redacted]"
    )


def test_a_record_with_an_exception_is_one_json_line():
    try:
        raise ValueError("bad mk_abcdefghijklmnop")
    except ValueError:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "failed: %s", ("why",), sys.exc_info()
        )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["severity"] == "ERROR" and parsed["message"].startswith("failed: why\n")
    assert "ValueError: bad [redacted]" in parsed["message"]


def test_every_answer_carries_a_request_id(api, anonymous):
    given = api.get("/v1/billing/meters", headers={"X-Request-Id": "client-req.42"})
    assert given.headers["X-Request-Id"] == "client-req.42"
    unsafe = anonymous.get("/healthz", headers={"X-Request-Id": "has spaces\tand tabs"})
    assert unsafe.headers["X-Request-Id"] != "has spaces\tand tabs"
    answers = [
        anonymous.get("/healthz"),
        anonymous.get("/v1/billing/meters"),
        anonymous.get("/nowhere"),
        api.post("/v1/billing/meters", data=b"{"),
    ]
    assert [a.status_code for a in answers] == [200, 401, 404, 400]
    ids = {a.headers["X-Request-Id"] for a in answers}
    assert len(ids) == 4


@pytest.fixture
def log_lines(capsys):
    """The JSON lines the service writes to stderr during the test."""
    capsys.readouterr()

    def lines() -> list[dict]:
        return [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]

    return lines


def test_requests_log_json_lines_without_keys_or_payloads(api, admin, org, log_lines):
    marker = f"payload-{uuid.uuid4().hex}"
    trace_id = uuid.uuid4().hex
    meter = api.create_meter(dimensions=["model"])
    recorded = api.post(
        "/v1/billing/meter-events",
        headers={"X-Cloud-Trace-Context": f"{trace_id}/7;o=0"},
        json={
            "events": [
                {
                    "meterId": meter["id"],
                    "userId": marker,
                    "value": 1,
                    "idempotency": marker,
                    "dimensions": {"model": marker},
                }
            ]
        },
    )
    assert recorded.status_code == 201
    bad = api.post(
        "/v1/billing/meter-events",
        json={"events": [{"meterId": meter["id"], "userId": marker, "value": "x"}]},
    )
    assert bad.status_code == 400
    assert Api(api.base_url, "mk_" + "z" * 40).get("/v1/billing/meters").status_code == 401
    admin.get(f"/v1/admin/orgs/{org['name']}/keys")
    lines = log_lines()
    assert len(lines) >= 5
    assert all({"severity", "message", "time"} <= set(line) for line in lines)
    text = json.dumps(lines)
    for secret in (org["apiKey"], admin.key, marker, "z" * 40):
        assert secret not in text
    mine = [line for line in lines if line.get("requestId") == recorded.headers["X-Request-Id"]]
    assert mine[-1][TRACE] == f"projects/metering-test/traces/{trace_id}"
    assert mine[-1]["logging.googleapis.com/trace_sampled"] is False
    assert mine[-1]["httpRequest"]["requestUrl"] == "/v1/billing/meter-events"


def test_every_string_of_a_line_is_scrubbed_nested_ones_and_keys_included():
    key = "mk_" + "Q" * 40
    line = {
        "message": f"m {key}",
        "httpRequest": {"requestUrl": f"/v1/billing/meters/{key}", "status": 404, "latency": 0.5},
        "extra": [key, (1, f"Bearer {key}"), {key: None}],
        "flag": True,
        "object": ValueError(key),
    }
    scrubbed = scrub_fields(line)
    assert key not in json.dumps(scrubbed)
    assert scrubbed["httpRequest"] == {
        "requestUrl": "/v1/billing/meters/[redacted]",
        "status": 404,
        "latency": 0.5,
    }
    assert scrubbed["extra"] == ["[redacted]", [1, "[redacted]"], {"[redacted]": None}]
    assert scrubbed["flag"] is True and scrubbed["object"] == "[redacted]"


def _strings(value):
    """Every string of a parsed JSON line, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def assert_no_secret_in(lines: list[dict], secrets) -> None:
    """No secret in any string field of any line (and none in the raw text either)."""
    for line in lines:
        for text in _strings(line):
            for secret in secrets:
                assert secret not in text, (secret, line)


def test_secrets_planted_in_paths_headers_and_request_ids_reach_no_log_field(
    api, admin, org, anonymous, config, log_lines
):
    key, token, salt = org["apiKey"], admin.key, config.hashid_salt
    foreign = "mk_" + uuid.uuid4().hex + "xyz"
    answers = [
        api.get(f"/v1/billing/meters/{key}"),  # the key in requestUrl and the message
        api.get(f"/v1/billing/meters/{foreign}"),
        admin.get(f"/v1/admin/orgs/{token}/keys"),  # the admin token in requestUrl
        admin.post(f"/v1/admin/orgs/{token}/keys"),
        anonymous.get(f"/{salt}/nowhere"),
        anonymous.get("/healthz", headers={"User-Agent": f"agent {key} {token}"}),
        anonymous.get("/healthz", headers={"Referer": f"https://x.test/{key}?t={token}"}),
        anonymous.get("/healthz", headers={"X-Request-Id": key}),
        anonymous.get("/healthz", headers={"X-Request-Id": foreign}),
        anonymous.get("/healthz", headers={"X-Cloud-Trace-Context": f"{key}/1;o=1"}),
    ]
    assert [a.status_code for a in answers] == [404, 404, 404, 404, 404, 200, 200, 200, 200, 200]
    # A key-shaped request id is replaced, not echoed into every line blanked.
    assert answers[7].headers["X-Request-Id"] not in (key, "[redacted]")
    lines = log_lines()
    access = [line for line in lines if "httpRequest" in line]
    assert len(access) == len(answers)
    assert_no_secret_in(lines, (key, token, salt, foreign))
    assert access[0]["httpRequest"]["requestUrl"] == "/v1/billing/meters/[redacted]"
    assert access[2]["httpRequest"]["requestUrl"] == "/v1/admin/orgs/[redacted]/keys"
    assert access[5]["httpRequest"]["userAgent"] == "agent [redacted] [redacted]"


def test_secrets_in_exception_text_and_extra_fields_reach_no_log_field(config, capsys):
    """A view that fails with a secret in its exception and logs one in extra fields,
    served by the real app over HTTP: the lines keep their shape, minus the secrets."""
    from app import create_app
    from tests.support.server import LiveServer

    key = "mk_" + uuid.uuid4().hex
    app = create_app(config)
    planted = logging.getLogger("metering.planted")

    @app.get("/planted/extra")
    def extra_fields():
        planted.warning(
            "saw %s",
            key,
            extra={
                "orgKey": key,
                "nested": {"list": [key]},
                "admin": f"token={config.admin_token}",
            },
        )
        return {"ok": True}

    @app.get("/planted/exception")
    def exception_text():
        raise RuntimeError(f"failed with {key} and {config.admin_token}")

    server = LiveServer(app).start()
    try:
        capsys.readouterr()
        assert Api(server.url).get("/planted/extra").status_code == 200
        assert Api(server.url).get("/planted/exception").status_code == 500
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]
    finally:
        server.stop()
    assert_no_secret_in(lines, (key, config.admin_token))
    [extra] = [line for line in lines if line["logger"] == "metering.planted"]
    assert extra["orgKey"] == "[redacted]" and extra["nested"] == {"list": ["[redacted]"]}
    assert extra["admin"] == "token=[redacted]" and extra["requestId"]
    [failure] = [line for line in lines if line["message"].startswith("unhandled error")]
    assert "RuntimeError: failed with [redacted] and [redacted]" in failure["message"]


def test_a_request_id_or_trace_ending_in_a_newline_is_not_taken(app):
    """`$` matches before a final newline; the id would break the answer's header."""
    client = app.test_client()
    for value in ("client-req\n", "client-req\r\n"):
        answer = client.get("/healthz", environ_overrides={"HTTP_X_REQUEST_ID": value})
        assert answer.status_code == 200
        assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["X-Request-Id"])
    assert (
        client.get("/healthz", headers={"X-Request-Id": "client-req.42"}).headers["X-Request-Id"]
        == "client-req.42"
    )
