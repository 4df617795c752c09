"""Page cursors are opaque: they reveal neither the project nor the org, any change to one
is refused, and one org's (or one list's) cursor is refused everywhere else."""

from __future__ import annotations

import base64
import binascii

import pytest

from tests.support.http import error_of

METERS = "/v1/billing/meters"
EVENTS = "/v1/billing/meter-events"


def _decodings(text: str) -> set[bytes]:
    """The cursor's bytes under every base64 reading (both alphabets, every alignment,
    and once more inside), plus the text itself: wherever a name could hide."""
    found = {text.encode()}
    for _layer in range(2):
        for blob in list(found):
            for start in range(4):
                part = blob[start:]
                for altchars in (None, b"-_"):
                    try:
                        found.add(
                            base64.b64decode(part + b"=" * (-len(part) % 4), altchars=altchars)
                        )
                    except (binascii.Error, ValueError):
                        pass
    return found


def _meter_cursor(api) -> str:
    for i in range(3):
        api.create_meter(eventName=f"page_{i}")
    cursor = api.get(METERS, params={"limit": 1}).json()["nextCursor"]
    assert cursor
    return cursor


def _event_cursor(api, meter_id: str, user_id: str | None = None) -> str:
    api.record(
        *[
            {"meterId": meter_id, "userId": "u1", "value": 1, "idempotency": f"k{i}"}
            for i in range(3)
        ]
    )
    params = {"meterId": meter_id, "limit": 1, **({"userId": user_id} if user_id else {})}
    cursor = api.get(EVENTS, params=params).json()["nextCursor"]
    assert cursor
    return cursor


def test_a_cursor_reveals_neither_the_project_nor_the_org(api, org, config):
    meter_cursor = _meter_cursor(api)
    meter = api.get(METERS).json()["meters"][0]
    event_cursor = _event_cursor(api, meter["id"])
    secrets = {config.project, org["name"], org["namespace"]}
    for cursor in (meter_cursor, event_cursor):
        for blob in _decodings(cursor):
            for secret in secrets:
                assert secret.encode() not in blob, (secret, cursor)


def test_cursors_still_page_through_everything(api):
    for i in range(5):
        api.create_meter(eventName=f"all_{i}")
    seen, cursor = [], None
    while True:
        page = api.get(METERS, params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        seen += [m["eventName"] for m in page.json()["meters"]]
        cursor = page.json()["nextCursor"]
        if cursor is None:
            break
    assert sorted(seen) == [f"all_{i}" for i in range(5)]


def _tampered(cursor: str) -> list[str]:
    middle = len(cursor) // 2
    flipped = "A" if cursor[middle] != "A" else "B"
    variants = {
        cursor[:middle] + flipped + cursor[middle + 1 :],
        cursor[:-1] + ("A" if cursor[-1] != "A" else "B"),
        cursor[:-4],
        cursor + "AAAA",
        cursor[4:],
        cursor + "=",
        cursor.translate(str.maketrans("-_", "+/")),
    }
    return sorted(variants - {cursor})


def _refused(answer) -> None:
    assert answer.status_code == 400, answer.text
    error = error_of(answer)
    assert (error["code"], error["param"]) == ("invalid_request", "cursor")


def test_a_changed_cursor_is_refused_in_the_envelope(api):
    meter_cursor = _meter_cursor(api)
    for changed in _tampered(meter_cursor):
        _refused(api.get(METERS, params={"cursor": changed}))
    meter = api.get(METERS).json()["meters"][0]
    event_cursor = _event_cursor(api, meter["id"])
    for changed in _tampered(event_cursor):
        _refused(api.get(EVENTS, params={"meterId": meter["id"], "cursor": changed}))


def test_another_orgs_cursor_is_refused_on_every_emulator(api, other_api):
    theirs = _meter_cursor(other_api)
    _refused(api.get(METERS, params={"cursor": theirs}))
    assert other_api.get(METERS, params={"cursor": theirs}).status_code == 200


@pytest.mark.parametrize("where", ["another meter", "another user filter", "the meter list"])
def test_a_cursor_is_refused_by_another_list(api, where):
    first = api.create_meter(eventName="first")
    second = api.create_meter(eventName="second")
    cursor = _event_cursor(api, first["id"])
    if where == "another meter":
        answer = api.get(EVENTS, params={"meterId": second["id"], "cursor": cursor})
    elif where == "another user filter":
        answer = api.get(EVENTS, params={"meterId": first["id"], "userId": "u1", "cursor": cursor})
    else:
        answer = api.get(METERS, params={"cursor": cursor})
    _refused(answer)
    assert api.get(EVENTS, params={"meterId": first["id"], "cursor": cursor}).status_code == 200
