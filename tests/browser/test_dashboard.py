"""The dashboard as a new user meets it: every number it shows is the summary API's answer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo

from tests.browser.dashboard import Dashboard, focus_ring, local_midnight, number, tab_to

ZONE = "Asia/Kolkata"  # the browser's zone here: half-hour offset, so windows are not UTC days
NOW = datetime.now(UTC).replace(microsecond=0)


def _ago(hours: float) -> str:
    return (NOW - timedelta(hours=hours)).isoformat().replace("+00:00", "Z")


def _events(meter_id: str) -> list[dict]:
    """Usage of three users over the last three days, two dimensions, idempotency keys."""
    plan = [
        ("ann", 120, 1, "gpt", "eu"),
        ("bob", 40, 2, "claude", "us"),
        ("ann", 7, 20, "claude", "eu"),
        ("cy", 300, 27, "gpt", "us"),
        ("bob", 15, 49, "gpt", "eu"),
        ("ann", 60, 55, "gpt", "us"),
        ("cy", 5, 70, "claude", "eu"),
    ]
    return [
        {
            "meterId": meter_id,
            "userId": user,
            "value": value,
            "timestamp": _ago(hours),
            "idempotency": f"req-{i}",
            "dimensions": {"model": model, "region": region},
        }
        for i, (user, value, hours, model, region) in enumerate(plan)
    ]


def _period(days: int = 7) -> dict:
    today = datetime.now(ZoneInfo(ZONE)).date()
    return {
        "periodStart": local_midnight(today - timedelta(days=days - 1), ZONE),
        "periodEnd": local_midnight(today + timedelta(days=1), ZONE),
        "timeZone": ZONE,
    }


def _check_chart_matches(
    board: Dashboard, api, meter: dict, window: str, split: str = "", filters: dict | None = None
) -> dict:
    """The chart's bars, the data table and the total equal the summary API's answers."""
    params = {
        "meterId": meter["id"],
        **_period(),
        "windowSize": window,
        **{f"filter[{k}]": v for k, v in (filters or {}).items()},
    }
    dense = api.summary(**params)
    chart = board.chart()
    assert len(chart["labels"]) == len(dense["windows"])
    if not split:
        assert [d["data"] for d in chart["datasets"]] == [[w["value"] for w in dense["windows"]]]
        expected_rows = [
            [w["windowStart"], w["windowEnd"], w["value"], w["eventCount"]]
            for w in dense["windows"]
        ]
    else:
        grouped = api.summary(**params, groupBy=split)["windows"]
        starts = [w["windowStart"] for w in dense["windows"]]
        expected: dict = {}
        for w in grouped:
            bars = expected.setdefault(w["groupBy"][split], [0] * len(starts))
            bars[starts.index(w["windowStart"])] = w["value"]
        assert {d["label"]: d["data"] for d in chart["datasets"]} == expected
        expected_rows = [
            [w["windowStart"], w["windowEnd"], w["groupBy"][split], w["value"], w["eventCount"]]
            for w in grouped
        ]
    shown = [[*row[:-2], number(row[-2]), number(row[-1])] for row in board.rows("#chart-table")]
    assert shown == expected_rows
    assert number(board.text("#period-total")) == dense["value"]
    assert board.text("#period-events").startswith(f"{dense['eventCount']} event")
    return dense


def _check_top_users(board: Dashboard, api, meter: dict) -> list[list]:
    """The table is the API's top 10 (`orderBy=-value`), which is every user's breakdown
    sorted by value, ties by user id."""
    by_user = api.summary(meterId=meter["id"], **_period(), groupBy="userId")["windows"]
    expected = sorted(
        ([w["groupBy"]["userId"], w["value"], w["eventCount"]] for w in by_user),
        key=lambda row: (-row[1], row[0]),
    )[:10]
    top = api.summary(
        meterId=meter["id"], **_period(), groupBy="userId", orderBy="-value", limit=10
    )["windows"]
    assert [[w["groupBy"]["userId"], w["value"], w["eventCount"]] for w in top] == expected
    shown = [
        [user, number(value), number(events)]
        for _rank, user, value, events in board.rows("#top-users-table")
    ]
    assert shown == expected
    return expected


def _summary_requests(page) -> list[list[tuple[str, str]]]:
    """The query strings of the summary requests the page sends, as they are sent."""
    sent: list[list[tuple[str, str]]] = []

    def record(request) -> None:
        url = urlsplit(request.url)
        if url.path.endswith("/meter-events/summary"):
            sent.append(parse_qsl(url.query))

    page.on("request", record)
    return sent


def test_a_new_user_signs_in_creates_a_meter_and_reads_usage_equal_to_the_api(
    open_page, api, screenshots
):
    page = open_page(zone=ZONE)
    sent = _summary_requests(page)
    board = Dashboard(page)
    page.screenshot(path=str(screenshots / "01-sign-in.png"))
    board.sign_in(api.key)
    assert page.evaluate("sessionStorage.getItem('metering.apiKey')") == api.key
    assert page.evaluate("localStorage.length") == 0 and page.context.cookies() == []
    assert board.text("#meters-status").startswith("No meters yet")

    board.create_meter("Input tokens", "input_tokens", dimensions="model, region")
    meter = api.get("/v1/billing/meters").json()["meters"][0]
    assert (meter["name"], meter["eventName"], meter["dimensions"]) == (
        "Input tokens",
        "input_tokens",
        ["model", "region"],
    )
    board.settle("usage")
    assert board.text("#usage-status").startswith("No usage")

    api.record(*_events(meter["id"]))
    board.show_usage()
    page.get_by_text("Chart data as a table").click()
    assert page.get_by_label("Time zone").input_value() == ZONE  # the browser's, by default
    dense = _check_chart_matches(board, api, meter, "day")
    assert dense["windows"][0]["windowStart"].endswith("+05:30")
    assert dense["value"] == 547
    page.screenshot(path=str(screenshots / "02-usage.png"), full_page=True)
    top = _check_top_users(board, api, meter)
    assert [row[0] for row in top] == ["cy", "ann", "bob"]
    # the top users are ranked by the API; the total comes from the summary without groupBy
    by_user = [dict(q) for q in sent if ("groupBy", "userId") in q]
    assert by_user and all((q["orderBy"], q["limit"]) == ("-value", "10") for q in by_user)
    assert any("groupBy" not in dict(q) for q in sent)

    board.show_usage(split="model")
    assert board.chart()["stacked"] is True
    _check_chart_matches(board, api, meter, "day", split="model")
    page.screenshot(path=str(screenshots / "03-usage-by-model.png"), full_page=True)
    board.show_usage(layout="Side by side")
    assert board.chart()["stacked"] is False
    board.show_usage(window="hour", split="", filters={"region": "eu"})
    _check_chart_matches(board, api, meter, "hour", filters={"region": "eu"})
    board.show_usage(window="month", filters={"region": "eu, us"})
    _check_chart_matches(board, api, meter, "month")

    name, content = board.download("Download usage CSV")
    month = api.summary(meterId=meter["id"], **_period(), windowSize="month")["windows"]
    assert name.startswith("usage-input_tokens-") and name.endswith("-month.csv")
    assert content == "windowStart,windowEnd,value,eventCount\r\n" + "".join(
        f"{w['windowStart']},{w['windowEnd']},{w['value']},{w['eventCount']}\r\n" for w in month
    )
    name, content = board.download("Download top users CSV")
    assert content.splitlines() == ["rank,userId,value,eventCount"] + [
        f"{i},{user},{value},{count}" for i, (user, value, count) in enumerate(top, 1)
    ]


def test_split_by_user_charts_the_users_with_the_largest_values(open_page, api):
    """Split by user, the chart shows the 12 users the API ranks first, not the first page
    of users by name; their bars and the table are the API's windows of those users."""
    meter = api.create_meter()
    values = {f"user-{n:02d}": (n * 37) % 101 + 1 for n in range(16)}
    api.record(
        *(
            {"meterId": meter["id"], "userId": user, "value": value, "timestamp": _ago(h)}
            for user, value in values.items()
            for h in (1, 30)
        )
    )
    page = open_page(zone=ZONE)
    board = Dashboard(page)
    board.sign_in(api.key)
    board.open_meter(meter["name"])
    board.show_usage(window="day", split="userId")
    ranked = sorted(values, key=lambda user: (-values[user], user))[:12]
    chart = board.chart()
    assert sorted(d["label"] for d in chart["datasets"]) == sorted(ranked)
    grouped = api.summary(meterId=meter["id"], **_period(), windowSize="day", groupBy="userId")
    starts = [
        w["windowStart"]
        for w in api.summary(meterId=meter["id"], **_period(), windowSize="day")["windows"]
    ]
    expected: dict = {user: [0] * len(starts) for user in ranked}
    for w in grouped["windows"]:
        if w["groupBy"]["userId"] in expected:
            expected[w["groupBy"]["userId"]][starts.index(w["windowStart"])] = w["value"]
    assert {d["label"]: d["data"] for d in chart["datasets"]} == expected
    shown = {row[2] for row in board.rows("#chart-table")}
    assert shown == set(ranked)


