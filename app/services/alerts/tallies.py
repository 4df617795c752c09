"""Where tallies are stored: many subjects of one (rule spec, period) per entity.

Sessions 6 and 7 kept one `alert-tally` entity per (spec, subject, period). Events spread
over many users made each batch touch about 100 users x 7 specs, so the evaluator read
and wrote about 7 entities per event, and converting NDB entities was most of its CPU
(benchmarks/ingest.py, +72% CPU per event with 20 rules against a +25% bar). Now a
subject's tally is a record in one of BUCKETS `alert-tally-bucket` entities of its
(spec, period), chosen by a hash of the subject: a chunk reads and writes at most
BUCKETS entities per (spec, period) it touches, whatever the number of users.

- **Records.** `[subject, value, seededAt, basis, states]`, one JSON record per line of
  the bucket's blob, each line after a newline (session 9; session 8's blob was one
  JSON list, still read: `_lines_of`). Times are integer microseconds; states keep only
  thresholds that ever fired (a missing one reads as never triggered, generation 0,
  what the evaluator assumes anyway). A touched subject's line is found by its encoded
  prefix (`Bucket.span`): only touched records are decoded and re-encoded, the others
  are copied as bytes, so a chunk's cost follows what it touches, not the users per
  bucket.
- **Size.** An entity holds at most 1 MiB. A bucket's blob is kept under
  MAX_BUCKET_BYTES: past it, the subjects that do not fit (new ones first, then the
  biggest) are stored on their own as `alert-tally-spill` entities and the bucket is
  marked `full`; a subject not found in a full bucket is looked up there. So a bucket
  never fails a commit, and only a spec with about 10^5 subjects in one period pays one
  entity per subject again.
- **Migration.** A tally of the old shape (`alert-tally`, same key name as ever) still
  counts: while the org has any (`legacy_possible`, a keys-only query of one entity per
  process and ten minutes), a subject missing from its bucket is looked up there, and
  the commit that next writes it folds it into the bucket and deletes it, in one
  transaction. `sweep_legacy` deletes the old ones of periods long over, so the lookups
  stop.
- **Writes per bucket.** Evaluation of a meter is serialized by its lease, and a chunk
  writes each bucket once, so a bucket sees about one write per chunk: within Cloud
  Datastore's sustained rate of about one write per second per entity for a meter's
  chunks of a second each.

Do not change BUCKETS on a running deployment: a subject's bucket would move and its
tally restart (its crossings would be detected again, with the same trigger keys).
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from google.cloud import ndb

from app.core import slots
from app.models import AlertTally, AlertTallyBucket, AlertTallySpill, root_key
from app.services.alerts import retention  # a tally is deleted past its horizon only
from app.services.alerts.periods import base32, digest
from app.storage import entities, rpc

#: Buckets per (spec, period). A chunk writes at most this many entities per (spec,
#: period) it touches; 1,000 users make about 125 records (15 KB) per bucket.
BUCKETS = 8
#: A bucket's blob is kept under this many bytes (an entity holds at most 1 MiB, the
#: other properties and the key included).
MAX_BUCKET_BYTES = 900_000
#: How long a process trusts "this org may still hold old-shape tallies".
LEGACY_RECHECK_SECONDS = 600.0
#: Old-shape tallies whose period began this long ago are over (a month is at most 31
#: days, and a cancel's feed is evaluated within minutes): `sweep_legacy` deletes them.
LEGACY_KEEP = timedelta(days=62)


@dataclass(slots=True)
class Tally:
    """One (spec, subject, period)'s value, and per rule which thresholds fired."""

    value: int = 0
    states: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    seeded_at: datetime | None = None
    basis: datetime | None = None


@functools.lru_cache(maxsize=4096)  # a chunk's tallies share a few bases and seed cuts
def _micros(moment: datetime | None) -> int | None:
    return None if moment is None else slots.micros(moment)


@functools.lru_cache(maxsize=4096)
def _moment(micros: int | None) -> datetime | None:
    return None if micros is None else slots.from_micros(micros)


def _compact(states: dict[str, dict[str, list[Any]]]) -> dict[str, dict[str, list[Any]]]:
    """States without the never-triggered thresholds (the default) and empty rules."""
    kept = {}
    for rule_id, of_rule in states.items():
        fired = {t: s for t, s in of_rule.items() if s[0] or s[1]}
        if fired:
            kept[rule_id] = fired
    return kept


