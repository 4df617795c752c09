"""Corrections (issue 17): cancelling a range of events in pages, resumably; amending an
event in one commit; the records an org lists. Every summary afterwards is compared
with a brute force over the stored events (`tests/support/corrections.py`)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from app.services import corrections
from app.storage import rpc
from tests.support.corrections import check_summaries, event_log, rfc3339
from tests.support.http import Api, error_of

NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
START, END = NOW - timedelta(hours=30), NOW + timedelta(hours=1)
#: The range cancelled: hours -20 to -6 before NOW.
RANGE_START, RANGE_END = NOW - timedelta(hours=20), NOW - timedelta(hours=6)
USERS = ["u1", "u2", "u3"]
CANCEL = "/v1/billing/meter-events/cancel"


def _events(meter: dict, count: int = 24, offset: int = 0) -> list[dict]:
    """`count` events over 24 hours before NOW, spread over users and models, each at its
    own minute (so `last` has no ties), values varied and some negative for sums."""
    events = []
    for i in range(count):
        moment = NOW - timedelta(hours=24) + timedelta(minutes=60 * i + 7 + offset)
        value = (i * 7) % 11 + 1
        if meter["aggregationType"] == "sum" and i % 5 == 4:
            value = -value
        events.append(
            {
                "meterId": meter["id"],
                "userId": USERS[i % 3],
                "value": value,
                "timestamp": rfc3339(moment),
                "idempotency": f"e{offset}-{i}",
                "dimensions": {"model": "a" if i % 2 else "b"},
            }
        )
    return events


def _in_range(event: dict, model: str | None = None, user: str | None = None) -> bool:
    moment = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
    return (
        RANGE_START <= moment < RANGE_END
        and (model is None or event["dimensions"]["model"] == model)
        and (user is None or event["userId"] == user)
    )


def _range(meter: dict, **more) -> dict:
    return {
        "meterId": meter["id"],
        "periodStart": rfc3339(RANGE_START),
        "periodEnd": rfc3339(RANGE_END),
        **more,
    }


def _cancel_range(api: Api, body: dict) -> dict:
    answer = api.post(CANCEL, json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _until_complete(api: Api, body: dict, most: int = 50) -> tuple[dict, int]:
    """Repeat the range cancel until its record is complete: (the last answer, requests).
    A 503 (a page that kept colliding with concurrent batches: the legacy emulator's
    optimistic transactions) is repeated too, as a client does."""
    for requests in range(1, most + 1):
        answer = api.post(CANCEL, json=body)
        if answer.status_code == 503:
            continue
        assert answer.status_code == 200, answer.text
        if answer.json()["status"] == "complete":
            return answer.json(), requests
    raise AssertionError("the range cancel never completed")


def _meter(api: Api, aggregation: str) -> dict:
    return api.create_meter(
        eventName=f"m_{aggregation}", aggregationType=aggregation, dimensions=["model"]
    )


# -- cancel by range ---------------------------------------------------------------------


@pytest.mark.parametrize("aggregation", ["sum", "last"])
def test_range_cancel_dry_run_then_run_then_rerun(api, aggregation):
    meter = _meter(api, aggregation)
    events = _events(meter)
    api.record(*events)
    wanted = [e for e in events if _in_range(e, model="a")]
    assert 3 <= len(wanted) < len([e for e in events if _in_range(e)])
    body = _range(meter, filter={"model": "a"})

    preview = _cancel_range(api, {**body, "dryRun": True})
    assert (preview["dryRun"], preview["events"], preview["value"], preview["expired"]) == (
        True,
        len(wanted),
        sum(e["value"] for e in wanted),
        0,
    )
    assert all(e["status"] == "active" for e in event_log(api, meter["id"]))  # changed nothing

    done = _cancel_range(api, body)
    assert done["status"] == "complete" and done["type"] == "cancel_range"
    assert (done["cancelled"], done["value"]) == (preview["events"], preview["value"])
    assert done["thisRequest"]["cancelled"] == len(wanted)
    assert done["keyPrefix"] == api.key[:12]
    stored = {e["idempotency"]: e for e in event_log(api, meter["id"])}
    assert {k for k, e in stored.items() if e["status"] == "cancelled"} == {
        e["idempotency"] for e in wanted
    }  # exactly those, every one kept for audit
    check_summaries(api, meter, START, END, USERS, "model")

    again = _cancel_range(api, body)  # a rerun: a new pass that finds nothing left
    assert again["thisRequest"]["cancelled"] == 0
    assert (again["cancelled"], again["value"], again["passes"]) == (
        len(wanted),
        done["value"],
        2,
    )
    assert again["id"] == done["id"]
    assert _cancel_range(api, {**body, "dryRun": True})["events"] == 0
    check_summaries(api, meter, START, END, USERS, "model")


def test_range_cancel_of_one_user_in_pages_one_page_per_request(serve, admin):
    """Pages of 2 events and no time budget: every request runs one page and answers
    `running`; repeating it continues where the last commit left, to exactly the range."""
    url = serve(correction_page_events=2, correction_budget_seconds=0)
    org = Api(url, admin.key).post("/v1/admin/orgs", json={"name": _name("pages")}).json()
    api = Api(url, org["apiKey"])
    meter = _meter(api, "sum")
    events = _events(meter)
    api.record(*events)
    wanted = [e for e in events if _in_range(e, user="u2")]
    body = _range(meter, userId="u2")

    first = _cancel_range(api, body)
    assert first["status"] == "running" and first["thisRequest"]["scanned"] == 2
    progress = api.get(f"/v1/billing/meter-events/corrections/{first['id']}").json()
    assert progress["status"] == "running" and progress["scanned"] == 2
    done, requests = _until_complete(api, body)
    assert requests >= 2
    assert (done["cancelled"], done["value"]) == (len(wanted), sum(e["value"] for e in wanted))
    check_summaries(api, meter, START, END, USERS, "model")


def _name(label: str) -> str:
    from tests.support.names import unique_org_name

    return unique_org_name(label)


@pytest.mark.parametrize("when", ["before_commit", "after_commit"])
def test_a_range_cancel_interrupted_midway_resumes_exactly(serve, admin, monkeypatch, when):
    """A failure injected in the second page's commit, before it is sent (nothing written)
    or after it landed (the answer lost, as when the process dies there): the request
    fails; the same request again finishes the range, cancelling nothing twice."""
    url = serve(correction_page_events=3)
    org = Api(url, admin.key).post("/v1/admin/orgs", json={"name": _name("crash")}).json()
    api = Api(url, org["apiKey"])
    meters = [_meter(api, aggregation) for aggregation in ("sum", "min", "last")]
    for meter in meters:
        api.record(*_events(meter))
    real_commit, commits = rpc.commit, []

    def failing_commit(mutations, transaction=None):
        commits.append(len(mutations))
        if len(commits) == 3 and when == "before_commit":
            raise RuntimeError("injected: the process died before the commit")
        answer = real_commit(mutations, transaction)
        if len(commits) == 3:  # the first opened the record, the second was page one
            raise RuntimeError("injected: the process died after the commit")
        return answer

    for meter in meters:
        body = _range(meter)
        commits.clear()
        monkeypatch.setattr(corrections.rpc, "commit", failing_commit)
        broken = api.post(CANCEL, json=body)
        assert broken.status_code == 500
        monkeypatch.setattr(corrections.rpc, "commit", real_commit)
        record = api.get("/v1/billing/meter-events/corrections").json()["corrections"][0]
        assert record["status"] == "running"
        assert record["scanned"] == (3 if when == "before_commit" else 6)
        done, _ = _until_complete(api, body)
        stored = event_log(api, meter["id"])
        cancelled = [e for e in stored if e["status"] == "cancelled"]
        assert sorted(e["idempotency"] for e in cancelled) == sorted(
            e["idempotency"] for e in _events(meter) if _in_range(e)
        )
        assert (done["cancelled"], done["value"]) == (
            len(cancelled),
            sum(e["value"] for e in cancelled),
        )
        check_summaries(api, meter, START, END, USERS, "model")


def test_recording_into_the_range_while_it_is_cancelled(serve, admin):
    """Batches recorded into the range while a range cancel runs page by page: every event
    there before it began is cancelled, each one recorded meanwhile is either cancelled
    or counted (never half: the summaries equal the brute force), and the record's
    numbers are exactly the cancelled events'."""
    url = serve(correction_page_events=4, correction_budget_seconds=0)
    org = Api(url, admin.key).post("/v1/admin/orgs", json={"name": _name("race")}).json()
    api = Api(url, org["apiKey"])
    meter = _meter(api, "sum")
    before = _events(meter)
    api.record(*before)
    stop, failures = threading.Event(), []

    def record_meanwhile():
        writer = Api(url, org["apiKey"])
        batch = 0
        while not stop.is_set() and batch < 12:
            answer = writer.post(
                "/v1/billing/meter-events",
                json={"events": _events(meter, count=18, offset=batch + 1)[6:18:3]},
            )
            if answer.status_code != 201:
                failures.append(answer.text)
            batch += 1

    writer = threading.Thread(target=record_meanwhile)
    writer.start()
    try:
        done, _ = _until_complete(api, _range(meter))
    finally:
        stop.set()
        writer.join()
    assert not failures
    stored = event_log(api, meter["id"])
    cancelled = [e for e in stored if e["status"] == "cancelled"]
    assert {e["idempotency"] for e in before if _in_range(e)} <= {
        e["idempotency"] for e in cancelled
    }
    assert (done["cancelled"], done["value"]) == (
        len(cancelled),
        sum(e["value"] for e in cancelled),
    )
    check_summaries(api, meter, START, END, USERS, "model")