def test_recent_events_search_cancel_with_confirmation_and_csv(open_page, api, screenshots):
    meter = api.create_meter(dimensions=["model", "region"])
    api.record(*_events(meter["id"]))
    page = open_page(zone=ZONE)
    board = Dashboard(page)
    board.sign_in(api.key)
    board.open_meter(meter["name"])

    listed = api.get("/v1/billing/meter-events", params={"meterId": meter["id"]}).json()["events"]
    assert board.event_ids() == [e["id"] for e in listed]
    assert next(row[1:6] for row in board.rows("#events-table")) == [
        "ann",
        "120",
        "model=gpt, region=eu",
        "req-0",
        "active",
    ]
    board.search_events(user="bob")
    assert board.event_ids() == [e["id"] for e in listed if e["userId"] == "bob"]
    board.search_events(idempotency="req-3")
    assert [row[1] for row in board.rows("#events-table")] == ["cy"]
    board.search_events(user="nobody")
    assert board.text("#events-status") == "No events match this search."
    page.get_by_role("button", name="Clear search").click()
    board.settle("events")

    target = listed[0]  # ann's 120, an hour ago
    row = page.locator(f"#events-table tr[data-event-id='{target['id']}']")
    row.get_by_role("button", name="Cancel").click()
    dialog = page.get_by_role("dialog")
    assert "ann" in dialog.inner_text()
    page.screenshot(path=str(screenshots / "04-cancel-confirmation.png"))
    dialog.get_by_role("button", name="Keep it").click()
    assert api.summary(meterId=meter["id"])["value"] == 547  # nothing happened

    row.get_by_role("button", name="Cancel").click()
    dialog.get_by_role("button", name="Cancel event").click()
    page.locator("#events-status.ok").wait_for()  # the dialog closes asynchronously
    board.settle("usage")
    assert board.text("#events-status").startswith("Event cancelled")
    assert row.locator(".badge").inner_text() == "cancelled"
    after = api.get("/v1/billing/meter-events", params={"meterId": meter["id"]}).json()["events"]
    assert after[0]["status"] == "cancelled"
    total = api.summary(meterId=meter["id"], **_period())["value"]
    assert total == 547 - 120 and number(board.text("#period-total")) == total
    page.screenshot(path=str(screenshots / "05-events.png"), full_page=True)

    name, content = board.download("Download events CSV")
    assert name == f"events-{meter['eventName']}.csv"
    lines = content.splitlines()
    assert lines[0] == "id,timestamp,userId,value,dimensions,idempotency,status"
    assert lines[1] == (
        f"{target['id']},{target['timestamp']},ann,120,"
        '"{""model"":""gpt"",""region"":""eu""}",req-0,cancelled'
    )
    assert len(lines) == 1 + len(after)


