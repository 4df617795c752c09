"""The Alerts and Webhooks pages in Chromium, against the live service and a loopback
receiver: what they show equals what the API answers, the secret is shown once, and a
test message is delivered, signed, to the receiver."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import standardwebhooks

from metering_client import verify_webhook
from tests.browser.dashboard import Dashboard, focus_ring, tab_to
from tests.support.receiver import Receiver
from tests.support.waiting import eventually


@pytest.fixture
def receiver():
    running = Receiver().start()
    yield running
    running.stop()


@pytest.fixture
def deliver(admin):
    """One round of the delivery loop now (evaluate alerts, send due messages), as cron."""

    def run() -> None:
        answer = admin.get("/v1/cron/deliver")
        assert answer.status_code == 200, answer.text

    return run


def go_to(page, board: Dashboard, name: str, section: str) -> None:
    page.get_by_role("link", name=name, exact=True).click()
    page.locator(f"#{section}-section").wait_for(state="visible")
    board.settle(section)


def message_row(page, message_id: str):
    return page.locator(f"#messages-table tr[data-message-id='{message_id}']")


def send_test(page) -> None:
    """Press "Send test message" and wait until the page says the message is queued."""
    page.get_by_role("button", name="Send test message").click()
    page.locator("#messages-status.ok", has_text="queued").wait_for()


def refreshed_until(page, board: Dashboard, deliver, message_id: str, status: str) -> None:
    """Deliver and press Refresh until the message's row shows `status`."""

    def shows():
        deliver()
        page.get_by_role("button", name="Refresh messages").click()
        board.settle("messages")
        return message_row(page, message_id).locator(".badge").inner_text() == status

    eventually(shows, 30, f"{message_id} shown {status}", interval=0.3)


def test_an_endpoint_shows_its_secret_once_and_a_test_message_is_delivered(
    open_page, api, server, receiver, deliver, screenshots
):
    page = open_page()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    board = Dashboard(page)
    board.sign_in(api.key)
    go_to(page, board, "Webhooks", "endpoints")
    assert board.text("#endpoints-status").startswith("No endpoints yet")

    page.get_by_text("New endpoint", exact=True).click()
    form = page.locator("#new-endpoint-form")
    form.get_by_label("URL").fill(receiver.url)
    form.get_by_label("Description").fill("billing")
    form.get_by_role("button", name="Create endpoint").click()
    page.locator("#secret-box").wait_for(state="visible")
    secret = page.locator("#secret-value").input_value()
    assert secret.startswith("whsec_")
    page.get_by_role("button", name="Copy secret").click()
    page.locator("#secret-status.ok").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    page.screenshot(path=str(screenshots / "10-webhook-secret.png"), full_page=True)

    [endpoint] = api.get("/v1/webhooks/endpoints").json()["endpoints"]
    assert "secret" not in endpoint and endpoint["url"] == receiver.url
    assert [row[:4] for row in board.rows("#endpoints-table")] == [
        [receiver.url, "billing", "All", "enabled"]
    ]
    stored = page.evaluate("JSON.stringify({...sessionStorage, ...localStorage})")
    assert secret not in stored  # kept in memory only

    page.reload()  # signed in still (the key is in the tab's session), the secret is gone
    page.locator("#endpoints-section").wait_for(state="visible")
    board.settle("endpoints")
    assert page.locator("#secret-box").is_hidden()
    assert secret not in page.content() and secret not in page.locator("body").inner_text()
    assert board.rows("#endpoints-table")[0][0] == receiver.url

    page.get_by_role("button", name=receiver.url, exact=True).click()
    board.settle("messages")
    assert board.text("#messages-status").startswith("No messages")
    send_test(page)
    [queued] = api.get(f"/v1/webhooks/endpoints/{endpoint['id']}/messages").json()["messages"]
    assert queued["eventType"] == "webhook.test"
    assert message_row(page, queued["id"]).locator(".badge").inner_text() == "pending"

    refreshed_until(page, board, deliver, queued["id"], "delivered")
    row = message_row(page, queued["id"])
    row.get_by_text("1 attempt").click()
    assert "HTTP 200" in row.locator(".attempts").inner_text()
    [received] = [r for r in receiver.received if r.headers["webhook-id"] == queued["id"]]
    payload = verify_webhook(received.body, received.headers, secret)
    assert standardwebhooks.Webhook(secret).verify(received.body, received.headers) == payload
    assert payload["type"] == "webhook.test" and payload["data"]["endpointId"] == endpoint["id"]
    page.screenshot(path=str(screenshots / "11-webhook-messages.png"), full_page=True)


