"""Brute force over a meter's stored events, for the corrections' tests (issue 17): the
event log read whole, live events aggregated in Python, compared with the summaries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.support.http import Api


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def event_log(api: Api, meter_id: str) -> list[dict]:
    """Every stored event of the meter, cancelled ones included (the event log, all pages)."""
    found, cursor = [], None
    while True:
        params = {"meterId": meter_id, "limit": 100}
        if cursor:
            params["cursor"] = cursor
        answer = api.get("/v1/billing/meter-events", params=params)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        found += page["events"]
        cursor = page["nextCursor"]
        if not cursor:
            return found


def aggregate(aggregation: str, events: list[dict]):
    """(value, count) of live events as the summary defines them; events are listed with
    distinct timestamps where `last` matters."""
    if not events:
        return (None if aggregation in ("min", "max", "last", "avg") else 0), 0
    values = [e["value"] for e in events]
    if aggregation == "sum":
        value = sum(values)
    elif aggregation == "count":
        value = len(values)
    elif aggregation == "min":
        value = min(values)
    elif aggregation == "max":
        value = max(values)
    elif aggregation == "avg":
        value = sum(values) / len(values)
    elif aggregation == "last":
        value = max(events, key=lambda e: (parse(e["timestamp"]), parse(e["createdAt"])))["value"]
    else:
        raise AssertionError(aggregation)
    return value, len(events)


def check_summaries(
    api: Api,
    meter: dict,
    start: datetime,
    end: datetime,
    users: list[str],
    dimension: str | None = None,
) -> None:
    """Every summary of the period (all users, each user, grouped by `dimension` by hour)
    equals the brute force over the meter's live stored events."""
    aggregation = meter["aggregationType"]
    live = [
        e
        for e in event_log(api, meter["id"])
        if e["status"] == "active" and start <= parse(e["timestamp"]) < end
    ]
    period = {"meterId": meter["id"], "periodStart": rfc3339(start), "periodEnd": rfc3339(end)}
    for user in [None, *users]:
        mine = [e for e in live if user is None or e["userId"] == user]
        summary = api.summary(**period, **({"userId": user} if user else {}))
        expected = aggregate(aggregation, mine)
        assert (summary["value"], summary["eventCount"]) == expected, (user, summary)
    if dimension is None:
        return
    grouped = api.summary(**period, windowSize="hour", groupBy=dimension)
    windows = {}
    for w in grouped["windows"]:
        if w["eventCount"]:
            windows[(parse(w["windowStart"]), w["groupBy"].get(dimension))] = (
                w["value"],
                w["eventCount"],
            )
    buckets: dict[tuple, list[dict]] = {}
    for e in live:
        hour = parse(e["timestamp"]).replace(minute=0, second=0, microsecond=0)
        hour = max(hour, start)
        buckets.setdefault((hour, e["dimensions"].get(dimension)), []).append(e)
    expected_windows = {key: aggregate(aggregation, events) for key, events in buckets.items()}
    assert windows == expected_windows


def hours_ago(now: datetime, hours: float) -> datetime:
    return now - timedelta(hours=hours)
