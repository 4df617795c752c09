"""Totals past int64 stay exact: never a clamped or wrapped sum, over HTTP on the real service.

The fast path (Firestore mode, |value| < 2**48) adds sums with the server's int64
increments, which saturate; the careful path (the legacy emulator, and larger values
everywhere) merges exact Python ints. Either way the stored total is exact, and an
answer carries an integer beyond +-(2**53 - 1) as a string of its decimal digits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from google.cloud import datastore

from app.services import ingest
from tests.support.http import Api

INT64_MAX, INT64_MIN = (1 << 63) - 1, -(1 << 63)
NEAR = (1 << 48) - 1  # the largest value the fast path adds on the server
SAFE = (1 << 53) - 1
# In one 15-minute slot, an hour ago: every event of a test lands in one rollup slot.
SLOT_AT = (datetime.now(UTC) - timedelta(hours=1)).replace(
    minute=0, second=0, microsecond=0
) + timedelta(minutes=7)
STAMP = SLOT_AT.isoformat().replace("+00:00", "Z")
PERIOD = {
    "periodStart": (SLOT_AT - timedelta(hours=2)).isoformat().replace("+00:00", "Z"),
    "periodEnd": (SLOT_AT + timedelta(hours=2)).isoformat().replace("+00:00", "Z"),
}


def wire(value: int):
    """What the answer must carry for an exact integer."""
    return value if -SAFE <= value <= SAFE else str(value)


def _batch(meter, prefix: str, value: int, user: str = "u1", size: int = 100) -> list[dict]:
    return [
        {
            "meterId": meter["id"],
            "userId": user,
            "value": value,
            "timestamp": STAMP,
            "idempotency": f"{prefix}-{i}",
        }
        for i in range(size)
    ]


def _send(api, meter, prefix: str, batches: int, value: int, user: str = "u1") -> None:
    """`batches` batches of 100 events of `value`, four requests at a time."""

    def one(number: int) -> None:
        body = {"events": _batch(meter, f"{prefix}{number}", value, user)}
        answer = api.post("/v1/billing/meter-events", json=body)
        assert answer.status_code == 201, answer.text
        assert {e["status"] for e in answer.json()["events"]} == {"created"}

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(batches)))


def _summary(api, meter, **params) -> dict:
    return api.summary(meterId=meter["id"], **PERIOD, **params)


def _stored_rollups(config, org) -> list:
    """The org's user rollups (each shard an entity; the org-wide ones are another kind)."""
    raw = datastore.Client(project=config.project, namespace=org["namespace"])
    return list(raw.query(kind="meter-rollup").fetch())


@pytest.fixture
def one_shard_api(serve, org) -> Api:
    """The service writing every rollup to one entity, as before shards: so that one
    user's sums pile up in one accumulator and reach int64's bounds."""
    return Api(serve(rollup_shards=1), org["apiKey"])


def _parts(rollup) -> tuple[int, int, int]:
    """(base sum of the slot, S delta, M delta) of the one slot the tests write."""
    slot = str(SLOT_AT.hour * 4 + SLOT_AT.minute // 15)
    base = json.loads(rollup.get("Slots_") or "{}").get(slot, [0, 0])[1]
    return base, rollup.get(f"S{slot}", 0), rollup.get(f"M{slot}", 0)


def _compact(admin) -> None:
    answer = admin.get("/v1/cron/compact")
    assert answer.status_code == 200 and answer.json()["complete"], answer.text


def _rebuild(config, org) -> None:
    env = {
        **os.environ,
        "DATASTORE_EMULATOR_HOST": config.emulator_host,
        "METERING_PROJECT": config.project,
        "METERING_HASHID_SALT": config.hashid_salt,
    }
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "rollups", "rebuild", org["name"]],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr


def _assert_total(api, meter, exact: int, count: int) -> None:
    answer = _summary(api, meter)
    assert (answer["value"], answer["eventCount"]) == (wire(exact), count)
    by_hour = _summary(api, meter, windowSize="hour", groupBy="userId")
    assert [(w["value"], w["eventCount"]) for w in by_hour["windows"]] == [(wire(exact), count)]


