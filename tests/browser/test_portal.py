"""The customer portal page (issue 16) in Chromium, as an end customer sees it: their
usage this month by meter, by day in their time zone and by dimension; nothing of
another user; an expired link that says so; inside an iframe and on a phone."""

from __future__ import annotations

import contextlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app.config import DEV_PORTAL_SIGNING_KEYS
from tests.test_portal import _parts, _signed


@pytest.fixture
def portal(browser, server, console):
    """Open /portal with a token in the fragment: `portal(token, zone=..., width=...)`;
    every request the page makes is kept in `page.sent` (URL and headers)."""
    contexts = []

    def opener(token: str, *, zone: str = "UTC", width: int = 1280, fragment: str = "token="):
        context = browser.new_context(
            timezone_id=zone, viewport={"width": width, "height": 900}, locale="en-GB"
        )
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        page.sent = []
        page.on("request", lambda r: page.sent.append((r.url, r.headers)))
        page.on("console", lambda m: m.type == "error" and console.errors.append(m.text))
        page.on("pageerror", lambda exc: console.errors.append(f"uncaught: {exc}"))
        page.goto(f"{server.url}/portal#{fragment}{token}")
        page.wait_for_selector("body[data-ready]")
        return page

    yield opener
    for context in contexts:
        context.close()
    assert console.unexpected() == [], "the browser console showed errors"


@pytest.fixture
def usage(api):
    tokens = api.create_meter(
        name="Tokens", eventName="tokens", dimensions=["model"], metadata={"unit": "tokens"}
    )
    api.create_meter(name="Calls", eventName="calls", aggregationType="count")
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
    events = [
        ("alice", 5, "small"),
        ("alice", 7, "small"),
        ("alice", 100, "large"),
        ("bob", 98765, "secret-model"),
    ]
    api.record(
        *[
            {
                "meterId": tokens["id"],
                "userId": user,
                "value": value,
                "timestamp": now,
                "idempotency": f"e{i}",
                "dimensions": {"model": model},
            }
            for i, (user, value, model) in enumerate(events)
        ]
    )
    return tokens


def _token(api, user: str = "alice", **body) -> str:
    answer = api.post("/v1/portal/tokens", json={"userId": user, **body})
    assert answer.status_code == 201, answer.text
    return answer.json()["token"]


def test_a_customer_sees_their_months_usage_and_nothing_of_another_user(
    portal, api, usage, screenshots
):
    token = _token(api)
    page = portal(token, zone="Asia/Kolkata")
    card = page.locator(f"section.meter[data-meter='{usage['id']}']")
    assert card.locator("[data-total]").inner_text() == "112 tokens"
    rows = card.locator("table.breakdown tbody tr").all_inner_texts()
    assert [r.split("\t") for r in rows] == [["large", "100 tokens"], ["small", "12 tokens"]]
    assert page.locator("section.meter").count() == 2  # Tokens and Calls, the org's meters
    assert "Asia/Kolkata" in page.locator("#period").inner_text()
    text = page.locator("body").inner_text()
    assert "98765" not in text and "98,765" not in text and "secret-model" not in text
    # the token went in the Authorization header only: never in a URL, and it left the
    # address bar
    assert page.sent and all(token not in url for url, _ in page.sent)
    assert any(h.get("authorization") == f"Bearer {token}" for _, h in page.sent)
    assert token not in page.url and page.evaluate("location.hash") == ""
    # the days are the browser's: the summary was asked in its zone
    summaries = [url for url, _ in page.sent if "/summary" in url and "windowSize=day" in url]
    assert summaries and all("timeZone=Asia%2FKolkata" in url for url in summaries)
    page.screenshot(path=str(screenshots / "20-portal.png"), full_page=True)


def test_a_token_for_one_meter_shows_only_that_meter(portal, api, usage):
    page = portal(_token(api, meterIds=[usage["id"]]))
    assert page.locator("section.meter").count() == 1


def test_bobs_link_shows_bobs_usage_not_alices(portal, api, usage):
    page = portal(_token(api, user="bob"), fragment="")  # the bare token works too
    card = page.locator(f"section.meter[data-meter='{usage['id']}']")
    assert card.locator("[data-total]").inner_text() == "98,765 tokens"
    text = page.locator("body").inner_text()
    assert "112" not in text and "small" not in text


def test_an_expired_link_says_so(portal, api, usage, console):
    console.allow(r"401")  # the browser logs the refused request itself
    head, claims, _ = _parts(_token(api))
    expired = _signed(
        head, {**claims, "e": int(time.time() * 1000) - 1000}, DEV_PORTAL_SIGNING_KEYS[0][1]
    )
    page = portal(expired)
    assert page.locator("#status.error").inner_text().startswith("This link has expired")
    assert page.locator("section.meter").count() == 0


def test_a_revoked_link_says_it_is_no_longer_valid(portal, api, usage, console):
    console.allow(r"401")
    token = _token(api)
    assert api.post("/v1/portal/tokens/revoke", json={"userId": "alice"}).status_code == 200
    page = portal(token)
    assert "no longer valid" in page.locator("#status.error").inner_text()


@contextlib.contextmanager
def _site(html: str):
    """A tenant's web site of one page, at http://localhost:PORT (another origin than the
    service's http://127.0.0.1:PORT)."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self):
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{httpd.server_address[1]}/usage"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_it_works_inside_an_iframe_and_on_a_phone(browser, server, api, usage, screenshots):
    token = _token(api)
    context = browser.new_context(viewport={"width": 375, "height": 740}, locale="en-GB")
    try:
        page = context.new_page()
        # a tenant's own site, at another origin, that embeds the portal (served from
        # loopback: Chromium refuses a public site framing a loopback address)
        embedding = f'<iframe src="{server.url}/portal#token={token}" width="360" height="700">'
        with _site(embedding + "</iframe>") as site:
            page.goto(site)
        frame = page.frame_locator("iframe")
        frame.locator("body[data-ready='true']").wait_for(timeout=15_000)
        assert frame.locator("[data-total]").first.inner_text() == "112 tokens"
        page.screenshot(path=str(screenshots / "21-portal-iframe-phone.png"))
        # and alone on a phone-sized screen: nothing wider than the screen
        alone = context.new_page()
        alone.goto(f"{server.url}/portal#token={token}")
        alone.wait_for_selector("body[data-ready='true']")
        assert alone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    finally:
        context.close()
    headers = api.get("/portal").headers
    assert "frame-ancestors *" in headers["Content-Security-Policy"]
    assert "X-Frame-Options" not in headers
