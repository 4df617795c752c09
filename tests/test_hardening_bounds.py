"""Hostile requests whose answers must stay small, over real HTTP (issue 11, items 1, 5, 6, 11).

- Error amplification: a body of at most the body limit (1 MiB) that breaks many rules
  at once (349,000 empty events, 1 MB of unknown field names, an object of 100,000 keys,
  a long path of long names, ...) is refused with a small answer: lists and objects are
  refused by their length before their entries are looked at, `error.errors` lists at
  most 20 problems plus one entry counting the rest, and a caller's names are echoed
  shortened. Cost is measured by `benchmarks/refusals.py`, not here.
- Cancelling by `eventName` never reaches the meter whose *id* is spelled like that name.
- Validating patterns match whole values: a final newline is refused.
- `timeZone` accepts only the tz database's zone names (not `localtime`, `Factory`, ...).
- The 10,000-window cap counts real windows (Lord Howe has half-hour windows).

These tests share one world per module, like tests/test_malformed.py.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.support.http import Api, error_of
from tests.test_malformed import ANY, expect_error

METERS = "/v1/billing/meters"
EVENTS = "/v1/billing/meter-events"
CANCEL = "/v1/billing/meter-events/cancel"
SUMMARY = "/v1/billing/meter-events/summary"
ORGS = "/v1/admin/orgs"
SMALL = 64 * 1024  # bytes: the most any refusal below may answer
LISTED = 20  # problems listed in error.errors before the count of the rest


@pytest.fixture(autouse=True)
def _reset_emulator():
    """Overrides conftest's per-test reset: this module shares one world."""
    yield


@pytest.fixture(scope="module")
def world(server, config, emulator):
    emulator.reset()
    admin = Api(server.url, config.admin_token)
    answer = admin.post(ORGS, json={"name": f"bounds-{uuid.uuid4().hex[:10]}"})
    assert answer.status_code == 201, answer.text
    api = Api(server.url, answer.json()["apiKey"])
    meter = api.create_meter(eventName="tokens", dimensions=["region"])
    api.record({"meterId": meter["id"], "userId": "u", "value": 5})
    return {"api": api, "admin": admin, "meter": meter, "max_body": config.max_body_bytes}


def totals(world) -> tuple[int, int]:
    answer = world["api"].summary(meterId=world["meter"]["id"])
    return answer["value"], answer["eventCount"]


def small_refusal(answer, *, param=None) -> dict:
    """A 400 in the envelope, at most SMALL bytes, no echoed text longer than a few hundred
    characters, and at most LISTED problems plus one count."""
    assert len(answer.content) < SMALL, (len(answer.content), answer.text[:300])
    error = expect_error(answer, 400)
    if param is not None:
        assert error.get("param") == param, error
    problems = error.get("errors", [])
    assert len(problems) <= LISTED + 1, len(problems)
    for item in [error, *problems]:
        assert len(item["message"]) < 2000 and len(item.get("param", "")) < 1000, item
    return error


def compact(value) -> bytes:
    """JSON without spaces, so that a body fills the limit with entries, not blanks."""
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def sized(prefix: bytes, item: bytes, suffix: bytes, limit: int, sep: bytes = b",") -> bytes:
    """`prefix item,item,... suffix` with as many items as fit in `limit` bytes."""
    count = (limit - len(prefix) - len(suffix) + len(sep)) // (len(item) + len(sep))
    body = prefix + sep.join([item] * count) + suffix
    assert len(body) <= limit
    return body


# -- error amplification --------------------------------------------------------------


def test_349000_empty_events_are_refused_by_the_count_alone(world):
    before = totals(world)
    body = sized(b'{"events":[', b"{}", b"]}", world["max_body"])
    assert body.count(b"{}") > 340_000
    answer = world["api"].post(EVENTS, data=body)
    error = small_refusal(answer, param="events")
    assert "1 to 100 events" in error["message"] and "errors" not in error
    assert totals(world) == before