def _from_record(record: list[Any]) -> Tally:
    _subject, value, seeded_at, basis, states = record
    return Tally(value, states, _moment(seeded_at), _moment(basis))


def _to_record(subject: str | None, tally: Tally) -> list[Any]:
    return [
        subject,
        tally.value,
        _micros(tally.seeded_at),
        _micros(tally.basis),
        _compact(tally.states),
    ]


def _from_entity(entity: AlertTally) -> Tally:
    return Tally(int(entity.value or 0), dict(entity.states), entity.seeded_at, entity.basis)


@functools.lru_cache(maxsize=65_536)  # asked once per contribution and spec
def tally_name(spec: str, subject: str | None, start: datetime) -> str:
    """The key name of a (spec, subject, period start) tally: its own entity's (the old
    shape, or spilled), and the evaluator's name for it."""
    return "t_" + base32(digest(spec, subject, start.isoformat()), 40)


@functools.lru_cache(maxsize=65_536)  # asked once per touched tally and chunk
def bucket_name(spec: str, start: datetime, subject: str | None) -> str:
    """The key name of the bucket holding (spec, subject, period start)'s tally."""
    return _bucket_name(spec, start, _subject_hash(subject) % BUCKETS)


@functools.lru_cache(maxsize=65_536)  # a subject's is the same in every spec
def _subject_hash(subject: str | None) -> int:
    return int.from_bytes(digest(subject)[:4], "big")


@functools.lru_cache(maxsize=16_384)  # BUCKETS names per (spec, period)
def _bucket_name(spec: str, start: datetime, index: int) -> str:
    return "b_" + base32(digest(spec, start.isoformat(), index), 40)


def _bucket_key(name: str) -> ndb.Key:
    return ndb.Key(AlertTallyBucket, name, parent=root_key())


@dataclass
class Bucket:
    """A bucket as read: its blob in the line shape (`_lines_of`), and whether it is full.

    Its records are decoded together when the first is asked for (`record`), in one
    `json.loads`, and kept with their encoded lines: a rewrite (`_packed`) re-encodes
    only the touched records and joins the others' lines as bytes. A bucket this process
    remembers (`_known`) is decoded once for all the chunks that find it unchanged."""

    name: str
    blob: bytes = b""
    full: bool = False
    exists: bool = False
    #: the basis under which its (spec, period) was seeded whole (`seed_periods`), if it was
    whole: datetime | None = None
    #: the cut of that read when it came before the basis (None: after it)
    whole_at: datetime | None = None
    #: subject -> (start, end) of its line in `blob`, or None: not in it (found so far)
    spans: dict[str | None, tuple[int, int] | None] = field(default_factory=dict)
    #: subject -> its record, every record of `blob` decoded at once when first asked
    #: (one `json.loads` of the blob: a chunk asks for most of a bucket's subjects)
    records: dict[str | None, list[Any]] | None = None
    #: subject -> its line in `blob` (leading newline included), with `records`
    lines: dict[str | None, bytes] | None = None
    #: subject -> its tally (`tally`), as asked
    tallies: dict[str | None, Tally | None] | None = None
    #: the blob as stored (session 8's shape, or `blob` itself), what `_known` compares
    source: bytes = b""

    def span(self, subject: str | None) -> tuple[int, int] | None:
        """Where the subject's line lies in the blob (its leading newline included)."""
        if subject in self.spans:
            return self.spans[subject]
        start = self.blob.find(_prefix(subject))
        found = None
        if start >= 0:
            end = self.blob.find(b"\n", start + 1)
            found = (start, len(self.blob) if end < 0 else end)
        self.spans[subject] = found
        return found

    def record(self, subject: str | None) -> list[Any] | None:
        """The subject's record as stored, decoded; None if the bucket does not hold it.
        Shared: a caller copies what it changes."""
        if self.records is None:
            self.decode()
        return self.records.get(subject)  # type: ignore[union-attr]

    def decode(self) -> None:
        """Decode every record at once (an encoded record holds no newline, so the lines
        joined by commas are one JSON list)."""
        parts = self.blob.split(b"\n")[1:]
        decoded = json.loads(b"[" + b",".join(parts) + b"]")
        self.records = {record[0]: record for record in decoded}
        self.lines = {record[0]: b"\n" + part for record, part in zip(decoded, parts)}

    def tally(self, subject: str | None) -> Tally | None:
        """The subject's tally as stored (None: the bucket does not hold it), built once
        per bucket read: shared, never changed (`evaluate._updated` makes a new one)."""
        if self.tallies is None:
            self.tallies = {}
        elif subject in self.tallies:
            return self.tallies[subject]
        record = self.record(subject)
        tally = self.tallies[subject] = None if record is None else _from_record(record)
        return tally

    def holds(self, subject: str | None) -> bool:
        """Whether the blob holds the subject's record."""
        if self.lines is not None:
            return subject in self.lines
        return self.span(subject) is not None


