"""Bulk import and backfill (issue 17): a file of events stored exactly once.

The CLI (`metering events import`) and the HTTP endpoint (`POST
/v1/billing/meter-events/import`) both run `run`:

1. **Validation first.** A streaming pass over the whole input checks every record as
   recording would (the event schema, the meter, declared dimensions, the time window)
   and keeps only counts and the first `MAX_REPORTED` problems, so memory does not grow
   with the input. Any bad record refuses the whole import (nothing written) unless
   `skip_invalid`, which stores the good records and hands the bad ones, with their
   problems, to a reject sink.
2. **Writing**, a second streaming pass, through ingestion's engine (`ingest.store`): the
   same event keys, rollups, org-wide rollups and alert feeds as `POST
   /v1/billing/meter-events`, in commits as large as Datastore allows (`Batcher`), by a
   few threads at once on the CLI.

**Exactly once.** Every event has an idempotency key: its own, or one derived from the
record's identity, `import:<line>:<hash of userId, value, timestamp, dimensions and
metadata>` (`derived_idempotency`). The event key is then the usual hash of (meter, key),
so running an import again, or resuming one killed at any moment, finds each stored
event (`duplicate`) and stores only what is missing. The line number is in the key so
that two identical lines (a user's two identical calls in one second) stay two events;
the content is in it so that fixing a rejected line in place and importing the file
again stores the fixed line, and nothing twice.

**Backfill.** An event older than the live window (`max_event_age`, 35 days) is taken
only with `backfill` (the CLI's `--backfill`, or the `events:backfill` scope over HTTP)
into a meter with `allowBackfill`. Its rollups are written in the same commit as the
event, so summaries are exact at once; it writes no alert feed, because every period an
alert watches (a day or a month) that holds an event 35 days old has ended, and no alert
is due for an ended period.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import random
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import IO, Any

from google.api_core import exceptions as core_exceptions
from google.cloud import ndb
from marshmallow import ValidationError

from app.config import Config
from app.core.slots import day_and_slot
from app.models import Meter, ids, utcnow
from app.schemas import _describe, _flatten
from app.schemas.events import EventIn
from app.schemas.quick_events import _event as quick_event
from app.services import cloud_events, ingest, mappings
from app.services import events as native_events
from app.services.import_formats import InputError, Opener, Record, records
from app.storage import entities, rpc

#: The problems a report lists; the rest are counted.
MAX_REPORTED = 100
#: Datastore's limit of mutations per commit, and the most events one commit carries.
MAX_MUTATIONS = 500
BATCH_EVENTS = 250
#: How far back a backfill may reach (the live window's checks use the configured age).
BACKFILL_YEARS = 100
#: How often the validation pass tells its count (`run`'s `checked`).
CHECKED_EVERY = 10_000
#: Errors after which a batch is stored again (`Options.retries`): the Datastore did not
#: answer in time, or not at all. The commit may have landed; storing again is safe (the
#: event keys are the same, so what landed is found and counted `duplicate`).
TRANSIENT = (core_exceptions.DeadlineExceeded, core_exceptions.ServiceUnavailable)

_EVENT_SCHEMA = EventIn()


@dataclass
class Options:
    """How to import: `meter` (an id or event name) overrides every native record's meter."""

    meter: str | None = None
    backfill: bool = False
    skip_invalid: bool = False
    dry_run: bool = False
    format: str = "auto"
    workers: int = 4
    batch_events: int = BATCH_EVENTS
    #: How often a batch is stored again after a `TRANSIENT` error before the import
    #: stops. 0 over HTTP (the request's deadline is what ran out); the CLI retries.
    retries: int = 0


@dataclass
class Report:
    """What an import did (or, dry, would do)."""

    dry_run: bool = False
    records: int = 0
    created: int = 0
    duplicate: int = 0
    conflict: int = 0
    rejected: int = 0
    skipped: int = 0  # cancelled events of an export, and its trailer line
    backfilled: int = 0  # events older than the live window, created
    problem_count: int = 0
    problems: list[dict[str, Any]] = field(default_factory=list)

    def add_problems(self, record: Record) -> None:
        for name, message in record.problems:
            self.problem_count += 1
            if len(self.problems) < MAX_REPORTED:
                self.problems.append({"line": record.line, "field": name, "message": message})

    def as_json(self) -> dict[str, Any]:
        answer = {
            "dryRun": self.dry_run,
            "records": self.records,
            "created": self.created,
            "duplicate": self.duplicate,
            "conflict": self.conflict,
            "rejected": self.rejected,
            "skipped": self.skipped,
            "backfilled": self.backfilled,
            "errorCount": self.problem_count,
            "errors": self.problems,
        }
        return answer