def test_349000_empty_cancellations_are_refused_by_the_count_alone(world):
    before = totals(world)
    body = sized(b'{"events":[', b"{}", b"]}", world["max_body"])
    error = small_refusal(world["api"].post(CANCEL, data=body), param="events")
    assert "errors" not in error
    assert totals(world) == before


def test_an_events_object_of_many_keys_is_refused_by_its_size(world):
    body = sized(b'{"events":{', b'"k":{}', b"}}", world["max_body"])  # repeated: JSON level
    small_refusal(world["api"].post(EVENTS, data=body))
    keys = b",".join(b'"k%d":{}' % i for i in range(4_000))
    small_refusal(world["api"].post(EVENTS, data=b'{"events":{' + keys + b"}}"), param="events")


def test_an_object_of_more_fields_than_any_request_has_is_refused_while_parsing(world):
    keys = b",".join(b'"k%d":{}' % i for i in range(80_000))
    for path in (EVENTS, CANCEL, METERS, ORGS):
        caller = world["admin"] if path == ORGS else world["api"]
        error = small_refusal(caller.post(path, data=b'{"events":{' + keys + b"}}"))
        assert error["code"] == "invalid_json", error
        assert "an object of 80000 fields" in error["message"], error


def test_100_events_of_many_bad_fields_list_20_problems_and_count_the_rest(world):
    before = totals(world)
    events = [{"meterId": world["meter"]["id"], "userId": 7, "value": "1"} for _ in range(100)]
    error = small_refusal(
        world["api"].post(EVENTS, json={"events": events}), param="events[0].userId"
    )
    problems = error["errors"]
    assert len(problems) == LISTED + 1
    assert problems[1]["param"] == "events[0].value"
    assert problems[-1] == {"message": f"{200 - LISTED} more problems not listed"}
    assert totals(world) == before


def test_stored_state_problems_are_capped_too(world):
    before = totals(world)
    events = [
        {
            "meterId": world["meter"]["id"],
            "userId": "u",
            "value": 1,
            "dimensions": {f"d{i}": "x" for i in range(16)},
        }
        for _ in range(100)
    ]
    error = small_refusal(
        world["api"].post(EVENTS, json={"events": events}), param="events[0].dimensions.d0"
    )
    assert error["errors"][-1] == {"message": f"{1600 - LISTED} more problems not listed"}
    assert totals(world) == before


def test_one_megabyte_of_unknown_field_names_is_one_problem_per_object(world):
    before = totals(world)
    names = b",".join(b'"unknown_field_%06d":0' % i for i in range(40_000))
    for body in (
        b'{"events":[{"userId":"u","value":1,' + names + b"}]}",
        b"{" + names + b',"events":[]}',
    ):
        assert len(body) <= world["max_body"]
        error = small_refusal(world["api"].post(EVENTS, data=body))
        assert "an object of 4000" in error["message"], error  # 40,00x fields
    some = b",".join(b'"unknown_field_%06d":0' % i for i in range(4_000))
    for body in (
        b'{"events":[{"userId":"u","value":1,' + some + b"}]}",
        b"{" + some + b',"events":[]}',
    ):
        error = small_refusal(world["api"].post(EVENTS, data=body))
        assert "4000 unknown fields, such as unknown_field_000000" in error["message"], error
    events = [
        {
            "meterId": world["meter"]["id"],
            "userId": "u",
            "value": 1,
            **{f"extra_{j:04d}_{'x' * 40}": 0 for j in range(150)},
        }
        for _ in range(100)
    ]
    assert len(compact({"events": events})) <= world["max_body"]
    error = small_refusal(
        world["api"].post(EVENTS, data=compact({"events": events})), param="events[0]"
    )
    assert error["errors"][-1] == {"message": f"{100 - LISTED} more problems not listed"}
    assert totals(world) == before