@functools.lru_cache(maxsize=65_536)
def _prefix(subject: str | None) -> bytes:
    """What a subject's line begins with: no other line can (an encoded record holds no
    newline, and the subject's closing quote and the comma end it)."""
    return b"\n[" + json.dumps(subject).encode() + b","


_encode = json.JSONEncoder(separators=(",", ":")).encode


def _line(record: list[Any]) -> bytes:
    """A record's line: what `json.dumps` makes of it, written out by hand around its
    subject's cached prefix (`_prefix`) and its states (`{}` for most tallies): the
    encoder's setup per call was a sixth of a chunk's CPU (py-spy)."""
    subject, value, seeded_at, basis, states = record
    middle = f"{value},{'null' if seeded_at is None else seeded_at},"
    middle += f"{'null' if basis is None else basis},"
    return (
        _prefix(subject) + middle.encode() + (_encode(states).encode() if states else b"{}") + b"]"
    )


def _rewritten(bucket: Bucket, subject: str | None, tally: Tally) -> tuple[list[Any], bytes]:
    """The subject's new record and line. When only the value changed (its states are the
    very object of the record as read, and its times are the same), the stored line is
    kept after the value: encoding each touched tally's states again was a tenth of a
    steady chunk's CPU (benchmarks/alerts_eval.py --profile, session 11)."""
    old = bucket.records.get(subject) if bucket.records is not None else None
    if (
        old is not None
        and bucket.lines is not None
        and tally.states is old[4]
        and _micros(tally.seeded_at) == old[2]
        and _micros(tally.basis) == old[3]
    ):
        stored = bucket.lines[subject]
        prefix = _prefix(subject)
        rest = stored[stored.index(b",", len(prefix)) :]
        return [subject, tally.value, old[2], old[3], old[4]], prefix + b"%d" % tally.value + rest
    record = _to_record(subject, tally)
    return record, _line(record)


def _lines_of(blob: bytes) -> bytes:
    """A stored blob in the line shape: a newline, then one JSON record, per subject. A
    blob of session 8's shape (one JSON list of records, which starts with "[") is
    re-encoded once; the commit that next writes the bucket stores it in the line
    shape."""
    if blob[:1] != b"[":
        return blob
    return b"".join(_line(record) for record in json.loads(blob))


def records_of(blob: bytes) -> dict[str | None, list[Any]]:
    """Every record of a stored blob, by subject (either shape; tests and benchmarks)."""
    lines = _lines_of(blob or b"").split(b"\n")[1:]
    return {record[0]: record for record in map(json.loads, lines)}


def _decode(name: str, entity: AlertTallyBucket | None) -> Bucket:
    if entity is None:
        return Bucket(name)
    blob = _lines_of(entity.subjects or b"")
    return Bucket(name, blob, bool(entity.full), True, entity.whole, entity.whole_at)


#: (namespace, bucket name) -> the bucket as this process last read or wrote it, its
#: records decoded: a bucket read again unchanged (the commit's read after the plan's,
#: and the next chunk's after this one's commit, while this process holds the meter's
#: lease) is not decoded again. Bounded by the bytes of the blobs it holds.
_known: dict[tuple[str, str], Bucket] = {}
_known_lock = threading.Lock()
_known_bytes = [0]
KNOWN_BYTES = 64 << 20


def _remember(namespace: str, bucket: Bucket) -> None:
    with _known_lock:
        if _known_bytes[0] > KNOWN_BYTES:
            _known.clear()
            _known_bytes[0] = 0
        _known[(namespace, bucket.name)] = bucket
        _known_bytes[0] += len(bucket.blob)


def forget_known() -> None:
    """Drop every bucket this process remembers (tests that rewrite buckets by hand)."""
    with _known_lock:
        _known.clear()
        _known_bytes[0] = 0