@pytest.mark.parametrize(
    "body, status, param",
    [
        ({"meterId": "x", "periodStart": "2026-01-01"}, 400, "periodEnd"),
        ({"periodStart": "2026-01-01", "periodEnd": "2026-01-02"}, 400, "meterId"),
        ({}, 400, "events"),
        (
            {"meterId": "x", "periodStart": "2026-01-02", "periodEnd": "2026-01-01"},
            400,
            "periodEnd",
        ),
        ({"events": [{"id": "x"}], "meterId": "x"}, 400, "meterId"),
        ({"meterId": "x", "periodStart": "2026-01-01", "periodEnd": "2026-01-02"}, 404, "meterId"),
        ("filter", 400, "filter.region"),
        ("filter_values", 400, "filter.model"),
    ],
)
def test_bad_range_cancels_are_refused_and_change_nothing(api, body, status, param):
    meter = _meter(api, "sum")
    api.record(*_events(meter, count=12))
    if body == "filter":
        body = _range(meter, filter={"region": "eu"})
    elif body == "filter_values":
        body = _range(meter, filter={"model": []})
    answer = api.post(CANCEL, json=body)
    assert answer.status_code == status, answer.text
    assert error_of(answer)["param"] == param
    assert all(e["status"] == "active" for e in event_log(api, meter["id"]))
    assert api.get("/v1/billing/meter-events/corrections").json()["corrections"] == []


