"""Round trip (issue 17): export an org's meters and record the files into another org;
every summary (aggregations, windows, zones, groups) comes out identical.

Twice: the files re-recorded through the public HTTP API in batches (events named by
`eventName`, which the export writes so that a file moves between orgs; cancelled
events recorded, then cancelled, so the second org keeps them for audit too), and the
files as an HTTP export answers them (NDJSON with its trailer, CSV) given to the import.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from tests.support.http import Api

NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
EXPORT = "/v1/billing/meter-events/export"
#: (eventName, aggregationType, uniqueBy) of the meters exported.
METERS = [
    ("tokens", "sum", None),
    ("calls", "count", None),
    ("peak", "max", None),
    ("low", "min", None),
    ("latest", "last", None),
    ("mean", "avg", None),
    ("models", "unique_count", "model"),
]
#: Summary queries compared on every meter: windows in several zones, groups, filters.
QUERIES = [
    {},
    {"windowSize": "hour", "timeZone": "Asia/Kolkata"},
    {"windowSize": "day", "timeZone": "America/New_York", "groupBy": "userId"},
    {"windowSize": "day", "timeZone": "Asia/Kathmandu", "groupBy": "model"},
    {"windowSize": "month", "timeZone": "Pacific/Auckland", "filter[model]": "big"},
    {"userId": "user-1", "windowSize": "day"},
]


def _events(meter_name: str) -> list[dict]:
    """Forty events over three days: four users, two models, distinct timestamps
    (so `last` has one answer), some without an idempotency key or metadata."""
    events = []
    for n in range(40):
        event = {
            "eventName": meter_name,
            "userId": f"user-{n % 4}",
            "value": (n * 37) % 101 - 20,
            "timestamp": (NOW - timedelta(hours=70) + timedelta(minutes=103 * n + 7)).isoformat(),
            "dimensions": {"model": "big" if n % 3 else "small"},
        }
        if n % 5:
            event["idempotency"] = f"{meter_name}-{n}"
        if n % 2:
            event["metadata"] = {"request": f"r-{n}", "attempt": n % 3}
        events.append(event)
    return events


def _export(api: Api, meter_id: str) -> list[dict]:
    answer = api.get(EXPORT, params={"meterId": meter_id, "includeCancelled": "true"})
    assert answer.status_code == 200, answer.text
    lines = [json.loads(line) for line in answer.text.splitlines()]
    assert lines[-1]["export"]["complete"] is True
    return lines[:-1]


def _rerecord(api: Api, lines: list[dict]) -> None:
    """Record exported lines into another org over HTTP, then cancel the cancelled ones."""
    events = []
    for line in lines:
        event = {k: line[k] for k in ("eventName", "userId", "value", "timestamp")}
        event.update({k: line[k] for k in ("idempotency", "dimensions", "metadata") if line[k]})
        events.append(event)
    ids = []
    for start in range(0, len(events), 100):
        ids += [e["id"] for e in api.record(*events[start : start + 100])["events"]]
    cancelled = [
        {"id": i} for i, line in zip(ids, lines, strict=True) if line["status"] != "active"
    ]
    if cancelled:
        answer = api.post("/v1/billing/meter-events/cancel", json={"events": cancelled})
        assert answer.status_code == 200, answer.text
        assert {e["status"] for e in answer.json()["events"]} == {"cancelled"}


def _without_ids(lines: list[dict]) -> list[str]:
    return sorted(json.dumps({**line, "id": None}, sort_keys=True) for line in lines)


def _comparable(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in ("meterId",)}


def test_an_exported_org_recorded_elsewhere_summarizes_identically(api, other_api):
    period = {"periodStart": (NOW - timedelta(days=4)).date().isoformat(),
              "periodEnd": NOW.date().isoformat()}  # fmt: skip
    source_meters, target_meters = {}, {}
    for name, aggregation, unique_by in METERS:
        fields = {"name": name, "eventName": name, "aggregationType": aggregation,
                  "dimensions": ["model"]}  # fmt: skip
        if unique_by:
            fields["uniqueBy"] = unique_by
        source_meters[name] = api.create_meter(**fields)
        target_meters[name] = other_api.create_meter(**fields)
        ids = [e["id"] for e in api.record(*_events(name))["events"]]
        cancel = [{"id": ids[n]} for n in (3, 17, 30)]
        assert api.post("/v1/billing/meter-events/cancel", json={"events": cancel}).ok

    for name, *_ in METERS:
        lines = _export(api, source_meters[name]["id"])
        assert len(lines) == 40 and sum(line["status"] == "cancelled" for line in lines) == 3
        _rerecord(other_api, lines)
        again = _export(other_api, target_meters[name]["id"])
        # the same events, statuses, keys, dimensions and metadata (ids differ per org)
        assert _without_ids(lines) == _without_ids(again), name

        for query in QUERIES:
            params = {**period, **query}
            source = api.summary(meterId=source_meters[name]["id"], **params)
            target = other_api.summary(meterId=target_meters[name]["id"], **params)
            assert _comparable(source) == _comparable(target), (name, query)
            assert source["eventCount"] > 0 or query.get("userId"), (name, query)


IMPORT = "/v1/billing/meter-events/import"


def test_an_export_imported_into_another_org_summarizes_identically(api, other_api):
    """The issue's round trip through its own paths: export (NDJSON as a client saves it,
    trailer included, and CSV), then import into another org; cancelled events are not
    imported, so every summary of the live events comes out identical."""
    period = {"periodStart": (NOW - timedelta(days=4)).date().isoformat(),
              "periodEnd": NOW.date().isoformat()}  # fmt: skip
    for (name, aggregation, unique_by), export_format in zip(
        METERS, ["ndjson", "csv"] * len(METERS), strict=False
    ):
        fields = {"name": name, "eventName": name, "aggregationType": aggregation,
                  "dimensions": ["model"]}  # fmt: skip
        if unique_by:
            fields["uniqueBy"] = unique_by
        source = api.create_meter(**fields)
        target = other_api.create_meter(**fields)
        ids = [e["id"] for e in api.record(*_events(name))["events"]]
        cancel = [{"id": ids[n]} for n in (3, 17, 30)]
        assert api.post("/v1/billing/meter-events/cancel", json={"events": cancel}).ok

        params = {"meterId": source["id"], "format": export_format, "includeCancelled": "true"}
        exported = api.get(EXPORT, params=params)
        assert exported.status_code == 200, exported.text
        media = "text/csv" if export_format == "csv" else "application/x-ndjson"
        imported = other_api.post(IMPORT, data=exported.content, headers={"Content-Type": media})
        assert imported.status_code == 200, imported.text
        assert imported.json()["created"] == 37, (name, imported.json())

        for query in QUERIES:
            answer = {**period, **query}
            mine = api.summary(meterId=source["id"], **answer)
            theirs = other_api.summary(meterId=target["id"], **answer)
            assert _comparable(mine) == _comparable(theirs), (name, export_format, query)
