"""The names alert state is stored under: tallies, buckets and triggers are found again by
them, so a faster way to compute them must give exactly the same ones."""

import base64
import hashlib
import random
from datetime import UTC, datetime

from app.services.alerts import tallies
from app.services.alerts.periods import base32, digest


def _library_base32(raw: bytes, length: int) -> str:
    return base64.b32encode(raw).decode("ascii").lower()[:length]


def test_base32_is_the_standard_librarys_for_every_length_and_input():
    rng = random.Random(11)
    for size in (0, 1, 4, 5, 9, 16, 20, 25, 31, 32, 40):
        for _ in range(50):
            raw = rng.randbytes(size)
            for length in (1, 8, 20, 26, 32, 40):
                assert base32(raw, length) == _library_base32(raw, length), (size, length)


def test_stored_names_are_those_of_the_first_release():
    """The names as sessions 6 to 10 computed them (sha256 of the parts' reprs, base32
    by the standard library): what the Datastore holds."""
    start = datetime(2026, 12, 1, tzinfo=UTC)
    spec, subject = "spec-1", "user-7"
    joined = "\x00".join(repr(part) for part in (spec, subject, start.isoformat()))
    expected = "t_" + _library_base32(hashlib.sha256(joined.encode()).digest(), 40)
    assert tallies.tally_name(spec, subject, start) == expected
    index = int.from_bytes(hashlib.sha256(repr(subject).encode()).digest()[:4], "big")
    index %= tallies.BUCKETS
    joined = "\x00".join(repr(part) for part in (spec, start.isoformat(), index))
    expected = "b_" + _library_base32(hashlib.sha256(joined.encode()).digest(), 40)
    assert tallies.bucket_name(spec, start, subject) == expected
    assert digest("a", None, 3) == hashlib.sha256(b"'a'\x00None\x003").digest()