# -- amend -------------------------------------------------------------------------------


def _amend(api: Api, event_id: str, expect: int = 200, **changes) -> dict:
    answer = api.post(f"/v1/billing/meter-events/{event_id}/amend", json=changes)
    assert answer.status_code == expect, answer.text
    return answer.json()


@pytest.mark.parametrize("aggregation", ["max", "last"])
def test_amend_replaces_an_event_linked_both_ways(api, aggregation):
    meter = _meter(api, aggregation)
    events = _events(meter, count=12)
    ids = [e["id"] for e in api.record(*events)["events"]]
    moved = rfc3339(NOW - timedelta(hours=2, minutes=1))

    answer = _amend(api, ids[3], value=50, dimensions={"model": "c"}, timestamp=moved)
    original, replacement = answer["original"], answer["replacement"]
    assert answer["status"] == "created"
    assert (original["id"], original["status"], original["amendedBy"]) == (
        ids[3],
        "cancelled",
        replacement["id"],
    )
    assert (replacement["amends"], replacement["status"], replacement["value"]) == (
        ids[3],
        "active",
        50,
    )
    assert (replacement["userId"], replacement["dimensions"], replacement["timestamp"]) == (
        events[3]["userId"],
        {"model": "c"},
        moved,
    )
    logged = {e["id"]: e for e in event_log(api, meter["id"])}
    assert logged[ids[3]]["amendedBy"] == replacement["id"] and logged[ids[3]]["amends"] is None
    assert logged[replacement["id"]]["amends"] == ids[3]
    assert logged[ids[0]]["amends"] is None and logged[ids[0]]["amendedBy"] is None
    by_key = api.get(
        "/v1/billing/meter-events",
        params={"meterId": meter["id"], "idempotency": replacement["idempotency"]},
    ).json()["events"]
    assert [e["id"] for e in by_key] == [replacement["id"]]
    check_summaries(api, meter, START, END, USERS, "model")

    retry = _amend(api, ids[3], value=50, dimensions={"model": "c"}, timestamp=moved)
    assert retry["status"] == "duplicate"
    assert retry["replacement"]["id"] == replacement["id"]
    check_summaries(api, meter, START, END, USERS, "model")

    chained = _amend(api, replacement["id"], value=51)  # the replacement can be amended
    assert chained["replacement"]["amends"] == replacement["id"]
    check_summaries(api, meter, START, END, USERS, "model")


