"""Loading, empty and error states, archiving, and a phone-sized screen."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.browser.dashboard import Dashboard, number


def test_a_wrong_key_shows_the_api_envelope_message(open_page, anonymous, console):
    console.allow(r"401")  # the browser logs the refused request itself
    expected = anonymous.as_key("mk_not-a-key").get("/v1/billing/meters").json()["error"]
    page = open_page()
    page.get_by_label("Org API key").fill("mk_not-a-key")
    page.get_by_role("button", name="Sign in").click()
    page.locator("#sign-in-status.error").wait_for()
    assert Dashboard(page).text("#sign-in-status") == f"Sign-in failed: {expected['message']}"
    assert page.evaluate("sessionStorage.length") == 0
    assert not page.locator("#app-view").is_visible()


def test_empty_states_then_a_refused_meter_then_archiving(open_page, api, console, screenshots):
    console.allow(r"409")
    page = open_page()
    board = Dashboard(page)
    board.sign_in(api.key)
    assert board.text("#meters-status") == "No meters yet. Create one with “New meter” below."

    board.create_meter("API calls", "api_calls", aggregation="count")
    board.settle("usage")
    board.settle("events")
    assert board.text("#usage-status").startswith("No usage from ")
    assert number(board.text("#period-total")) == 0
    assert board.text("#top-users-status") == "No users in this period."
    assert board.text("#events-status") == "No events recorded for this meter yet."
    page.screenshot(path=str(screenshots / "06-empty-meter.png"), full_page=True)

    taken = api.post("/v1/billing/meters", json={"name": "Again", "eventName": "api_calls"})
    assert taken.status_code == 409
    board.create_meter("Again", "api_calls")
    assert board.text("#new-meter-status") == taken.json()["error"]["message"]
    assert page.evaluate("document.activeElement.id") == "meter-event-name"
    assert page.locator("#meter-event-name").get_attribute("aria-invalid") == "true"
    assert len(api.get("/v1/billing/meters").json()["meters"]) == 1

    meter = api.get("/v1/billing/meters").json()["meters"][0]
    row = page.locator(f"#meters-table tr[data-meter-id='{meter['id']}']")
    row.get_by_role("button", name="Archive API calls").click()
    page.get_by_role("dialog").get_by_role("button", name="Keep it").click()
    assert api.get(f"/v1/billing/meters/{meter['id']}").json()["status"] == "active"
    row.get_by_role("button", name="Archive API calls").click()
    page.get_by_role("dialog").get_by_role("button", name="Archive meter").click()
    page.locator("#meters-status.ok").wait_for()
    assert row.locator(".badge").inner_text() == "archived"
    assert api.get(f"/v1/billing/meters/{meter['id']}").json()["status"] == "archived"
    assert row.get_by_role("button", name="Archive API calls").count() == 0


def test_a_bad_period_is_refused_before_asking(open_page, api):
    api.create_meter()
    page = open_page()
    board = Dashboard(page)
    board.sign_in(api.key)
    board.open_meter("Input tokens")
    page.get_by_label("From").fill("2026-11-20")
    page.get_by_label("To (included)").fill("2026-11-10")
    page.get_by_role("button", name="Show usage").click()
    assert board.text("#usage-status") == "The last day must not be before the first day."


def test_readable_on_a_phone(open_page, api, screenshots):
    meter = api.create_meter(dimensions=["model"])
    now = datetime.now(UTC)
    api.record(
        *[
            {
                "meterId": meter["id"],
                "userId": f"customer-{n}@example.com",
                "value": 10 * n,
                "timestamp": (now - timedelta(hours=7 * n)).isoformat(),
                "idempotency": f"request-{n}-0123456789",
                "dimensions": {"model": "gpt-4o"},
            }
            for n in range(1, 6)
        ]
    )
    page = open_page(width=390, height=844)
    board = Dashboard(page)
    page.screenshot(path=str(screenshots / "07-phone-sign-in.png"))
    board.sign_in(api.key)
    board.open_meter("Input tokens")
    page.screenshot(path=str(screenshots / "08-phone-usage.png"), full_page=True)
    page.locator("#events-section").screenshot(path=str(screenshots / "09-phone-events.png"))
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert number(board.text("#period-total")) == 150
    for target in ("Show usage", "Search events", "Sign out"):
        box = page.get_by_role("button", name=target).bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390 and box["height"] >= 32


def test_loading_shows_until_the_answer_arrives(open_page, api):
    api.create_meter()
    page = open_page()
    board = Dashboard(page)
    board.sign_in(api.key)
    held = []

    def hold(route):  # the real answers, only later
        held.append(route)

    page.route("**/v1/billing/meter-events/summary?*", hold)
    page.get_by_role("button", name="Input tokens", exact=True).click()
    assert board.text("#usage-status") == "Loading usage…"
    assert page.locator("#usage-section").get_attribute("aria-busy") == "true"
    while len(held) < 2:
        page.wait_for_timeout(50)
    for route in held:
        route.continue_()
    board.settle("usage")
    assert board.text("#usage-status").startswith("No usage from ")


def test_an_api_refusal_shows_its_message(open_page, api, console):
    console.allow(r"400")
    meter = api.create_meter()
    page = open_page()
    board = Dashboard(page)
    board.sign_in(api.key)
    board.open_meter("Input tokens")
    page.get_by_label("From").fill("2024-01-01")
    board.show_usage(window="hour")
    refused = api.get(
        "/v1/billing/meter-events/summary",
        params={
            "meterId": meter["id"],
            "periodStart": "2024-01-01T00:00:00Z",
            "periodEnd": "2030-01-01T00:00:00Z",
            "windowSize": "hour",
        },
    )
    assert refused.status_code == 400
    message = refused.json()["error"]["message"]
    assert board.text("#usage-status") == f"Could not load usage: {message}"
    assert not page.locator("#usage-results").is_visible()


def test_a_revoked_key_signs_the_page_out(open_page, api, admin, org, console):
    console.allow(r"401")
    api.create_meter()
    page = open_page()
    board = Dashboard(page)
    board.sign_in(api.key)
    board.open_meter("Input tokens")
    revoked = admin.delete(f"/v1/admin/orgs/{org['name']}/keys/{org['keyPrefix']}")
    assert revoked.status_code == 200, revoked.text
    message = api.get("/v1/billing/meters").json()["error"]["message"]
    page.get_by_role("button", name="Show usage").click()
    page.locator("#sign-in-view").wait_for(state="visible")
    assert board.text("#sign-in-status") == f"Signed out: {message}"
    assert page.evaluate("sessionStorage.length") == 0


def test_more_events_load_on_request(open_page, api):
    meter = api.create_meter()
    now = datetime.now(UTC)
    api.record(
        *[
            {
                "meterId": meter["id"],
                "userId": "u",
                "value": n,
                "timestamp": (now - timedelta(minutes=n)).isoformat(),
            }
            for n in range(30)
        ]
    )
    page = open_page()
    board = Dashboard(page)
    board.sign_in(api.key)
    board.open_meter("Input tokens")
    assert [number(row[2]) for row in board.rows("#events-table")] == list(range(25))
    page.get_by_role("button", name="Load more events").click()
    board.settle("events")
    assert [number(row[2]) for row in board.rows("#events-table")] == list(range(30))
    assert not page.get_by_role("button", name="Load more events").is_visible()