@pytest.mark.slow
def test_fast_path_sums_past_int64_are_exact_before_and_after_the_fold(
    one_shard_api, admin, config, org, monkeypatch, emulator_kind
):
    """The issue's case: 335 batches of 100 events of 2**48 - 1, one user, one slot.
    Was 9223372036854775807 (clamped) on Firestore. Here the fold after the saturating
    commit is first held back (a process dying between the two), and a batch of negative
    values comes in between, which would have hidden a clamped single accumulator."""
    api = one_shard_api
    meter = api.create_meter()
    monkeypatch.setattr(ingest, "_fold", lambda keys: None)
    _send(api, meter, "up", 330, NEAR)
    assert 330 * 100 * NEAR > INT64_MAX
    _send(api, meter, "down", 1, -NEAR)
    if emulator_kind == "firestore":  # the accumulators kept their bound: still detectable
        assert _parts(_stored_rollups(config, org)[0])[1:] == (INT64_MAX, -100 * NEAR)
    # a summary meeting such a slot folds its rollup from the raw events, then reads it
    _assert_total(api, meter, 329 * 100 * NEAR, 33_100)
    assert _parts(_stored_rollups(config, org)[0]) == (329 * 100 * NEAR, 0, 0)

    monkeypatch.undo()  # folding again: the next commit still answers the bound, and folds
    _send(api, meter, "more", 6, NEAR)
    exact = 335 * 100 * NEAR
    assert exact == 9_429_411_719_806_942_500
    _assert_total(api, meter, exact, 33_700)
    (rollup,) = _stored_rollups(config, org)
    base, positive, negative = _parts(rollup)
    assert base + positive + negative == exact  # the exact value lives in the JSON base
    assert positive not in (INT64_MAX, INT64_MIN) and negative not in (INT64_MAX, INT64_MIN)

    _compact(admin)
    assert _parts(_stored_rollups(config, org)[0]) == (exact, 0, 0)
    _assert_total(api, meter, exact, 33_700)
    if emulator_kind == "legacy":
        return  # rebuilding 33,700 events there takes minutes; the careful test rebuilds
    _rebuild(config, org)
    assert _parts(_stored_rollups(config, org)[0]) == (exact, 0, 0)
    _assert_total(api, meter, exact, 33_700)


@pytest.mark.slow
def test_fast_path_negative_sums_past_int64_min_are_exact(api, admin, config, org):
    """The mirror image, 33,000 events of -(2**48 - 1): was clamped at INT64_MIN. The negative
    accumulator is folded once past -2**62, so it never reaches the bound."""
    meter = api.create_meter()
    _send(api, meter, "down", 330, -NEAR)
    exact = -330 * 100 * NEAR
    assert exact < INT64_MIN
    _assert_total(api, meter, exact, 33_000)
    _compact(admin)
    assert _parts(_stored_rollups(config, org)[0]) == (exact, 0, 0)
    _assert_total(api, meter, exact, 33_000)


