"""Structured logs: one JSON object per line in Cloud Logging's shape, a request id on
every answer, and no API key, token or event payload in any line."""

from __future__ import annotations

import json
import logging
import sys
import uuid

import pytest

from app.logs import JsonFormatter, scrub, trace_fields
from tests.support.flavour import firestore_only  # noqa: F401
from tests.support.http import Api

pytestmark = pytest.mark.usefixtures("firestore_only")
TRACE = "logging.googleapis.com/trace"


def test_the_trace_header_becomes_cloud_loggings_trace_fields():
    trace_id = "105445aa7843bc8bf206b12000100000"
    assert trace_fields(f"{trace_id}/1;o=1", "proj") == {
        TRACE: f"projects/proj/traces/{trace_id}",
        "logging.googleapis.com/spanId": "1",
        "logging.googleapis.com/trace_sampled": True}
    assert trace_fields(trace_id, "proj") == {TRACE: f"projects/proj/traces/{trace_id}"}
    for garbage in (None, "", "not-a-trace", f"{trace_id}/x", "a" * 31):
        assert trace_fields(garbage, "proj") == {}


def test_credentials_are_scrubbed_from_any_message():
    key = "mk_" + "Ab1-_" * 8
    assert scrub(f"key {key} and Authorization: Bearer s3cr3t!") == (
        "key [redacted] and Authorization: [redacted]")


def test_a_record_with_an_exception_is_one_json_line():
    try:
        raise ValueError("bad mk_abcdefghijklmnop")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed: %s",
                                   ("why",), sys.exc_info())
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
    answers = [anonymous.get("/healthz"), anonymous.get("/v1/billing/meters"),
               anonymous.get("/nowhere"), api.post("/v1/billing/meters", data=b"{")]
    assert [a.status_code for a in answers] == [200, 401, 404, 400]
    ids = {a.headers["X-Request-Id"] for a in answers}
    assert len(ids) == 4


@pytest.fixture
def log_lines(capsys):
    """The JSON lines the service writes to stderr during the test."""
    capsys.readouterr()

    def lines() -> list[dict]:
        return [json.loads(line) for line in capsys.readouterr().err.splitlines()
                if line.strip()]
    return lines


def test_requests_log_json_lines_without_keys_or_payloads(api, admin, org, log_lines):
    marker = f"payload-{uuid.uuid4().hex}"
    trace_id = uuid.uuid4().hex
    meter = api.create_meter(dimensions=["model"])
    recorded = api.post("/v1/billing/meter-events",
                        headers={"X-Cloud-Trace-Context": f"{trace_id}/7;o=0"},
                        json={"events": [{"meterId": meter["id"], "userId": marker,
                                          "value": 1, "idempotency": marker,
                                          "dimensions": {"model": marker}}]})
    assert recorded.status_code == 201
    bad = api.post("/v1/billing/meter-events",
                   json={"events": [{"meterId": meter["id"], "userId": marker,
                                     "value": "x"}]})
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
