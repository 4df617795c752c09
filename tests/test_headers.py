"""Security headers, over HTTP on the real app: nosniff and a deny-all policy on every API
answer, the dashboard's and /docs' own policies, no caching of authenticated answers,
HSTS on every answer in production."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from app import create_app
from app.dashboard import CONTENT_SECURITY_POLICY as DASHBOARD_POLICY
from app.headers import API_POLICY, STRICT_TRANSPORT_SECURITY
from tests.support.flavour import firestore_only  # noqa: F401
from tests.support.http import Api
from tests.support.server import LiveServer

pytestmark = pytest.mark.usefixtures("firestore_only")
METERS = "/v1/billing/meters"


def _answers(api: Api, admin: Api, anonymous: Api, org: dict) -> dict:
    """One answer of every kind the service gives, by name."""
    meter = api.create_meter()
    return {
        "created": api.post(METERS, json={"name": "n", "eventName": "other"}),
        "listed": api.get(METERS),
        "one meter": api.get(f"{METERS}/{meter['id']}"),
        "bad body": api.post(METERS, data=b"{"),
        "unknown meter": api.get(f"{METERS}/nope"),
        "wrong method": api.request("PUT", METERS),
        "events": api.get("/v1/billing/meter-events", params={"meterId": meter["id"]}),
        "summary": api.get("/v1/billing/meter-events/summary", params={"meterId": meter["id"]}),
        "admin keys": admin.get(f"/v1/admin/orgs/{org['name']}/keys"),
        "admin unknown org": admin.get("/v1/admin/orgs/nobody-here/keys"),
        "cron": admin.get("/v1/cron/compact"),
        "wrong key": api.as_key("mk_" + "x" * 40).get(METERS),
        "no key": anonymous.get(METERS),
        "health": anonymous.get("/healthz"),
        "ready": anonymous.get("/readyz"),
        "openapi": anonymous.get("/openapi.json"),
        "nowhere": anonymous.get("/nowhere"),
        "too large": anonymous.post(METERS, data=b"x" * ((1 << 20) + 1)),
        "docs": anonymous.get("/docs"),
        "dashboard": anonymous.get("/dashboard"),
        "dashboard module": anonymous.get("/dashboard/static/js/main.js"),
    }


AUTHENTICATED = {
    "created",
    "listed",
    "one meter",
    "bad body",
    "unknown meter",
    "wrong method",
    "events",
    "summary",
    "admin keys",
    "admin unknown org",
    "cron",
    "wrong key",
}
PAGES = {"docs", "dashboard", "dashboard module"}


def test_every_api_answer_forbids_sniffing_and_everything_in_a_browser(api, admin, anonymous, org):
    answers = _answers(api, admin, anonymous, org)
    assert {name: a.status_code for name, a in answers.items()} == {
        "created": 201,
        "listed": 200,
        "one meter": 200,
        "bad body": 400,
        "unknown meter": 404,
        "wrong method": 405,
        "events": 200,
        "summary": 200,
        "admin keys": 200,
        "admin unknown org": 404,
        "cron": 200,
        "wrong key": 401,
        "no key": 401,
        "health": 200,
        "ready": 200,
        "openapi": 200,
        "nowhere": 404,
        "too large": 413,
        "docs": 200,
        "dashboard": 200,
        "dashboard module": 200,
    }
    for name, answer in answers.items():
        assert answer.headers["X-Content-Type-Options"] == "nosniff", name
        if name not in PAGES:
            assert answer.headers["Content-Security-Policy"] == API_POLICY, name
        # Outside production (plain HTTP on a laptop) there is no HSTS to promise.
        assert "Strict-Transport-Security" not in answer.headers, name


def test_answers_to_credentials_are_never_stored_and_public_ones_may_be(api, admin, anonymous, org):
    for name, answer in _answers(api, admin, anonymous, org).items():
        stored = answer.headers.get("Cache-Control", "")
        if name in AUTHENTICATED:
            assert stored == "no-store", name
        else:
            assert "no-store" not in stored, name


def test_the_dashboard_keeps_its_own_policy(anonymous):
    for path in ("/dashboard", "/dashboard/", "/dashboard/static/js/main.js"):
        answer = anonymous.get(path)
        assert answer.headers["Content-Security-Policy"] == DASHBOARD_POLICY, path
        assert answer.headers["X-Content-Type-Options"] == "nosniff", path


def test_the_docs_page_may_use_its_own_inline_styles_and_nothing_else(anonymous):
    answer = anonymous.get("/docs")
    assert answer.headers["Content-Type"].startswith("text/html")
    styles = re.findall(r"<style>(.*?)</style>", answer.text, re.DOTALL)
    assert styles, "the page styles itself inline"
    allowed = {
        "'sha256-" + base64.b64encode(hashlib.sha256(css.encode()).digest()).decode() + "'"
        for css in styles
    }
    directives = dict(
        d.strip().split(" ", 1) for d in answer.headers["Content-Security-Policy"].split(";")
    )
    assert directives["default-src"] == "'none'"
    assert set(directives["style-src"].split()) == allowed
    assert directives["frame-ancestors"] == "'none'" and "script-src" not in directives
    assert "<script" not in answer.text


@pytest.fixture(scope="module")
def production(config):
    """The app as App Engine runs it (Config.production), served over HTTP."""
    running = LiveServer(create_app(config.replace(production=True))).start()
    yield running
    running.stop()


def test_in_production_every_answer_demands_https(production, org, config):
    api, admin, anonymous = (
        Api(production.url, org["apiKey"]),
        Api(production.url, config.admin_token),
        Api(production.url),
    )
    answers = _answers(api, admin, anonymous, org)
    assert len(answers) == 21
    for name, answer in answers.items():
        assert answer.headers["Strict-Transport-Security"] == STRICT_TRANSPORT_SECURITY, name
        assert answer.headers["X-Content-Type-Options"] == "nosniff", name