class Refused(Exception):
    """The input has bad records and `skip_invalid` is off: nothing was written."""

    def __init__(self, report: Report):
        super().__init__(f"{report.problem_count} problem(s): nothing imported")
        self.report = report


def derived_idempotency(line: int, event: dict[str, Any]) -> str:
    """The idempotency key of a record that has none: its line and its content."""
    timestamp = event.get("timestamp")
    identity = json.dumps(
        [
            event["userId"],
            event.get("value"),
            timestamp.isoformat() if timestamp is not None else None,
            sorted(event.get("dimensions", {}).items()),
            event.get("metadata", {}),
        ],
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return f"import:{line}:{hashlib.sha256(identity.encode()).hexdigest()[:24]}"


# -- checking one record -------------------------------------------------------------------


def _stripped(problems: list[dict[str, Any]], at: str) -> list[tuple[str, str]]:
    """(field, message) of problems named `events[0].x`: the record is the line."""
    found = []
    for problem in problems:
        name = (problem.get("param") or "").removeprefix(at).lstrip(".")
        message = problem["message"].removeprefix(at).lstrip(".").removeprefix(": ")
        found.append((name, message))
    return found


class Checker:
    """Turns records into drafts (`ingest.Draft`), or problems added to the record."""

    def __init__(self, options: Options, config: Config, now: datetime):
        self.options, self.config, self.now = options, config, now
        self.wide = config.replace(max_event_age=timedelta(days=365 * BACKFILL_YEARS))
        self.live_since = now - config.max_event_age
        self._meters: dict[tuple[str, str], Meter | None] = {}
        self._consumers: dict[str, list[tuple[Meter, Any, int]]] = {}
        self._key_ids: dict[str, int] = {}
        self.override: Meter | None = None
        if options.meter:
            self.override = self._meter(("id", options.meter)) or self._meter(
                ("name", options.meter)
            )
            if self.override is None:
                raise InputError(f"no such meter: {options.meter}")

    def _meter(self, named: tuple[str, str]) -> Meter | None:
        if named not in self._meters:
            if len(self._meters) > 10_000:
                self._meters.clear()
            self._meters[named] = native_events.resolve_meters([named])[named]
        return self._meters[named]

    def _meter_key_id(self, meter: Meter) -> int:
        found = self._key_ids.get(meter.id_)
        if found is None:
            found = self._key_ids[meter.id_] = meter.key.id()
        return found

    def check(self, record: Record) -> list[ingest.Draft] | None:
        """The record's drafts, or None with its problems added to `record.problems`."""
        if record.problems or record.item is None:
            return None
        if record.kind == "cloudevent":
            return self._cloud_event(record)
        return self._native(record)

    def _old(self, record: Record, meter: Meter, moment: datetime | None) -> bool:
        """Whether the event is older than the live window; a problem if it may not be."""
        if moment is None or moment >= self.live_since:
            return False
        age = native_events._span(self.config.max_event_age)
        if not self.options.backfill:
            record.problems.append(
                ("timestamp", f"timestamp is more than {age} in the past (import with backfill)")
            )
        elif not meter.allow_backfill:
            record.problems.append(
                (
                    "timestamp",
                    f"timestamp is more than {age} in the past and meter "
                    f"{meter.event_name} does not allow backfill (allowBackfill)",
                )
            )
        return True

    def _native(self, record: Record) -> list[ingest.Draft] | None:
        item = record.item
        assert item is not None
        if self.override is not None:
            item.pop("eventName", None)
            item["meterId"] = self.override.id_
        event = quick_event(item)
        if event is None:
            try:
                event = _EVENT_SCHEMA.load(item)
            except ValidationError as exc:
                record.problems += [
                    (p["param"] or "", _describe(p)) for p in _flatten(exc.messages)
                ]
                return None
        named = ("id", event["meterId"]) if event.get("meterId") else ("name", event["eventName"])
        meter = self.override or self._meter(named)
        problems = native_events._event_problems(0, event, meter, self.now, self.wide)
        if problems:
            record.problems += _stripped(problems, "events[0]")
            return None
        assert meter is not None
        timestamp = event.get("timestamp")
        self._old(record, meter, timestamp)
        if record.problems:
            return None
        idempotency = event.get("idempotency") or derived_idempotency(record.line, event)
        return [
            ingest.Draft(
                meter=meter,
                user_id=event["userId"],
                value=event.get("value", 1),
                timestamp=timestamp or self.now,
                timestamp_given=timestamp is not None,
                idempotency=idempotency,
                dimensions=dict(event.get("dimensions", {})),
                metadata=dict(event.get("metadata", {})),
                key_id=native_events.idempotent_id(meter.id_, idempotency),
                meter_key_id=self._meter_key_id(meter),
            )
        ]

    def _cloud_event(self, record: Record) -> list[ingest.Draft] | None:
        problems = cloud_events.Problems()
        event = cloud_events.check_event(0, record.item, self.now, self.wide, problems)
        drafts = []
        if event is not None:
            consumers = self._consumers.get(event.type)
            if consumers is None:
                consumers = self._consumers[event.type] = [
                    (meter, mapping, meter.key.id())
                    for meter, mapping in mappings.meters_for_type(event.type)
                ]
            if not consumers:
                record.problems.append(("type", f"no active meter consumes type {event.type}"))
            for meter, mapping, key_id in consumers:
                reading = cloud_events._reading(0, event, meter, mapping, problems)
                if reading is not None and not self._old(record, meter, event.time):
                    drafts.append(cloud_events._draft(event, meter, key_id, reading, self.now))
        record.problems += _stripped(problems.found, "events[0]")
        return None if record.problems else drafts

    def is_old(self, draft: ingest.Draft) -> bool:
        return draft.timestamp_given and draft.timestamp < self.live_since


# -- writing in batches ------------------------------------------------------------------


class Batcher:
    """Collects drafts into commits of at most `MAX_MUTATIONS` mutations: each event, each
    (meter, user, dimensions, day) rollup, each org-wide (meter, dimensions, day) rollup
    and each meter's alert feed is one. Live and backfilled events go in separate
    commits (a backfill writes no alert feed)."""

    def __init__(self, most_events: int):
        self.most = most_events
        self.pending: dict[bool, _Pending] = {False: _Pending(), True: _Pending()}

    def add(self, draft: ingest.Draft, old: bool) -> tuple[list[ingest.Draft], bool] | None:
        """A full batch to store (and whether it is a backfill) once `draft` is added."""
        batch = self.pending[old]
        batch.add(draft)
        if len(batch.drafts) >= self.most or batch.mutations() >= MAX_MUTATIONS - 4:
            self.pending[old] = _Pending()
            return batch.drafts, old
        return None

    def rest(self) -> Iterator[tuple[list[ingest.Draft], bool]]:
        for old, batch in self.pending.items():
            if batch.drafts:
                yield batch.drafts, old
        self.pending = {False: _Pending(), True: _Pending()}


class _Pending:
    def __init__(self) -> None:
        self.drafts: list[ingest.Draft] = []
        self.series: set[tuple[Any, ...]] = set()
        self.org: set[tuple[Any, ...]] = set()
        self.meters: set[int] = set()

    def add(self, draft: ingest.Draft) -> None:
        self.drafts.append(draft)
        day = day_and_slot(draft.timestamp)[0]
        dimensions = tuple(sorted(draft.dimensions.items())) if draft.dimensions else ()
        self.series.add((draft.meter_key_id, draft.user_id, dimensions, day))
        self.org.add((draft.meter_key_id, dimensions, day))
        self.meters.add(draft.meter_key_id)

    def mutations(self) -> int:
        return len(self.drafts) + len(self.series) + len(self.org) + len(self.meters)


Store = Callable[[list[ingest.Draft], bool], list[ingest.Outcome]]


class Writer:
    """Stores batches (`ingest.store`), inline or on `workers` threads each in its own NDB
    context of the org, through a bounded queue (memory stays flat); counts outcomes."""

    def __init__(
        self,
        store: Store,
        report: Report,
        workers: int,
        context: Callable[[], contextlib.AbstractContextManager[Any]] | None,
        progress: Callable[[int], None],
        retries: int = 0,
    ):
        self.store, self.report, self.progress = store, report, progress
        self.retries = retries
        self.lock = threading.Lock()
        self.failure: Exception | None = None
        self.threads: list[threading.Thread] = []
        self.queue: queue.Queue[tuple[list[ingest.Draft], bool] | None] = queue.Queue(
            maxsize=max(1, workers) * 2
        )
        for _ in range(workers if context is not None else 0):
            thread = threading.Thread(target=self._work, args=(context,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def put(self, drafts: list[ingest.Draft], old: bool) -> None:
        if self.failure is not None:
            raise self.failure
        if not self.threads:
            self._store(drafts, old)
            return
        self.queue.put((drafts, old))

    def close(self) -> None:
        for _ in self.threads:
            self.queue.put(None)
        for thread in self.threads:
            thread.join()
        if self.failure is not None:
            raise self.failure

    def _work(self, context: Callable[[], contextlib.AbstractContextManager[Any]]) -> None:
        with context():
            while True:
                item = self.queue.get()
                if item is None:
                    return
                if self.failure is not None:
                    continue  # drain: the main thread raises it
                try:
                    self._store(*item)
                except Exception as exc:  # noqa: BLE001 - the main thread raises it
                    self.failure = exc

    def _store(self, drafts: list[ingest.Draft], old: bool) -> None:
        outcomes = self._store_retrying(drafts, old)
        with self.lock:
            for outcome in outcomes:
                setattr(self.report, outcome.status, getattr(self.report, outcome.status) + 1)
                if old and outcome.status == "created":
                    self.report.backfilled += 1
            self.progress(len(drafts))

    def _store_retrying(self, drafts: list[ingest.Draft], old: bool) -> list[ingest.Outcome]:
        """A 1,000,000-event import makes thousands of commits; on a loaded Datastore one
        of them may miss its deadline, which should not end the import."""
        for attempt in range(self.retries + 1):
            try:
                return self.store(drafts, old)
            except TRANSIENT:
                if attempt == self.retries:
                    raise
                _wait(min(30.0, 2.0**attempt) * random.uniform(0.5, 1.5))
        raise AssertionError("unreachable")


def _wait(seconds: float) -> None:
    """The retries' backoff (a function of its own, so a test need not wait)."""
    time.sleep(seconds)


class DryStore:
    """What storing would answer, without writing: stored keys are looked up and judged
    by ingestion's rule (`Draft.repeats`); keys seen earlier in the input are remembered
    in a temporary SQLite file (key id -> the line's payload hash), so memory stays flat
    however long the input."""

    def __init__(self) -> None:
        handle, self.path = tempfile.mkstemp(prefix="metering-import-", suffix=".db")
        os.close(handle)
        self.db = sqlite3.connect(self.path, check_same_thread=False)
        self.db.execute("CREATE TABLE seen (key INTEGER PRIMARY KEY, payload TEXT)")
        self.lock = threading.Lock()

    def close(self) -> None:
        self.db.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    @staticmethod
    def _payload(draft: ingest.Draft) -> str:
        return json.dumps(
            [
                draft.meter_id,
                draft.user_id,
                draft.value,
                sorted(draft.dimensions.items()),
                draft.timestamp.isoformat() if draft.timestamp_given else None,
            ],
            separators=(",", ":"),
        )

    def __call__(self, drafts: list[ingest.Draft], old: bool) -> list[ingest.Outcome]:
        # Every imported draft has its key id: from its idempotency key, given or derived.
        keys = [entities.key("meter-event", d.key_id or 0) for d in drafts]
        stored = rpc.lookup(keys)
        outcomes = []
        with self.lock:
            for draft, key_pb in zip(drafts, keys):
                found = stored.get(key_pb.SerializeToString())
                payload = self._payload(draft)
                if found is not None:
                    same = draft.repeats(entities.decode_event(found))  # type: ignore[arg-type]
                else:
                    row = self.db.execute(
                        "SELECT payload FROM seen WHERE key = ?", (draft.key_id,)
                    ).fetchone()
                    if row is None:
                        self.db.execute("INSERT INTO seen VALUES (?, ?)", (draft.key_id, payload))
                        outcomes.append(ingest.Outcome("", "created"))
                        continue
                    earlier = json.loads(row[0])
                    same = earlier[:4] == json.loads(payload)[:4] and (
                        not draft.timestamp_given or earlier[4] == draft.timestamp.isoformat()
                    )
                outcomes.append(ingest.Outcome("", "duplicate" if same else "conflict"))
        return outcomes


# -- the import ------------------------------------------------------------------------------


def run(
    opener: Opener,
    options: Options,
    config: Config,
    *,
    rejects: IO[str] | None = None,
    context: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
    on_total: Callable[[int], None] = lambda total: None,
    progress: Callable[[int], None] = lambda done: None,
    source: str | None = None,
    checked: Callable[[int], None] = lambda records: None,
) -> Report:
    """Import the input `opener` opens into the current org (the NDB context's namespace):
    validate all of it, then write (or, dry, judge) it in batches. `context` opens an NDB
    context of the org for each writer thread (None: write inline, one batch at a time).
    `checked` hears the validation pass's count every `CHECKED_EVERY` records.
    Raises `Refused` when records are bad and `options.skip_invalid` is off, `InputError`
    when the input cannot be read at all."""
    now = utcnow()
    checker = Checker(options, config, now)
    report = Report(dry_run=options.dry_run)
    for record in records(opener, options.format):
        report.records += 1
        if record.kind != "skipped" and checker.check(record) is None:
            report.add_problems(record)
        if report.records % CHECKED_EVERY == 0:
            checked(report.records)
    if report.problem_count and not options.skip_invalid:
        raise Refused(report)
    on_total(report.records)
    code = ids.namespace_code(ndb.get_context().get_namespace())
    dry = DryStore() if options.dry_run else None

    def store(drafts: list[ingest.Draft], old: bool) -> list[ingest.Outcome]:
        if dry is not None:
            return dry(drafts, old)
        return ingest.store(drafts, now, code, config.rollup_shards, alert_feeds=not old)

    writer = Writer(store, report, options.workers, context, progress, options.retries)
    batcher = Batcher(options.batch_events)
    try:
        sink = None
        if rejects is not None:
            sink = _RejectSink(rejects, source)
        _write(opener, options, checker, batcher, writer, report, sink, progress)
        for drafts, old in batcher.rest():
            writer.put(drafts, old)
    finally:
        writer.close()
        if dry is not None:
            dry.close()
    return report


def _write(
    opener: Opener,
    options: Options,
    checker: Checker,
    batcher: Batcher,
    writer: Writer,
    report: Report,
    rejects: _RejectSink | None,
    progress: Callable[[int], None],
) -> None:
    """The second pass: every good record's drafts to the writer, bad ones to `rejects`."""
    for record in records(opener, options.format):
        if record.kind == "skipped":
            report.skipped += 1
            progress(1)
            continue
        drafts = checker.check(record)
        if drafts is None:
            report.rejected += 1
            progress(1)
            if rejects is not None:
                rejects.write(record)
            continue
        if not drafts:
            progress(1)
        for draft in drafts:
            full = batcher.add(draft, checker.is_old(draft))
            if full is not None:
                writer.put(*full)


class _RejectSink:
    """The reject file: one JSON line per bad record (its file, line, problems and text)."""

    def __init__(self, out: IO[str], source: str | None):
        self.out, self.source = out, source

    def write(self, record: Record) -> None:
        self.out.write(reject_line(record, self.source) + "\n")


def reject_line(record: Record, source: str | None = None) -> str:
    """One line of the reject file: the record's line number, its problems and its text,
    and the file it came from when an import reads several."""
    entry: dict[str, Any] = {"file": source} if source else {}
    entry["line"] = record.line
    entry["errors"] = [{"field": name, "message": message} for name, message in record.problems]
    entry["input"] = record.text
    return json.dumps(entry, ensure_ascii=False)
