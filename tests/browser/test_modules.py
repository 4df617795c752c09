"""The page's own modules, run in the browser: time-zone arithmetic and CSV cells."""

from __future__ import annotations

from datetime import date

import pytest

from tests.browser.dashboard import local_midnight


@pytest.fixture
def modules(open_page):
    page = open_page()
    page.evaluate("""async () => {
        window.time = await import('/dashboard/static/js/time.js');
        window.csv = await import('/dashboard/static/js/csv.js');
    }""")
    return page


ZONE_CHANGES = [
    ("America/New_York", date(2026, 3, 8)),  # spring forward: the day is 23 hours
    ("America/New_York", date(2026, 11, 1)),  # fall back: 25 hours
    ("Europe/Berlin", date(2026, 3, 29)),
    ("Asia/Kolkata", date(2026, 1, 1)),  # +05:30
    ("Asia/Kathmandu", date(2026, 6, 15)),  # +05:45
    ("Australia/Lord_Howe", date(2026, 4, 5)),  # a 30-minute daylight shift
    ("Pacific/Chatham", date(2026, 9, 27)),  # +12:45 / +13:45
    ("UTC", date(2026, 2, 28)),
]


def test_local_midnight_agrees_with_python_across_daylight_changes(modules):
    for zone, day in ZONE_CHANGES:
        for wanted in (day, date.fromordinal(day.toordinal() + 1)):
            shown = modules.evaluate(
                "([d, z]) => time.localMidnight(d, z)", [wanted.isoformat(), zone]
            )
            assert shown == local_midnight(wanted, zone), (zone, wanted)


def test_window_labels(modules):
    label = "([s, w]) => time.windowLabel(s, w)"
    assert modules.evaluate(label, ["2026-11-25T00:00:00+05:30", "day"]) == "25 Nov"
    assert modules.evaluate(label, ["2026-11-01T00:00:00-04:00", "month"]) == "Nov 2026"
    assert modules.evaluate(label, ["2026-11-01T01:00:00-05:00", "hour"]) == "1 Nov 01:00"


CSV_CELLS = [
    ("plain", "plain"),
    (42, "42"),
    (-7, "-7"),
    (2.5, "2.5"),
    (None, ""),
    ("a,b", '"a,b"'),
    ('say "hi"', '"say ""hi"""'),
    ("two\nlines", '"two\nlines"'),
    ("=SUM(A1)", "'=SUM(A1)"),
    ("-1+2", "'-1+2"),
    ("@cmd", "'@cmd"),
    ("+x,y", '"\'+x,y"'),
]


def test_csv_cells_are_quoted_and_formulas_defused(modules):
    for value, cell in CSV_CELLS:
        assert modules.evaluate("v => csv.csvCell(v)", value) == cell, value


def test_a_csv_document_has_crlf_lines(modules):
    text = modules.evaluate("() => csv.toCsv(['a', 'b'], [[1, 'x'], [null, 'y,z']])")
    assert text == 'a,b\r\n1,x\r\n,"y,z"\r\n'


THRESHOLDS = [
    ("100, 10", [10, 100]),
    ("1,000,000 5,000,000", [1_000_000, 5_000_000]),
    ("1,000,000, 10", [10, 1_000_000]),
    ("500,2000", [500, 2000]),
    ("7;7; 3", [3, 7]),
    ("100, 10,", [10, 100]),
    ("", []),
    ("ten", None),
    ("-5", None),
    ("2.5", None),
    ("99999999999999999999", None),  # past what a JavaScript number holds exactly
]


def test_alert_thresholds_and_filters_as_typed(open_page):
    page = open_page()
    page.evaluate("async () => { window.alerts = await import('/dashboard/static/js/alerts.js'); }")
    for typed, parsed in THRESHOLDS:
        assert page.evaluate("t => alerts.parseThresholds(t)", typed) == parsed, typed
    assert page.evaluate("t => alerts.parseFilter(t)", "model=gpt-4, region = eu") == {
        "model": "gpt-4",
        "region": "eu",
    }
    assert page.evaluate("t => alerts.parseFilter(t)", "") == {}
    assert page.evaluate("t => alerts.parseFilter(t)", "model") is None
    assert page.evaluate("s => alerts.scopeLabel(s)", {"userId": "u-1"}) == "User u-1"