def test_an_endpoint_is_disabled_a_failed_message_retried_and_the_endpoint_deleted(
    open_page, api, receiver, deliver
):
    created = api.post("/v1/webhooks/endpoints", json={"url": receiver.url})
    assert created.status_code == 201, created.text
    endpoint = created.json()
    page = open_page()
    board = Dashboard(page)
    board.sign_in(api.key)
    go_to(page, board, "Webhooks", "endpoints")

    page.get_by_role("button", name=f"Disable {receiver.url}").click()
    page.locator("#endpoints-status.ok").wait_for()
    assert api.get(f"/v1/webhooks/endpoints/{endpoint['id']}").json()["enabled"] is False
    assert board.rows("#endpoints-table")[0][3] == "disabled"
    page.get_by_role("button", name=f"Enable {receiver.url}").click()
    page.locator("#endpoints-status.ok", has_text="is enabled").wait_for()
    assert api.get(f"/v1/webhooks/endpoints/{endpoint['id']}").json()["enabled"] is True

    receiver.mode = "error"
    page.get_by_role("button", name=receiver.url, exact=True).click()
    board.settle("messages")
    send_test(page)
    [queued] = api.get(f"/v1/webhooks/endpoints/{endpoint['id']}/messages").json()["messages"]

    def failed_once():
        deliver()
        page.get_by_role("button", name="Refresh messages").click()
        board.settle("messages")
        return message_row(page, queued["id"]).locator("details").count() == 1

    eventually(failed_once, 30, "a failed attempt shown")
    row = message_row(page, queued["id"])
    row.get_by_text("1 attempt").click()
    assert "HTTP 500" in row.locator(".attempts").inner_text()

    receiver.mode = "ok"
    row.get_by_role("button", name=f"Retry {queued['id']}").click()
    page.locator("#messages-status.ok", has_text="sent again").wait_for()
    refreshed_until(page, board, deliver, queued["id"], "delivered")
    ids = [r.headers["webhook-id"] for r in receiver.received]
    assert ids == [queued["id"], queued["id"]]  # the retry is the same message

    page.get_by_label("Status", exact=True).select_option("delivered")
    board.settle("messages")
    assert [row[2] for row in board.rows("#messages-table")] == ["delivered"]
    page.get_by_label("Status", exact=True).select_option("failed")
    board.settle("messages")
    assert board.rows("#messages-table") == []
    page.get_by_label("Status", exact=True).select_option("")
    board.settle("messages")

    page.get_by_role("button", name=f"Rotate the secret of {receiver.url}").click()
    page.get_by_role("dialog").get_by_role("button", name="Rotate secret").click()
    page.locator("#secret-box").wait_for(state="visible")
    new_secret = page.locator("#secret-value").input_value()
    assert new_secret.startswith("whsec_") and new_secret != endpoint["secret"]
    page.get_by_role("button", name="I have saved it").click()
    assert page.locator("#secret-box").is_hidden() and new_secret not in page.content()
    send_test(page)
    newest = api.get(f"/v1/webhooks/endpoints/{endpoint['id']}/messages").json()["messages"][0]
    refreshed_until(page, board, deliver, newest["id"], "delivered")
    [signed] = [r for r in receiver.received if r.headers["webhook-id"] == newest["id"]]
    for secret in (endpoint["secret"], new_secret):  # both sign during the overlap
        assert verify_webhook(signed.body, signed.headers, secret)["type"] == "webhook.test"

    page.get_by_role("button", name=f"Delete {receiver.url}").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete endpoint").click()
    page.locator("#endpoints-status.ok", has_text="is deleted").wait_for()
    assert api.get("/v1/webhooks/endpoints").json()["endpoints"] == []
    assert board.rows("#endpoints-table") == [] and page.locator("#messages-section").is_hidden()