def test_amend_refusals_change_nothing(api):
    meter = _meter(api, "sum")
    ids = [e["id"] for e in api.record(*_events(meter, count=6))["events"]]
    replacement = _amend(api, ids[0], value=99)["replacement"]

    refused = [
        (ids[0], {"value": 98}, 409, "already_amended", "id"),
        (ids[1], {}, 400, "invalid_request", "value"),
        (ids[1], {"value": _events(meter, count=6)[1]["value"]}, 400, "nothing_to_amend", "value"),
        (ids[1], {"dimensions": {"region": "eu"}}, 400, "invalid_request", "dimensions.region"),
        (
            ids[1],
            {"timestamp": rfc3339(NOW - timedelta(days=40))},
            400,
            "invalid_request",
            "timestamp",
        ),
        ("nonsense", {"value": 1}, 404, "not_found", "id"),
    ]
    api.post(CANCEL, json={"events": [{"id": ids[2]}]})
    refused.append((ids[2], {"value": 5}, 409, "event_cancelled", "id"))
    before = event_log(api, meter["id"])
    for event_id, changes, status, code, param in refused:
        answer = api.post(f"/v1/billing/meter-events/{event_id}/amend", json=changes)
        assert answer.status_code == status, (changes, answer.text)
        error = error_of(answer)
        assert (error["code"], error["param"]) == (code, param), changes
        if code == "already_amended":
            assert replacement["id"] in error["message"]
    assert event_log(api, meter["id"]) == before


def test_an_amend_is_one_commit_never_both_nor_neither(api, monkeypatch):
    """A failure of the amend's commit leaves the original counted and no replacement;
    and summaries read while amendments commit always count each event exactly once."""
    meter = _meter(api, "sum")
    events = _events(meter, count=6)
    ids = [e["id"] for e in api.record(*events)["events"]]
    total = sum(e["value"] for e in events)

    def refused_commit(mutations, transaction=None):
        raise RuntimeError("injected: the commit failed")

    from app.services import amend as amend_service

    monkeypatch.setattr(amend_service.rpc, "commit", refused_commit)
    answer = api.post(f"/v1/billing/meter-events/{ids[0]}/amend", json={"value": 1234})
    assert answer.status_code == 500, answer.text
    monkeypatch.undo()
    assert [e["status"] for e in event_log(api, meter["id"])] == ["active"] * 6
    assert api.summary(meterId=meter["id"], periodStart=rfc3339(START))["value"] == total

    seen, stop = [], threading.Event()

    def read_meanwhile():
        reader = Api(api.base_url, api.key)
        while not stop.is_set():
            answer = reader.get(
                "/v1/billing/meter-events/summary",
                params={"meterId": meter["id"], "periodStart": rfc3339(START)},
            )
            if answer.status_code == 503:  # the legacy emulator aborts reads under writes
                continue
            assert answer.status_code == 200, answer.text
            seen.append((answer.json()["value"], answer.json()["eventCount"]))

    reader = threading.Thread(target=read_meanwhile)
    reader.start()
    try:
        for event_id, event in zip(ids, events):
            _amend(api, event_id, value=event["value"] + 1000)
    finally:
        stop.set()
        reader.join()
    assert seen and all(count == 6 for _, count in seen)  # never both, never neither
    assert all((value - total) % 1000 == 0 for value, _ in seen)
    assert api.summary(meterId=meter["id"], periodStart=rfc3339(START))["value"] == total + 6000
    check_summaries(api, meter, START, END, USERS, "model")


# -- the records ---------------------------------------------------------------------------


def test_corrections_are_listed_newest_first(api, other_api):
    meter = _meter(api, "sum")
    ids = [e["id"] for e in api.record(*_events(meter, count=12))["events"]]
    ranged = _cancel_range(api, _range(meter, filter={"model": ["a", "b"]}))
    amended = _amend(api, ids[0], value=42)

    page = api.get("/v1/billing/meter-events/corrections", params={"limit": 1}).json()
    assert [c["id"] for c in page["corrections"]] == [amended["correctionId"]]
    assert page["nextCursor"]
    rest = api.get(
        "/v1/billing/meter-events/corrections", params={"limit": 1, "cursor": page["nextCursor"]}
    ).json()
    assert [c["id"] for c in rest["corrections"]] == [ranged["id"]] and rest["nextCursor"] is None
    record = api.get(f"/v1/billing/meter-events/corrections/{amended['correctionId']}").json()
    assert (record["type"], record["eventId"], record["replacementId"], record["cancelled"]) == (
        "amend",
        ids[0],
        amended["replacement"]["id"],
        1,
    )
    assert record["keyPrefix"] == api.key[:12] and record["status"] == "complete"
    assert ranged["filter"] == {"model": ["a", "b"]}
    assert other_api.get(f"/v1/billing/meter-events/corrections/{ranged['id']}").status_code == 404
    assert other_api.get("/v1/billing/meter-events/corrections").json()["corrections"] == []


