"""The Keys page (issue 16) in Chromium against the live service: the org's keys as the API
lists them, a new key with chosen scopes and expiry whose secret is shown once, and
revocation taking effect on the next request."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.browser.dashboard import Dashboard
from tests.browser.test_alerts_webhooks import go_to

KEYS = "/v1/keys"


def test_a_key_is_created_with_chosen_scopes_shown_once_and_revoked(
    open_page, api, org, server, screenshots
):
    page = open_page()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    board = Dashboard(page)
    board.sign_in(api.key)
    go_to(page, board, "Keys", "keys")
    [own] = board.rows("#keys-table")
    assert own[0] == f"{org['keyPrefix']} (this key)" and own[3] == "active"

    page.get_by_text("New key", exact=True).click()
    form = page.locator("#new-key-form")
    offered = form.locator("input[name=scopes]").evaluate_all("boxes => boxes.map(b => b.value)")
    assert "events:backfill" in offered and "keys:write" in offered  # the first key's: all
    form.get_by_label("Name").fill("ingest servers")
    form.get_by_label("Expires").select_option("30")
    form.get_by_label("events:write").check()
    form.get_by_label("usage:read").check()
    form.get_by_role("button", name="Create key").click()
    page.locator("#key-secret-box").wait_for(state="visible")
    secret = page.locator("#key-secret-value").input_value()
    assert secret.startswith("mk_")
    page.get_by_role("button", name="Copy key").click()
    page.locator("#key-secret-status.ok").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    page.screenshot(path=str(screenshots / "12-new-api-key.png"), full_page=True)

    listed = {key["prefix"]: key for key in api.get(KEYS).json()["keys"]}
    new = listed[secret[:12]]
    assert (new["name"], new["scopes"]) == ("ingest servers", ["events:write", "usage:read"])
    expires = datetime.fromisoformat(new["expiresAt"].replace("Z", "+00:00"))
    assert timedelta(days=29, hours=23) < expires - datetime.now(UTC) <= timedelta(days=30)
    row = page.locator(f"#keys-table tr[data-key-prefix='{new['prefix']}']")
    assert "events:write" in row.inner_text() and "ingest servers" in row.inner_text()
    stored = page.evaluate("JSON.stringify({...sessionStorage, ...localStorage})")
    assert secret not in stored  # kept in memory only

    made = api.as_key(secret)
    assert made.get("/v1/billing/meter-events/summary").status_code == 400  # usage:read
    assert made.get("/v1/billing/meters").status_code == 403

    page.get_by_role("button", name=f"Revoke {new['prefix']}").click()
    page.locator("#confirm-yes").click()
    page.locator("#keys-status.ok", has_text="is revoked").wait_for()
    assert row.locator(".badge").inner_text() == "revoked"
    assert made.get("/v1/billing/meter-events/summary").status_code == 401
    page.reload()
    page.locator("#keys-section").wait_for(state="visible")
    board.settle("keys")
    assert page.locator("#key-secret-box").is_hidden() and secret not in page.content()


def test_a_key_without_meters_read_signs_in_and_offers_only_its_scopes(open_page, api, console):
    console.allow("status of 403")  # the meters list the page asks for at sign-in
    manager = api.post(KEYS, json={"scopes": ["keys:write", "usage:read"]}).json()["apiKey"]
    page = open_page()
    board = Dashboard(page)
    board.sign_in(manager)
    go_to(page, board, "Keys", "keys")
    page.get_by_text("New key", exact=True).click()
    offered = page.locator("#new-key-form input[name=scopes]").evaluate_all(
        "boxes => boxes.map(b => b.value)"
    )
    assert offered == ["usage:read", "keys:write"]
    assert len(board.rows("#keys-table")) == 2