def test_signing_out_forgets_the_key(open_page, api, server):
    page = open_page()
    urls = []
    page.on("request", lambda request: urls.append(request.url))
    board = Dashboard(page)
    board.sign_in(api.key)
    page.get_by_role("button", name="Sign out").click()
    assert page.evaluate("sessionStorage.length") == 0
    assert page.locator("#sign-in-view").is_visible() and not page.locator("#app-view").is_visible()
    assert page.evaluate("document.activeElement.id") == "api-key"
    page.reload()
    assert page.locator("#sign-in-view").is_visible()
    assert not any(api.key in url for url in urls)
    assert page.url == server.url + "/dashboard"


def test_the_main_path_works_with_the_keyboard_alone(open_page, api):
    page = open_page(zone=ZONE)
    board = Dashboard(page)
    keys = page.keyboard
    keys.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    tab_to(page, "#api-key")
    keys.type(api.key)
    keys.press("Enter")
    page.locator("#app-view").wait_for(state="visible")
    board.settle("meters")

    tab_to(page, "#new-meter > summary")
    keys.press("Enter")
    tab_to(page, "#meter-name")
    keys.type("Input tokens")
    keys.press("Tab")
    keys.type("input_tokens")
    tab_to(page, "#meter-dimensions")
    keys.type("model, region")
    keys.press("Enter")
    page.locator("#new-meter-status.ok").wait_for()
    board.settle("usage")
    assert page.evaluate("document.activeElement.id") == "usage-title"
    meter = api.get("/v1/billing/meters").json()["meters"][0]
    assert meter["dimensions"] == ["model", "region"]

    api.record(*_events(meter["id"]))
    tab_to(page, "#usage-split")
    keys.press("ArrowDown")
    assert page.locator("#usage-split").input_value() == "model"
    tab_to(page, "#usage-form button[type=submit]")
    assert focus_ring(page) == "solid"
    keys.press("Enter")
    board.settle("usage")
    board.settle("events")
    _check_chart_matches(board, api, meter, "day", split="model")

    tab_to(page, "#events-table button")
    assert focus_ring(page) == "solid"
    keys.press("Enter")
    assert page.get_by_role("dialog").is_visible()
    assert page.evaluate("document.activeElement.id") == "confirm-no"
    keys.press("Escape")  # a closed dialog changes nothing
    assert not page.get_by_role("dialog").is_visible()
    keys.press("Enter")
    keys.press("Tab")
    assert page.evaluate("document.activeElement.id") == "confirm-yes"
    keys.press("Enter")
    page.locator("#events-status.ok").wait_for()  # the dialog closes asynchronously
    events = api.get("/v1/billing/meter-events", params={"meterId": meter["id"]}).json()["events"]
    assert [e["status"] for e in events] == ["cancelled"] + ["active"] * 6
    board.settle("usage")
    total = api.summary(meterId=meter["id"], **_period())["value"]
    assert number(board.text("#period-total")) == total

    tab_to(page, "#sign-out", backwards=True)
    keys.press("Enter")
    assert page.locator("#sign-in-view").is_visible()
    assert page.evaluate("sessionStorage.length") == 0