def _from_pb(namespace: str, name: str, pb: Any) -> Bucket:
    """A bucket from its raw entity (None: not stored), the remembered one when unchanged.
    The evaluator's commit takes a tally it reads as the very object its plan read as
    unchanged (`evaluate._commit_chunk`): that holds because a remembered bucket is
    returned only when its blob, full flag and whole-seeding marks are equal, and
    neither buckets nor their tallies are ever changed in place."""
    if pb is None:
        with _known_lock:
            _known.pop((namespace, name), None)
        return Bucket(name)
    props = pb.properties
    source = props["Subjects"].blob_value if "Subjects" in props else b""
    full = bool(props["Full"].boolean_value) if "Full" in props else False
    whole, whole_at = entities.get_time(pb, "WholeBasis"), entities.get_time(pb, "WholeAt")
    known = _known.get((namespace, name))
    if (
        known is not None
        and known.source == source
        and (known.full, known.whole, known.whole_at) == (full, whole, whole_at)
    ):
        return known
    bucket = Bucket(name, _lines_of(source), full, True, whole, whole_at, source=source)
    _remember(namespace, bucket)
    return bucket


@dataclass
class Read:
    """The tallies of a chunk's touches as stored: per touch (its ident) its tally or None,
    the buckets they live in, and the old-shape or spilled entities some came from."""

    tallies: dict[Any, Tally | None]
    buckets: dict[str, Bucket]
    #: touch ident -> the entity its tally was read from, when not from its bucket
    own: dict[Any, AlertTally]
    #: what `read` fetched besides (the feeds, in the transaction), raw
    extra: list[Any]
    #: the buckets as `writes` rewrote them (`remember_written`, once committed)
    written: list[Bucket] = field(default_factory=list)
    namespace: str = ""


def read(
    touches: Iterable[Any],
    legacy: bool,
    extra_keys: Sequence[Any] = (),
    transaction: bytes | None = None,
    remembered: bool = False,
) -> Read:
    """The stored tallies of `touches` (by their `ident`; in `transaction` when given):
    one lookup of their buckets (with the raw `extra_keys`: `Read.extra` holds their raw
    entities), and one more of those missing from their bucket when it is full or the
    org may hold old-shape tallies (`legacy`). With `remembered` (a plan,
    which the commit's transaction checks again), buckets this process remembers as it
    last read or wrote them are taken from memory, without a lookup, when it remembers
    them all."""
    touches = list(touches)
    names = list(dict.fromkeys(t.bucket for t in touches))
    context = ndb.get_context()
    namespace = context.get_namespace() or ""
    transaction = transaction or context.transaction
    extra: list[Any] = []
    known = [_known.get((namespace, name)) for name in names] if remembered else []
    if remembered and not extra_keys and all(bucket is not None for bucket in known):
        buckets = dict(zip(names, known))
    else:
        extra_pbs = list(extra_keys)
        bucket_pbs = [entities.key(AlertTallyBucket._get_kind(), name) for name in names]
        # raw: NDB's conversions of a chunk's ~20 buckets, twice a chunk, were a fifth of
        # its CPU (benchmarks/alerts_eval.py --profile)
        found = rpc.lookup(extra_pbs + bucket_pbs, transaction=transaction)
        extra = [found.get(pb.SerializeToString()) for pb in extra_pbs]
        buckets = {
            name: _from_pb(namespace, name, found.get(pb.SerializeToString()))
            for name, pb in zip(names, bucket_pbs)
        }
    tallies: dict[Any, Tally | None] = {}
    missing: list[tuple[Any, Any]] = []
    for touch in touches:
        bucket = buckets[touch.bucket]
        tally = tallies[touch.ident] = bucket.tally(touch.subject)
        if tally is None:
            if bucket.full:
                missing.append((touch, entities.key(AlertTallySpill._get_kind(), touch.key_name)))
            if legacy:
                missing.append((touch, entities.key(AlertTally._get_kind(), touch.key_name)))
    own: dict[Any, AlertTally] = {}
    if missing:
        found = rpc.lookup([key for _touch, key in missing], transaction=transaction)
        for touch, key in missing:
            entity = entities.model_of(found.get(key.SerializeToString()))
            if entity is not None and touch.ident not in own:
                own[touch.ident] = entity
                tallies[touch.ident] = _from_entity(entity)
    return Read(tallies, buckets, own, extra, namespace=namespace)