def test_an_alert_rule_is_created_triggers_are_listed_and_it_is_archived(
    open_page, api, receiver, deliver, screenshots, console
):
    console.allow(r"400")  # the browser logs the refused rule itself
    meter = api.create_meter(name="Tokens", eventName="tokens", dimensions=["model"])
    seats = api.create_meter(name="Seats", eventName="seats", aggregationType="last")
    api.post("/v1/webhooks/endpoints", json={"url": receiver.url})
    page = open_page()
    board = Dashboard(page)
    board.sign_in(api.key)
    go_to(page, board, "Alerts", "alerts")
    assert board.text("#alerts-status").startswith("No alert rules yet")

    page.get_by_text("New alert rule", exact=True).click()
    form = page.locator("#new-alert-form")
    form.get_by_label("Name").fill("Daily tokens")
    form.get_by_label("Meter").select_option(meter["id"])
    form.get_by_label("Thresholds").fill("100, ten")
    form.get_by_role("button", name="Create alert rule").click()
    assert "whole numbers" in board.text("#new-alert-status")
    assert form.get_by_label("Thresholds").get_attribute("aria-invalid") == "true"
    assert api.get("/v1/billing/alerts").json()["alerts"] == []  # nothing was sent

    form.get_by_label("Thresholds").fill("100, 10")
    form.get_by_label("Scope").select_option("one")
    form.get_by_label("User").fill("u-1")
    form.get_by_label("Period").select_option("day")
    form.get_by_label("Calendar zone").select_option("Asia/Kolkata")
    form.get_by_label("Filter").fill("model=gpt-4")
    form.get_by_role("button", name="Create alert rule").click()
    page.locator("#new-alert-status.ok").wait_for()
    [rule] = api.get("/v1/billing/alerts").json()["alerts"]
    assert (rule["thresholds"], rule["scope"], rule["period"], rule["timeZone"]) == (
        [10, 100],
        {"userId": "u-1"},
        "day",
        "Asia/Kolkata",
    )
    assert rule["filter"] == {"model": "gpt-4"} and rule["notifyOnResolve"] is False
    assert board.rows("#alerts-table") == [
        [
            "Daily tokens",
            "Tokens where model=gpt-4",
            "10, 100",
            "User u-1",
            "Day (Asia/Kolkata)",
            "active",
            "Archive",
        ]
    ]

    form.get_by_label("Name").fill("Seats")
    form.get_by_label("Meter").select_option(seats["id"])
    form.get_by_label("Thresholds").fill("5")
    form.get_by_role("button", name="Create alert rule").click()
    page.locator("#new-alert-status.error").wait_for()
    refused = api.post(
        "/v1/billing/alerts",
        json={
            "name": "Seats",
            "meterId": seats["id"],
            "thresholds": [5],
            "scope": "user",
            "period": "month",
        },
    )
    assert refused.status_code == 400
    assert board.text("#new-alert-status") == refused.json()["error"]["message"]

    now = datetime.now(UTC).isoformat()
    api.record(
        *(
            {
                "eventName": "tokens",
                "userId": user,
                "value": value,
                "timestamp": now,
                "idempotency": f"{user}-{value}",
                "dimensions": {"model": "gpt-4"},
            }
            for user, value in (("u-1", 12), ("u-2", 500))
        )
    )
    page.get_by_role("button", name="Daily tokens", exact=True).click()
    board.settle("triggers")

    def listed():
        deliver()
        page.get_by_role("button", name="Refresh triggers").click()
        board.settle("triggers")
        return board.rows("#triggers-table")

    [shown] = eventually(listed, 30, "the trigger listed")
    [trigger] = api.get(f"/v1/billing/alerts/{rule['id']}/triggers").json()["triggers"]
    assert shown[1:5] == ["alert.triggered", "u-1", "10", "12"]
    assert shown[6] == trigger["messageId"]
    page.screenshot(path=str(screenshots / "12-alerts.png"), full_page=True)

    page.get_by_role("button", name="Archive Daily tokens").click()
    page.get_by_role("dialog").get_by_role("button", name="Archive rule").click()
    page.locator("#alerts-status.ok").wait_for()
    assert board.rows("#alerts-table") == []
    assert api.get(f"/v1/billing/alerts/{rule['id']}").json()["archived"] is True
    page.get_by_label("Show archived rules").check()
    board.settle("alerts")
    assert [row[5] for row in board.rows("#alerts-table")] == ["archived"]