def test_a_one_megabyte_field_name_is_echoed_shortened(world):
    name = "n" * (world["max_body"] - 200)
    event = {"meterId": world["meter"]["id"], "userId": "u", "value": 1, name: 1}
    error = small_refusal(world["api"].post(EVENTS, json={"events": [event]}))
    assert error["param"].startswith("events[0].nnnn") and "characters)" in error["param"]
    error = small_refusal(
        world["api"].post(METERS, json={"name": "x", "eventName": "y", "metadata": {name: 1}})
    )
    assert error["param"].startswith("metadata.nnnn")
    name = name[: world["max_body"] // 3]
    twice = f'{{"events":[{{"{name}":1,"{name}":2}}]}}'
    error = small_refusal(world["api"].post(EVENTS, data=twice))
    assert error["code"] == "invalid_json" and "more than once" in error["message"]


def test_a_long_path_of_long_names_is_echoed_shortened(world):
    # 60 levels of 16 KB names, with a value that cannot be used at the bottom
    name = "p" * 16_000
    body = "".join(f'{{"{name}":' for _ in range(60)) + "NaN" + "}" * 60
    error = small_refusal(world["api"].post(METERS, data=body))
    assert error["code"] == "invalid_json" and error["param"].startswith("pppp")
    # deeply repeated fields: every level names its field twice
    repeated = "".join(f'{{"{name}":1,"{name}":' for _ in range(30)) + "1" + "}" * 30
    error = small_refusal(world["api"].post(METERS, data=repeated))
    assert "more than once" in error["message"]


def test_meter_lists_and_objects_are_refused_by_their_length(world):
    count = world["api"].get(METERS, params={"limit": 500}).json()["count"]
    names = [f"d{i}" for i in range(90_000)]
    small_refusal(
        world["api"].post(
            METERS, data=compact({"name": "x", "eventName": "many_dims", "dimensions": names})
        ),
        param="dimensions",
    )
    bad_names = ["\n"] * 200_000  # each would fail on its own
    small_refusal(
        world["api"].post(
            METERS, data=compact({"name": "x", "eventName": "bad_dims", "dimensions": bad_names})
        ),
        param="dimensions",
    )
    metadata = {"k" * 101 + str(i): 0 for i in range(4_000)}  # each key too long
    small_refusal(
        world["api"].post(
            METERS, data=compact({"name": "x", "eventName": "meta", "metadata": metadata})
        ),
        param="metadata",
    )
    small_refusal(
        world["api"].patch(
            f"{METERS}/{world['meter']['id']}", data=compact({"metadata": metadata})
        ),
        param="metadata",
    )
    dimensions = {f"{'k' * 70}{i}": "v" * 300 for i in range(2_000)}
    event = {"meterId": world["meter"]["id"], "userId": "u", "value": 1, "dimensions": dimensions}
    small_refusal(
        world["api"].post(EVENTS, data=compact({"events": [event]})), param="events[0].dimensions"
    )
    assert world["api"].get(METERS, params={"limit": 500}).json()["count"] == count


def test_admin_bodies_with_many_unknown_fields_are_one_problem(world):
    body = {"name": "x"} | {f"field_{i}": i for i in range(4_000)}
    error = small_refusal(world["admin"].post(ORGS, data=compact(body)))
    assert "4000 unknown fields" in error["message"]


def test_query_strings_with_many_repeated_parameters_are_small_refusals(world):
    meter_id = world["meter"]["id"]
    many_groups = [("meterId", meter_id)] + [("groupBy", f"g{i}") for i in range(3_000)]
    small_refusal(world["api"].get(SUMMARY, params=many_groups), param="groupBy")
    many_unknown = [("meterId", meter_id)] + [(f"p{i}", "1") for i in range(3_000)]
    error = small_refusal(world["api"].get(SUMMARY, params=many_unknown))
    assert "3000 unknown fields" in error["message"]
    error = small_refusal(
        world["api"].get(SUMMARY, params=[("x" * 20_000, "1"), ("x" * 20_000, "2")])
    )
    assert error["param"].endswith("characters)")
    error = small_refusal(
        world["api"].get(SUMMARY, params={"meterId": meter_id, "filter[" + "f" * 20_000: "1"})
    )
    assert error["param"].endswith("characters)")
    many_events = [("meterId", meter_id)] + [(f"q{i}", "1") for i in range(3_000)]
    small_refusal(world["api"].get(EVENTS, params=many_events))
    small_refusal(world["api"].get(METERS, params=many_events))


# -- cancel by eventName ----------------------------------------------------------------


@pytest.fixture
def twins(world):
    """Meter `a`, and meter `b` whose eventName is a's id; each with an event keyed `k`."""
    api = world["api"]
    a = api.create_meter(name="A", eventName=f"a_{uuid.uuid4().hex[:8]}")
    b = api.create_meter(name="B", eventName=a["id"])
    api.record(
        {"meterId": a["id"], "userId": "u", "value": 3, "idempotency": "k"},
        {"meterId": b["id"], "userId": "u", "value": 4, "idempotency": "k"},
    )
    return a, b


def _total(world, meter) -> int:
    return world["api"].summary(meterId=meter["id"])["value"]


@pytest.mark.parametrize("order", ["id first", "name first"])
def test_cancel_by_an_event_name_spelled_like_another_meters_id(world, twins, order):
    a, b = twins
    by_id = {"meterId": a["id"], "idempotency": "k"}
    by_name = {"eventName": a["id"], "idempotency": "k"}  # names meter b
    targets = [by_id, by_name] if order == "id first" else [by_name, by_id]
    answer = world["api"].post(CANCEL, json={"events": targets})
    assert answer.status_code == 200, answer.text
    assert [e["status"] for e in answer.json()["events"]] == ["cancelled", "cancelled"]
    assert _total(world, a) == 0 and _total(world, b) == 0


def test_cancel_by_name_alone_leaves_the_meter_of_that_id_alone(world, twins):
    a, b = twins
    answer = world["api"].post(
        CANCEL, json={"events": [{"eventName": a["id"], "idempotency": "k"}]}
    )
    assert [e["status"] for e in answer.json()["events"]] == ["cancelled"]
    assert _total(world, a) == 3 and _total(world, b) == 0


def test_recording_by_an_event_name_spelled_like_another_meters_id(world, twins):
    a, b = twins
    world["api"].record(
        {"eventName": a["id"], "userId": "u", "value": 10},
        {"meterId": a["id"], "userId": "u", "value": 100},
    )
    assert _total(world, a) == 103 and _total(world, b) == 14


# -- patterns match whole values --------------------------------------------------------


def test_a_final_newline_is_refused_in_every_patterned_field(world):
    api, meter_id = world["api"], world["meter"]["id"]
    before = totals(world)
    now = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    for event in (
        {"meterId": meter_id, "userId": "u", "value": 1, "timestamp": now + "\n"},
        {"eventName": "tokens\n", "userId": "u", "value": 1},
    ):
        answer = api.post(EVENTS, json={"events": [event]})
        field = "timestamp" if "timestamp" in event else "eventName"
        expect_error(answer, 400, param=f"events[0].{field}")
    assert totals(world) == before
    for params, param in (
        ({"periodStart": now + "\n"}, "periodStart"),
        ({"periodEnd": now + "\n"}, "periodEnd"),
    ):
        answer = api.get(SUMMARY, params={"meterId": meter_id, **params})
        expect_error(answer, 400, param=param)
    answer = api.get(SUMMARY, params={"meterId": meter_id, "filter[region]\n": "eu"})
    expect_error(answer, 400, param=ANY, says="filter[NAME]=VALUE")
    assert error_of(answer)["param"] == "filter[region]\n"
    answer = api.post(METERS, json={"name": "n", "eventName": "nl\n"})
    expect_error(answer, 400, param="eventName")


# -- timeZone ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "localtime",
        "posixrules",
        "Factory",
        "posix/UTC",
        "right/UTC",
        "./UTC",
        "Etc/../UTC",
        "UTC\n",
        "zone.tab",
        "iso3166.tab",
        "tzdata.zi",
    ],
)
def test_time_zones_that_are_not_zone_names_are_refused(world, name):
    answer = world["api"].get(
        SUMMARY,
        params={
            "meterId": world["meter"]["id"],
            "periodStart": "2026-01-01",
            "windowSize": "day",
            "timeZone": name,
        },
    )
    expect_error(answer, 400, param="timeZone")