def remember_written(stored: Read) -> None:
    """The buckets `writes` made of `stored` are committed: remember them as written, so
    that the next chunk's read finds them decoded (this process holds the meter's lease,
    so nobody else writes them in between; if someone did, the blob differs)."""
    for bucket in stored.written:
        _remember(stored.namespace, bucket)


def planned_writes(stored: Read, touches: Iterable[Any]) -> int:
    """Entities a commit of `touches` writes or deletes for their tallies: each bucket
    once, and each tally read from its own entity (folded in, or written back)."""
    touches = list(touches)
    return len({t.bucket for t in touches}) + sum(1 for t in touches if t.ident in stored.own)


def writes(stored: Read, updated: list[tuple[Any, Tally]], meter_id: str) -> list[Any]:
    """The raw mutations that store `updated` (touch, tally) pairs: each touched bucket
    rewritten with its touched records re-encoded and the others copied as bytes,
    old-shape tallies folded in and deleted, and whatever does not fit under
    MAX_BUCKET_BYTES spilled to its own entity. Raw: NDB's conversions of a chunk's
    buckets were a tenth of its CPU."""
    by_bucket: dict[str, list[tuple[Any, Tally]]] = {}
    for touch, tally in updated:
        by_bucket.setdefault(touch.bucket, []).append((touch, tally))
    mutations: list[Any] = []
    for name, pairs in by_bucket.items():
        bucket = stored.buckets[name]
        lines: dict[str | None, bytes] = {}
        records: dict[str | None, list[Any]] = {}
        spilled: list[tuple[str | None, Tally]] = []
        for touch, tally in pairs:
            source = stored.own.get(touch.ident)
            if source is not None and source.key.kind() == AlertTally._get_kind():
                mutations.append(entities.delete_of(source.key))  # folded in (or spilled)
            if bucket.full and not bucket.holds(touch.subject):
                spilled.append((touch.subject, tally))
                continue
            records[touch.subject], lines[touch.subject] = _rewritten(bucket, touch.subject, tally)
        blob, full, more = _packed(bucket, lines)
        spec, start = pairs[0][0].spec, pairs[0][0].start
        if not full and bucket.records is not None and bucket.lines is not None:
            written = Bucket(name, blob, False, True, bucket.whole, bucket.whole_at)
            written.records = {**bucket.records, **records}
            written.lines = {**bucket.lines, **lines}
            written.source = blob
            stored.written.append(written)
        for subject, record in more:
            spilled.append((subject, _from_record(record)))
        mutations.append(
            _bucket_upsert(name, meter_id, start, blob, full, bucket.whole, bucket.whole_at)
        )
        for subject, tally in spilled:
            mutations.append(entities.upsert_of(_spill(spec, start, subject, tally, meter_id)))
    return mutations


_PERIOD_START: Any = AlertTallyBucket.period_start


def _bucket_upsert(
    name: str,
    meter_id: str,
    start: datetime,
    blob: bytes,
    full: bool,
    whole: datetime | None,
    whole_at: datetime | None,
) -> Any:
    """A raw upsert of a bucket, as `AlertTallyBucket.put()` would store it
    (tests/test_alerts_tally_lines.py reads it back through NDB)."""
    mutation = rpc.Mutation()
    entity = mutation.upsert
    entities.fill_key(entity.key, AlertTallyBucket._get_kind(), name)
    entities.set_string(entity, "MeterId", meter_id, indexed=False)
    entities.set_time(entity, "PeriodStart", start)
    # the model's flag (indexed since session 9; tests stand in an older release by it)
    entity.properties["PeriodStart"].exclude_from_indexes = not _PERIOD_START._indexed
    entity.properties["Subjects"].blob_value = blob
    entity.properties["Subjects"].exclude_from_indexes = True
    entity.properties["Full"].boolean_value = full
    entity.properties["Full"].exclude_from_indexes = True
    for prop, moment in (("WholeBasis", whole), ("WholeAt", whole_at)):
        if moment is None:
            entity.properties[prop].null_value = 0
        else:
            entities.set_time(entity, prop, moment)
        entity.properties[prop].exclude_from_indexes = True
    return mutation