def test_the_alerts_and_webhooks_pages_fit_a_phone(open_page, api, receiver, screenshots):
    meter = api.create_meter(name="Tokens", eventName="tokens")
    rule = {"name": "Monthly tokens of every user", "meterId": meter["id"], "scope": "user"}
    created = api.post(
        "/v1/billing/alerts", json={**rule, "thresholds": [1_000_000, 5_000_000], "period": "month"}
    )
    assert created.status_code == 201, created.text
    long_url = receiver.url + "/" + "a-rather-long-path-segment" * 3
    assert api.post("/v1/webhooks/endpoints", json={"url": long_url}).status_code == 201
    page = open_page(width=390, height=844)
    board = Dashboard(page)
    board.sign_in(api.key)
    for name, section, button in (
        ("Alerts", "alerts", "Archive Monthly tokens of every user"),
        ("Webhooks", "endpoints", f"Delete {long_url}"),
    ):
        go_to(page, board, name, section)
        page.screenshot(path=str(screenshots / f"13-phone-{section}.png"), full_page=True)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, name
        box = page.get_by_role("button", name=button).bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390 and box["height"] >= 32


def test_an_endpoint_and_a_rule_are_made_with_the_keyboard_alone(open_page, api, server):
    meter = api.create_meter(name="Tokens", eventName="tokens")
    page = open_page()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    board = Dashboard(page)
    board.sign_in(api.key)
    keys = page.keyboard

    tab_to(page, "#nav-webhooks")
    assert focus_ring(page) == "solid"
    keys.press("Enter")
    board.settle("endpoints")
    tab_to(page, "#new-endpoint > summary")
    keys.press("Enter")
    tab_to(page, "#endpoint-url")
    keys.type("http://127.0.0.1:9/hook")
    keys.press("Enter")
    page.locator("#secret-box").wait_for(state="visible")
    assert page.evaluate("document.activeElement.id") == "secret-value"  # selected, to copy
    keys.press("Tab")
    assert page.evaluate("document.activeElement.id") == "secret-copy"
    keys.press("Enter")
    page.locator("#secret-status.ok").wait_for()
    [endpoint] = api.get("/v1/webhooks/endpoints").json()["endpoints"]
    assert page.evaluate("navigator.clipboard.readText()").startswith("whsec_")
    assert endpoint["url"] == "http://127.0.0.1:9/hook"

    tab_to(page, "#nav-alerts", backwards=True)
    keys.press("Enter")
    board.settle("alerts")
    tab_to(page, "#new-alert > summary")
    keys.press("Enter")
    tab_to(page, "#alert-name")
    keys.type("Tokens")
    tab_to(page, "#alert-thresholds")
    keys.type("1,000,000")
    keys.press("Enter")
    page.locator("#new-alert-status.ok").wait_for()
    [rule] = api.get("/v1/billing/alerts").json()["alerts"]
    assert (rule["meterId"], rule["thresholds"], rule["scope"]) == (
        meter["id"],
        [1_000_000],
        "user",
    )