@pytest.mark.parametrize("name", ["UTC", "Etc/UTC", "Asia/Kolkata", "Australia/Lord_Howe"])
def test_zone_names_are_accepted(world, name):
    answer = world["api"].get(
        SUMMARY,
        params={
            "meterId": world["meter"]["id"],
            "periodStart": "2026-01-01",
            "periodEnd": "2026-01-03",
            "windowSize": "day",
            "timeZone": name,
        },
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["windows"]


# -- the window cap counts windows ------------------------------------------------------


def _end_of_window(start: datetime, zone: ZoneInfo, count: int) -> datetime:
    """The end of the `count`-th hour window from `start`, found slot by slot: a window is a
    run of 15-minute slots on one local hour at one UTC offset."""
    slot, keys, moment = timedelta(minutes=15), 0, start
    last = None
    while True:
        local = moment.astimezone(zone)
        key = (local.date(), local.hour, local.utcoffset())
        if key != last:
            keys, last = keys + 1, key
            if keys == count + 1:
                return moment
        moment += slot


def test_the_window_cap_is_exact_across_lord_howe_half_hours(world):
    zone = ZoneInfo("Australia/Lord_Howe")
    start = datetime(2025, 4, 6, tzinfo=zone).astimezone(UTC)  # a fall-back day
    end = _end_of_window(start, zone, 10_000)
    assert end - start < timedelta(hours=10_000)  # more windows than hours
    params = {
        "meterId": world["meter"]["id"],
        "windowSize": "hour",
        "timeZone": "Australia/Lord_Howe",
        "periodStart": start.isoformat().replace("+00:00", "Z"),
    }
    answer = world["api"].get(SUMMARY, params={**params, "periodEnd": end.isoformat()})
    assert answer.status_code == 200, answer.text[:300]
    assert len(answer.json()["windows"]) == 10_000
    over = (end + timedelta(minutes=15)).isoformat()
    answer = world["api"].get(SUMMARY, params={**params, "periodEnd": over})
    error = expect_error(answer, 400, param="windowSize")
    assert "more than 10000 hour windows" in error["message"]
    far = (start + timedelta(days=3650)).isoformat()  # refused at once, without counting
    expect_error(
        world["api"].get(SUMMARY, params={**params, "periodEnd": far}), 400, param="windowSize"
    )
    assert error_of(answer)["code"] == "invalid_request"


def test_the_fast_pre_check_still_accepts_what_only_looks_suspect(world):
    # a valid surrogate pair (an escaped emoji) and a large finite float: both make the
    # pre-check look closer, and both are fine
    body = (
        b'{"name": "Suspect", "eventName": "suspect_ok", "metadata": '
        b'{"smile": "\\ud83d\\ude00", "big": 1e300, "digits": "' + b"9" * 200 + b'"}}'
    )
    answer = world["api"].post(METERS, data=body)
    assert answer.status_code == 201, answer.text
    assert answer.json()["metadata"] == {"smile": "\U0001f600", "big": 1e300, "digits": "9" * 200}
    assert world["api"].delete(f"{METERS}/{answer.json()['id']}").status_code == 200