def _packed(
    bucket: Bucket, lines: dict[str | None, bytes]
) -> tuple[bytes, bool, list[tuple[str | None, list[Any]]]]:
    """The bucket's blob with `lines` (subject -> its new line) in place of the stored
    ones and the new subjects' appended: the other records are copied as bytes, never
    decoded (session 8 decoded and re-encoded every record of a touched bucket: 0.3 ms a
    bucket at 125 subjects, the most of a small chunk's cost). Also whether the bucket is
    full now, and the subjects that had to leave it (`_trimmed`)."""
    if bucket.lines is not None:  # decoded: join the lines, the touched ones replaced
        added = [subject for subject in lines if subject not in bucket.lines]
        packed = b"".join({**bucket.lines, **lines}.values())
    else:
        packed, added = _spliced(bucket, lines)
    if len(packed) <= MAX_BUCKET_BYTES:
        return packed, bucket.full, []
    return _trimmed(packed, added)


def _spliced(bucket: Bucket, lines: dict[str | None, bytes]) -> tuple[bytes, list[str | None]]:
    """The blob with `lines` in place of the stored ones (found by their prefix) and the
    new subjects' appended; the new subjects."""
    blob = bucket.blob
    replaced = sorted((span, line) for s, line in lines.items() if (span := bucket.span(s)))
    added = [subject for subject in lines if bucket.span(subject) is None]
    pieces = []
    at = 0
    for (start, end), line in replaced:
        pieces += [blob[at:start], line]
        at = end
    pieces.append(blob[at:])
    pieces += [lines[subject] for subject in added]
    return b"".join(pieces), added


def _trimmed(
    packed: bytes, added: list[str | None]
) -> tuple[bytes, bool, list[tuple[str | None, list[Any]]]]:
    """A blob past MAX_BUCKET_BYTES brought under it: the subjects just added leave
    first (the last added first), then those of the longest records; the bucket is full
    from then on. Only a bucket at its cap decodes every record."""
    lines = packed.split(b"\n")[1:]
    entries = [(record[0], record, line) for line, record in zip(lines, map(json.loads, lines))]
    size = {subject: len(line) + 1 for subject, _record, line in entries}
    record_of = {subject: record for subject, record, _line in entries}
    fresh = set(added)
    order = list(reversed(added)) + sorted(
        (subject for subject, _record, _line in entries if subject not in fresh),
        key=lambda subject: size[subject],
        reverse=True,
    )
    total = len(packed)
    leaving = []
    for subject in order:
        if total <= MAX_BUCKET_BYTES:
            break
        leaving.append((subject, record_of[subject]))
        total -= size[subject]
    gone = {subject for subject, _record in leaving}
    kept = b"".join(b"\n" + line for subject, _record, line in entries if subject not in gone)
    return kept, True, leaving


def bucket_names(spec: str, start: datetime) -> list[str]:
    """The key names of every bucket of (spec, period start)."""
    return ["b_" + base32(digest(spec, start.isoformat(), index), 40) for index in range(BUCKETS)]


def store_periods(
    periods: list[tuple[str, datetime, datetime, dict[str, int]]], seeded: Any, meter_id: str
) -> set[tuple[str, datetime]]:
    """In one transaction, for each (spec, period start, basis, values) of `periods` (a
    per-user spec's period, seeded at one cut: `seed.seed_periods`): write the tally of
    every user of `values` that its bucket does not hold yet, and mark every bucket of
    the period `whole` for `basis` (provisionally, with `whole_at`, when the cut came
    before the basis); the periods that are whole now.

    A subject already in its bucket keeps its record (it was seeded or counted by then,
    and holds its thresholds' states). Nothing is written for a period whose bucket is
    full (a subject missing from it may be spilled) or would be: then each new tally is
    seeded alone, as before."""
    at = _micros(seeded.at)
    names = {(spec, start): bucket_names(spec, start) for spec, start, _b, _v in periods}

    def attempt() -> set[tuple[str, datetime]]:
        keys = [_bucket_key(name) for of_period in names.values() for name in of_period]
        found = dict(zip(keys, ndb.get_multi(keys)))
        whole: set[tuple[str, datetime]] = set()
        puts: list[Any] = []
        for spec, start, basis, values in periods:
            early = seeded.at < basis  # before the basis: provisional (`whole_at`)
            buckets = {n: _decode(n, found[_bucket_key(n)]) for n in names[(spec, start)]}
            if all(b.whole == basis and (early or b.whole_at is None) for b in buckets.values()):
                whole.add((spec, start))
                continue
            written = _period_puts(spec, start, basis, values, buckets, at, early, meter_id)
            if written is not None:
                puts += written
                whole.add((spec, start))
        if puts:
            ndb.put_multi(puts)
        return whole

    return set(ndb.transaction(attempt, retries=3))