# -- alerts ---------------------------------------------------------------------------------


def test_range_cancels_and_amends_feed_the_alerts(api, app, ndb_client, org):
    """A range cancel takes a user back below a triggered threshold (resolved), and an
    amendment takes them past it again (triggered): both commit their alert feed."""
    from tests.support.alerts import create_rule, crossings, run_evaluator

    meter = api.create_meter()
    rule = create_rule(api, meter, thresholds=[10], notifyOnResolve=True)
    moment = datetime.now(UTC) - timedelta(minutes=10)
    api.record(
        *[
            {"meterId": meter["id"], "userId": "u", "value": 6, "timestamp": rfc3339(moment)}
            for _ in range(2)
        ]
    )
    run_evaluator(app, ndb_client, org)
    done, _ = _until_complete(
        api,
        {
            "meterId": meter["id"],
            "periodStart": rfc3339(moment - timedelta(minutes=1)),
            "periodEnd": rfc3339(moment + timedelta(minutes=1)),
        },
    )
    assert done["cancelled"] == 2
    run_evaluator(app, ndb_client, org)
    [small] = api.record({"meterId": meter["id"], "userId": "u", "value": 3})["events"]
    _amend(api, small["id"], value=15)
    run_evaluator(app, ndb_client, org)
    assert crossings(api, rule) == [
        ("alert.triggered", "u", 10),
        ("alert.resolved", "u", 10),
        ("alert.triggered", "u", 10),
    ]


# -- session 8: dry runs from the rollups, partial dry runs that resume -----------------


def _dry_run_until_complete(api: Api, body: dict, most: int = 200) -> tuple[dict, int]:
    """A dry run followed through its cursors: (the last answer, requests)."""
    request = {**body, "dryRun": True}
    for requests in range(1, most + 1):
        answer = _cancel_range(api, request)
        if answer["complete"]:
            assert answer["cursor"] is None
            return answer, requests
        request = {**body, "dryRun": True, "cursor": answer["cursor"]}
    raise AssertionError("the dry run never completed")


@pytest.mark.parametrize("user", [None, "u2"])
def test_a_dry_run_counts_from_the_rollups_what_the_run_then_cancels(api, user):
    """A sum meter, a filter, edges off the 15-minute slots (the start exactly on an
    event, the end a minute after one), a matching event already cancelled: the dry run
    reads only the edges' raw events (never the range's events one by one) and its
    figures are exactly what the real run cancels."""
    meter = _meter(api, "sum")
    events = _events(meter) + _events(meter, offset=3)
    ids = [e["id"] for e in api.record(*events)["events"]]
    start, end = RANGE_START + timedelta(minutes=7), RANGE_END + timedelta(minutes=8)
    body = {
        **_range(meter, filter={"model": ["b"]}, **({"userId": user} if user else {})),
        "periodStart": rfc3339(start),
        "periodEnd": rfc3339(end),
    }

    def wanted(event: dict) -> bool:
        moment = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
        return (
            start <= moment < end
            and event["dimensions"]["model"] == "b"
            and user in (None, event["userId"])
        )

    matching = [(i, e) for i, e in zip(ids, events, strict=True) if wanted(e)]
    edges = {rfc3339(start), rfc3339(end - timedelta(minutes=1))}  # an event at each
    assert edges <= {e["timestamp"] for e in events if wanted({**e, "userId": user or ""})}
    gone_id = matching[1][0]
    assert api.post(CANCEL, json={"events": [{"id": gone_id}]}).status_code == 200
    live = [e for i, e in matching if i != gone_id]

    preview = _cancel_range(api, {**body, "dryRun": True})
    assert preview["source"] == "rollups" and preview["complete"] is True
    assert (preview["events"], preview["value"]) == (len(live), sum(e["value"] for e in live))
    in_range = [e for e in events if wanted(e) or _in_range(e)]
    assert preview["scanned"] < len(in_range) / 2  # the edges' events only

    done, _requests = _until_complete(api, body)
    assert (done["cancelled"], done["value"]) == (preview["events"], preview["value"])
    check_summaries(api, meter, START, END, USERS, "model")
    assert _cancel_range(api, {**body, "dryRun": True})["events"] == 0