def test_int64_extremes_on_the_careful_path_answer_exact_strings(api, admin, config, org):
    """100 x INT64_MAX answered the number 922337203685477580700, which JavaScript and Go
    cannot hold; every aggregation of the extremes, as strings where doubles lose digits."""
    kinds = ("sum", "avg", "min", "max", "last", "count")
    meters = {kind: api.create_meter(eventName=f"m_{kind}", aggregationType=kind) for kind in kinds}
    for meter in meters.values():
        api.record(*_batch(meter, "top", INT64_MAX, user="top"))
        api.record(*_batch(meter, "bottom", INT64_MIN, user="bottom"))

    def check() -> None:
        by_user = {
            kind: {
                user: _summary(api, meters[kind], userId=user)["value"]
                for user in ("top", "bottom")
            }
            for kind in kinds
        }
        assert by_user["sum"] == {
            "top": "922337203685477580700",
            "bottom": "-922337203685477580800",
        }
        assert _summary(api, meters["sum"])["value"] == -100  # both users: a plain number
        assert by_user["avg"] == {"top": float(INT64_MAX), "bottom": float(INT64_MIN)}
        assert isinstance(by_user["avg"]["top"], float)  # an average stays a JSON number
        for kind in ("min", "max", "last"):
            assert by_user[kind] == {"top": str(INT64_MAX), "bottom": str(INT64_MIN)}, kind
        assert by_user["count"] == {"top": 100, "bottom": 100}
        windows = _summary(api, meters["sum"], windowSize="hour", groupBy="userId")["windows"]
        assert {w["groupBy"]["userId"]: w["value"] for w in windows} == {
            "top": str(100 * INT64_MAX),
            "bottom": str(100 * INT64_MIN),
        }

    check()
    _compact(admin)
    check()
    _rebuild(config, org)
    check()


def test_a_sum_at_the_edge_of_doubles_is_a_number_and_one_past_it_a_string(api):
    meter = api.create_meter()
    api.record(*_batch(meter, "a", SAFE, size=1))
    assert _summary(api, meter)["value"] == SAFE
    api.record(*_batch(meter, "b", 1, size=1))
    assert _summary(api, meter)["value"] == str(SAFE + 1)
    api.record(*_batch(meter, "c", -2 * SAFE - 1, size=1))
    assert _summary(api, meter)["value"] == -SAFE
    api.record(*_batch(meter, "d", -1, size=1))
    assert _summary(api, meter)["value"] == str(-SAFE - 1)


def test_cancelling_next_to_a_saturated_slot_keeps_it_exact(
    one_shard_api, config, org, monkeypatch, emulator_kind
):
    """Cancelling recomputes its own slots and keeps the rest: a kept slot whose deltas sit
    at a bound must come from the raw events too, not be folded as the clamped number."""
    if emulator_kind != "firestore":
        pytest.skip("deltas exist only where the server applies transforms")
    api = one_shard_api
    meter = api.create_meter()
    monkeypatch.setattr(ingest, "_fold", lambda keys: None)
    _send(api, meter, "up", 330, NEAR)
    other = SLOT_AT + timedelta(minutes=15)  # another slot of the same rollup (day)
    api.record(
        {
            "meterId": meter["id"],
            "userId": "u1",
            "value": 5,
            "idempotency": "x",
            "timestamp": other.isoformat().replace("+00:00", "Z"),
        }
    )
    cancelled = api.post(
        "/v1/billing/meter-events/cancel",
        json={"events": [{"meterId": meter["id"], "idempotency": "x"}]},
    )
    assert cancelled.json()["events"][0]["status"] == "cancelled"
    (rollup,) = _stored_rollups(config, org)
    assert _parts(rollup) == (330 * 100 * NEAR, 0, 0)
    _assert_total(api, meter, 330 * 100 * NEAR, 33_000)


def test_the_document_says_how_values_travel(anonymous, api):
    """OpenAPI: a value is a safe integer, a number (avg), a digit string, or null; a real
    answer's string form matches the documented pattern."""
    import re

    document = anonymous.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    for name in ("Summary", "SummaryWindow"):
        value = schemas[name]["properties"]["value"]
        kinds = {option["type"]: option for option in value["anyOf"]}
        assert set(kinds) == {"integer", "number", "string", "null"}
        assert kinds["integer"]["maximum"] == SAFE and kinds["integer"]["minimum"] == -SAFE
        assert "2^53-1" in value["description"] and "string" in value["description"]
    meter = api.create_meter()
    api.record(*_batch(meter, "x", INT64_MIN, size=2))
    answer = _summary(api, meter)["value"]
    assert re.fullmatch(kinds["string"]["pattern"], answer) and answer == str(2 * INT64_MIN)
    page = anonymous.get("/docs").text
    assert "integer or number or string or null" in page