def _period_puts(
    spec: str,
    start: datetime,
    basis: datetime,
    values: dict[str, int],
    buckets: dict[str, Bucket],
    at: int | None,
    early: bool,
    meter_id: str,
) -> list[Any] | None:
    """The period's buckets with its missing users written and marked whole; None when a
    bucket is full or would be."""
    if any(bucket.full for bucket in buckets.values()):
        return None
    lines: dict[str, dict[str | None, bytes]] = {name: {} for name in buckets}
    for user, value in values.items():
        bucket = buckets[bucket_name(spec, start, user)]
        if bucket.span(user) is None:
            lines[bucket.name][user] = _line([user, value, at, _micros(basis), {}])
    puts = []
    for name, bucket in buckets.items():
        blob, full, leaving = _packed(bucket, lines[name])
        if full or leaving:
            return None
        puts.append(
            AlertTallyBucket(
                key=_bucket_key(name),
                meter_id=meter_id,
                period_start=start,
                subjects=blob,
                full=False,
                whole=basis,
                whole_at=_moment(at) if early else None,
            )
        )
    return puts


def _spill(
    spec: str, start: datetime, subject: str | None, tally: Tally, meter_id: str
) -> AlertTallySpill:
    return AlertTallySpill(
        key=ndb.Key(AlertTallySpill, tally_name(spec, subject, start), parent=root_key()),
        meter_id=meter_id,
        user_id=subject,
        period_start=start,
        value=str(tally.value),
        states=_compact(tally.states),
        seeded_at=tally.seeded_at,
        basis=tally.basis,
    )


# -- old-shape tallies -----------------------------------------------------------------

#: namespace -> (recheck at, monotonic; whether old-shape tallies may exist)
_legacy: dict[str, tuple[float, bool]] = {}
_legacy_lock = threading.Lock()


def legacy_possible() -> bool:
    """Whether the current org may still hold `alert-tally` entities of the old shape: a
    keys-only query of one entity, once per process and LEGACY_RECHECK_SECONDS while
    they exist, never again once there are none (nothing writes that shape any more)."""
    namespace = ndb.get_context().get_namespace() or ""
    now = time.monotonic()
    with _legacy_lock:
        known = _legacy.get(namespace)
    if known is not None and (known[0] > now or not known[1]):
        return known[1]
    found = bool(AlertTally.query(ancestor=root_key()).fetch(1, keys_only=True))
    with _legacy_lock:
        if len(_legacy) > 10_000:
            _legacy.clear()
        _legacy[namespace] = (now + LEGACY_RECHECK_SECONDS, found)
    return found


def forget_legacy() -> None:
    """Drop this process's knowledge of which orgs hold old-shape tallies (tests)."""
    with _legacy_lock:
        _legacy.clear()
        _swept.clear()


#: namespace -> when this process may sweep its old-shape tallies again (monotonic)
_swept: dict[str, float] = {}


def sweep_legacy(limit: int = 500) -> int:
    """Delete up to `limit` old-shape tallies of the current org whose period began more
    than LEGACY_KEEP ago (over, and never touched again since the upgrade); how many. At
    most once per process, org and LEGACY_RECHECK_SECONDS, and nothing at all once the
    org holds none: the evaluator calls it on every visit."""
    namespace = ndb.get_context().get_namespace() or ""
    now = time.monotonic()
    with _legacy_lock:
        if _swept.get(namespace, 0.0) > now:
            return 0
        if len(_swept) > 10_000:
            _swept.clear()
        _swept[namespace] = now + LEGACY_RECHECK_SECONDS
    if not legacy_possible():
        return 0
    cutoff = min(datetime.now(UTC) - LEGACY_KEEP, retention.tally_horizon() - retention.SWEEP_LAG)
    old = [
        tally.key
        for tally in AlertTally.query(ancestor=root_key()).fetch(limit)
        if tally.period_start is None or tally.period_start < cutoff
    ]
    ndb.delete_multi(old)
    return len(old)