@pytest.mark.parametrize("aggregation", ["max", "count"])
def test_a_dry_run_read_event_by_event_answers_partially_and_resumes(
    serve, admin, monkeypatch, aggregation
):
    """Meters whose rollups keep no sums are read event by event: with query batches of 2
    and no time budget, each answer is partial with a cursor, and following the cursors
    gives exactly what the run then cancels (a cancelled event excluded)."""
    monkeypatch.setattr(corrections, "_DRY_RUN_BATCH", 2)
    url = serve(correction_budget_seconds=0)
    org = Api(url, admin.key).post("/v1/admin/orgs", json={"name": _name("dry")}).json()
    api = Api(url, org["apiKey"])
    meter = _meter(api, aggregation)
    events = _events(meter)
    ids = [e["id"] for e in api.record(*events)["events"]]
    matching = [(i, e) for i, e in zip(ids, events, strict=True) if _in_range(e, model="b")]
    assert api.post(CANCEL, json={"events": [{"id": matching[0][0]}]}).status_code == 200
    live = [e for _i, e in matching[1:]]
    body = _range(meter, filter={"model": ["b"]})

    first = _cancel_range(api, {**body, "dryRun": True})
    assert (first["complete"], first["source"]) == (False, "events") and first["cursor"]
    preview, requests = _dry_run_until_complete(api, body)
    assert requests >= 3
    assert (preview["events"], preview["value"]) == (len(live), sum(e["value"] for e in live))
    done, _requests = _until_complete(api, body)
    assert (done["cancelled"], done["value"]) == (preview["events"], preview["value"])


def test_a_dry_run_cursor_is_checked(api, other_api):
    meter = _meter(api, "max")
    api.record(*_events(meter))
    body = {**_range(meter), "dryRun": True}
    for cursor in ("nonsense", "A" * 40):
        answer = api.post(CANCEL, json={**body, "cursor": cursor})
        assert answer.status_code == 400 and error_of(answer)["param"] == "cursor", answer.text
    answer = api.post(CANCEL, json={**_range(meter), "cursor": "x"})  # not a dry run
    assert answer.status_code == 400 and error_of(answer)["param"] == "cursor", answer.text


def test_a_range_cancel_plans_several_pages_from_one_read(serve, admin, monkeypatch):
    """Pages of 2 events in one request: the range's events are read by one query and
    every page is planned from that read (before: one query per page, 7 here), each
    page's shards are listed a day at a time (before: one query per series and day), and
    the outcome is exactly the range."""
    url = serve(correction_page_events=2, correction_budget_seconds=600)
    org = Api(url, admin.key).post("/v1/admin/orgs", json={"name": _name("ahead")}).json()
    api = Api(url, org["apiKey"])
    meter = _meter(api, "sum")
    events = _events(meter)
    api.record(*events)
    wanted = [e for e in events if _in_range(e)]
    reads = []
    real = corrections.queries.events_page
    monkeypatch.setattr(
        corrections.queries,
        "events_page",
        lambda *args: reads.append(args) or real(*args),
    )
    per_group, per_day = [], []
    real_group, real_day = corrections.cancel.group_keys_of, corrections.queries.rollup_keys_of_day
    monkeypatch.setattr(
        corrections.cancel, "group_keys_of", lambda *a: per_group.append(a) or real_group(*a)
    )
    monkeypatch.setattr(
        corrections.queries, "rollup_keys_of_day", lambda *a: per_day.append(a) or real_day(*a)
    )
    done, requests = _until_complete(api, _range(meter))
    assert requests == 1 and done["cancelled"] == len(wanted) >= 8  # 4 pages at least
    # Shards listed once per (page, day, kind), never one query per (series, day) group.
    assert per_group == [] and 0 < len(per_day) <= 2 * 2 * len(reads) * 7, per_day
    # One read of the range (the legacy emulator needs one more to find its end), where
    # every page read its own before.
    assert len(reads) <= 2, len(reads)
    assert done["value"] == sum(e["value"] for e in wanted)
    check_summaries(api, meter, START, END, USERS, "model")
