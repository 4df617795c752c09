"""Totals beyond what a JavaScript Number holds are shown digit for digit, and the summary
API's string form of them becomes exact numbers again on the page and in its CSV files."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.browser.dashboard import Dashboard

INT64_MAX, INT64_MIN = (1 << 63) - 1, -(1 << 63)
AT = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)


def _events(meter_id: str, user: str, value: int, count: int) -> list[dict]:
    stamp = AT.isoformat().replace("+00:00", "Z")
    return [
        {
            "meterId": meter_id,
            "userId": user,
            "value": value,
            "timestamp": stamp,
            "idempotency": f"{user}-{i}",
        }
        for i in range(count)
    ]


def _grouped(value: int) -> str:
    return f"{value:,}"


def test_totals_past_int64_are_shown_exactly(open_page, api):
    meter = api.create_meter()
    api.record(*_events(meter["id"], "big", INT64_MAX, 100))
    api.record(*_events(meter["id"], "low", INT64_MIN, 3))
    api.record(*_events(meter["id"], "tiny", 5, 1))
    total = 100 * INT64_MAX + 3 * INT64_MIN + 5
    assert api.summary(meterId=meter["id"])["value"] == str(total)  # the wire form

    page = open_page()
    board = Dashboard(page)
    board.sign_in(api.key)
    board.open_meter(meter["name"])
    board.show_usage(window="day")
    assert board.text("#period-total") == _grouped(total)  # 922,337,... not 922,337,...,000
    # One day holds every event (an hour ago: yesterday, between 00:00 and 01:00 UTC).
    days = [row[-2] for row in board.rows("#chart-table")]
    assert [day for day in days if day != "0"] == [_grouped(total)]
    assert [row[1:3] for row in board.rows("#top-users-table")] == [
        ["big", _grouped(100 * INT64_MAX)],
        ["tiny", "5"],
        ["low", _grouped(3 * INT64_MIN)],
    ]
    bars = board.chart()["datasets"][0]["data"]
    # the chart draws the nearest double; its last bar is today, which holds nothing when
    # the test runs between 00:00 and 01:00 UTC (CI of session 16 did, at 00:50)
    assert [float(bar) for bar in bars if float(bar) != 0] == [float(total)]

    _, content = board.download("Download top users CSV")
    assert content.splitlines()[1:] == [
        f"1,big,{100 * INT64_MAX},100",
        "2,tiny,5,1",
        f"3,low,{3 * INT64_MIN},3",
    ]
    # The event list's values are plain JSON numbers: read from their digits, not rounded.
    for user, value in (("big", INT64_MAX), ("low", INT64_MIN)):
        board.search_events(user=user)
        assert {(row[1], row[2]) for row in board.rows("#events-table")} == {
            (user, _grouped(value))
        }


def test_exact_parsing_of_the_api_module(open_page):
    page = open_page()
    got = page.evaluate("""async () => {
        const api = await import('/dashboard/static/js/api.js');
        const parsed = api.parseExact('{"a": 9223372036854775807, "b": -9007199254740993, ' +
                                      '"c": 9007199254740991, "d": 1.5, "e": 1e300, "f": "12"}');
        return {a: String(parsed.a), b: String(parsed.b), types: [typeof parsed.a,
                typeof parsed.c, typeof parsed.d, typeof parsed.e, typeof parsed.f],
                exact: String(api.exactValue("-922337203685477580800")),
                plain: api.exactValue(7), none: api.exactValue(null),
                broken: api.parseExact("<html>")};
    }""")
    assert got == {
        "a": "9223372036854775807",
        "b": "-9007199254740993",
        "types": ["bigint", "number", "number", "number", "string"],
        "exact": "-922337203685477580800",
        "plain": 7,
        "none": None,
        "broken": None,
    }
