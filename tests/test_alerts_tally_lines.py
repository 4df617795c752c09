"""A bucket's blob in lines (session 9): one JSON record per line, found by its subject's
encoded prefix, so that a chunk decodes and re-encodes only the records it touches.
Session 8's blobs (one JSON list) are still read, and rewritten in lines."""

from __future__ import annotations

import json

import pytest

from app.models import AlertTallyBucket, root_key
from app.services.alerts import tallies
from tests.support.alerts import create_rule, crossings, minutes_ago, run_evaluator, triggers

#: Subjects an encoded prefix could confuse: one a prefix of another, quotes, backslashes,
#: newlines, commas, brackets, non-ASCII, and the org's subject (None).
AWKWARD = [
    "a",
    "a,",
    'a"',
    'a",',
    "a\\",
    'a\\",',
    "ab",
    "a\n[",
    '\n["a",',
    "é",
    "\\u00e9",
    "",
    None,
]


def _record(subject, value, states=None):
    return [subject, value, None, None, states or {}]


def _bucket(blob: bytes, full: bool = False) -> tallies.Bucket:
    return tallies.Bucket("b", tallies._lines_of(blob), full, True)


def _list_blob(records: list) -> bytes:
    """A blob of session 8's shape: every record in one JSON list."""
    return json.dumps(records, separators=(",", ":")).encode()


def test_each_subject_finds_its_own_record_however_its_name_is_spelled():
    records = [_record(subject, n) for n, subject in enumerate(AWKWARD)]
    for blob in (_list_blob(records), b"".join(tallies._line(r) for r in records)):
        bucket = _bucket(blob)
        for n, subject in enumerate(AWKWARD):
            assert bucket.record(subject) == _record(subject, n)
        assert bucket.record("b") is None and bucket.record("a\\n[") is None
        assert tallies.records_of(blob) == {r[0]: r for r in records}


def test_writing_some_records_copies_the_others_as_bytes():
    """Untouched lines are not decoded and re-encoded: one stored with other (valid)
    spacing after its subject comes out byte for byte. Touched ones are replaced, new
    ones appended."""
    odd = b'\n["kept", 7 , null , null , { "r" : { "5" : [ true , 0 ] } } ]'
    blob = tallies._line(_record("a", 1)) + odd + tallies._line(_record("a\\", 2))
    bucket = _bucket(blob)
    assert bucket.record("kept") == _record("kept", 7, {"r": {"5": [True, 0]}})
    changed = {
        "a\\": tallies._line(_record("a\\", 20)),
        "a": tallies._line(_record("a", 10)),
        None: tallies._line(_record(None, 5)),
    }
    packed, full, leaving = tallies._packed(bucket, changed)
    assert (full, leaving) == (False, [])
    assert odd in packed
    assert packed == (
        tallies._line(_record("a", 10))
        + odd
        + tallies._line(_record("a\\", 20))
        + tallies._line(_record(None, 5))
    )


def test_a_bucket_of_session_8s_shape_is_rewritten_in_lines():
    records = [_record(subject, n) for n, subject in enumerate(["x", "y", "z"])]
    bucket = _bucket(_list_blob(records))
    packed, _full, _leaving = tallies._packed(bucket, {"y": tallies._line(_record("y", 9))})
    assert packed.startswith(b"\n[") and packed.count(b"\n") == 3
    assert tallies.records_of(packed) == {
        "x": _record("x", 0),
        "y": _record("y", 9),
        "z": _record("z", 2),
    }


def test_a_bucket_past_its_cap_sends_new_subjects_then_the_longest_away(monkeypatch):
    short = [_record(f"s{n}", n) for n in range(3)]
    long = _record("long", 1, {"rule": {"5": [True, 0], "10": [True, 3]}})
    blob = b"".join(tallies._line(r) for r in [*short, long])
    monkeypatch.setattr(tallies, "MAX_BUCKET_BYTES", len(blob))
    bucket = _bucket(blob)
    # a touched record that stays the same size, and two new subjects: both new ones leave
    changed = {
        "s1": tallies._line(_record("s1", 7)),
        "new1": tallies._line(_record("new1", 1)),
        "new2": tallies._line(_record("new2", 2)),
    }
    packed, full, leaving = tallies._packed(bucket, changed)
    assert full and len(packed) <= tallies.MAX_BUCKET_BYTES
    assert leaving == [("new2", _record("new2", 2)), ("new1", _record("new1", 1))]
    assert tallies.records_of(packed)["s1"] == _record("s1", 7)
    # a touched record that grows past the cap: the longest record leaves, not the grown one
    bucket = _bucket(packed, full=True)
    grown = {"s0": tallies._line(_record("s0", 10**6))}
    packed, full, leaving = tallies._packed(bucket, grown)
    assert full and [subject for subject, _record in leaving] == ["long"]
    assert leaving[0][1] == long
    assert set(tallies.records_of(packed)) == {"s0", "s1", "s2"}
    assert len(packed) <= tallies.MAX_BUCKET_BYTES


@pytest.fixture(autouse=True)
def fresh_caches():
    tallies.bucket_name.cache_clear()
    tallies.forget_legacy()
    yield
    tallies.bucket_name.cache_clear()
    tallies.forget_legacy()


def _event(meter, user, value):
    return {"meterId": meter["id"], "userId": user, "value": value, "timestamp": minutes_ago(5)}


def _buckets(ndb_client, org):
    with ndb_client.context(namespace=org["namespace"]):
        return list(AlertTallyBucket.query(ancestor=root_key()).fetch())


def test_buckets_written_by_session_8_go_on_counting(api, app, ndb_client, org):
    """A database from before the upgrade: every bucket holds one JSON list. Its values
    and fired thresholds count (5 fires once, at 6; lost, it would fire again at 11), and
    the next commit stores the buckets in lines."""
    meter = api.create_meter()
    rule = create_rule(api, meter, thresholds=[5, 10])
    users = [f"user-{n}" for n in range(12)]
    api.record(*[_event(meter, user, 6) for user in users])
    run_evaluator(app, ndb_client, org)
    first = {t["userId"]: t for t in triggers(api, rule)}
    with ndb_client.context(namespace=org["namespace"]):
        for bucket in AlertTallyBucket.query(ancestor=root_key()).fetch():
            bucket.subjects = _list_blob(list(tallies.records_of(bucket.subjects).values()))
            bucket.put()
    held = [b for b in _buckets(ndb_client, org) if tallies.records_of(b.subjects)]
    assert held and all(b.subjects.startswith(b"[[") for b in held)
    api.record(*[_event(meter, user, 5) for user in users])
    run_evaluator(app, ndb_client, org)
    assert sorted(crossings(api, rule)) == sorted(
        [("alert.triggered", user, threshold) for user in users for threshold in (5, 10)]
    )
    again = {t["userId"]: t for t in triggers(api, rule) if t["threshold"] == 5}
    assert again == first
    stored = _buckets(ndb_client, org)
    # Those holding users (a period seeded whole also marks its empty buckets).
    assert all(b.subjects.startswith(b"\n[") for b in stored if tallies.records_of(b.subjects))
    values = {s: r[1] for b in stored for s, r in tallies.records_of(b.subjects).items()}
    assert values == {user: 11 for user in users}
