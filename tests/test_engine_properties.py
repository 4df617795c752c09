"""Correctness proof of the usage engine: random event streams over HTTP against a brute force.

Hypothesis draws an abstract *plan*: events (several users, dimension values, some missing,
now and then a value near the int64 limits, one meter or all eight meters under one
idempotency key), phases that send them (retries inside and across batches, a key re-sent
with another payload, late and out-of-order timestamps, batches racing from threads,
cancellations by id and by key, some twice) and summary queries (every aggregation, window
size and time zone, groupBy, filters, with and without a user, aligned and unaligned period
bounds). The test plays the plan through the
live service, checks every answer against its own model of what must be stored (exactly
once, the first payload wins, a conflict changes nothing, a cancelled key stays taken), then
checks each summary against a brute force over the model's live events.

The brute force shares no code with the app: windows are the maximal runs of the 15-minute
UTC grid over which the local (hour and offset | day | month) stays the same, found by
scanning the grid with zoneinfo; an event's window is found by bisection on their starts.

Some phases also compact the rollups (fold their deltas into the base), after the phase or
racing with its batches. Two venues: `recent`, the service as configured in production
(timestamps up to 30 days back), and `clock_changes`, a service that accepts old timestamps,
so that streams sit on fixed spans holding New York's and Lord Howe's clock changes and a
month end: those runs are the same whatever the date. No timestamp is ahead of the clock:
without periodEnd a summary ends at the first slot boundary after now plus the 5-minute lead.

The tests at the end pin down bugs found while writing it, in their smallest form.
"""

from __future__ import annotations

import bisect
import dataclasses
import os
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import create_app
from app.services import compact
from tests.support.http import Api
from tests.support.names import unique_org_name
from tests.support.server import LiveServer

UTC = UTC
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
GRID = timedelta(minutes=15)
MICRO = timedelta(microseconds=1)
ZONES = ("UTC", "Asia/Kolkata", "Asia/Kathmandu", "America/New_York", "Australia/Lord_Howe")
# Offsets timestamps are written in: the service must read them all as the same instant.
WRITTEN_IN = (
    UTC,
    timezone(timedelta(hours=5, minutes=30)),
    timezone(-timedelta(hours=4)),
    timezone(timedelta(hours=5, minutes=45)),
)

# (aggregationType, uniqueBy) of the meters every example creates, all with both dimensions.
METERS = (
    ("sum", None),
    ("count", None),
    ("last", None),
    ("min", None),
    ("max", None),
    ("avg", None),
    ("unique_count", "userId"),
    ("unique_count", "model"),
)
ALL_METERS = tuple(range(len(METERS)))
USERS = ("alice", "bob", "carol", "dave ü")
MODELS = ("gpt-4", "claude", "")  # "" is a value, and reads like a missing dimension
REGIONS = ("eu-west", "us")
FIELDS = ("userId", "model", "region")
FILTER_VALUES = {
    "userId": USERS + ("nobody",),
    "model": MODELS + ("o3",),
    "region": REGIONS + ("",),
}
MAX_BATCH = 100
# Values past 2**48 take ingestion's exact path; sums of these overflow int64.
HUGE = (1 << 48, -(1 << 48) - 5, (1 << 62) + 3, (1 << 63) - 1, -(1 << 63))

# Spans of the clock_changes venue, each with two clock changes and a month end: New York
# springs forward 2026-03-08 and Lord Howe falls back half an hour 2026-04-05; Lord Howe
# springs forward half an hour 2025-10-05 and New York falls back 2025-11-02.
FIXED_SPANS = (
    (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 7, tzinfo=UTC)),
    (datetime(2025, 9, 29, tzinfo=UTC), datetime(2025, 11, 6, tzinfo=UTC)),
)


# --- the plan --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Moment:
    """An instant relative to the venue's span, so plans do not depend on today's date."""

    focus: int | None  # index into the span's notable instants; None: spread over the span
    offset: int  # microseconds from the focus; with focus None, millionths of the span


@dataclasses.dataclass(frozen=True)
class Draft:
    """One logical event: an idempotency key (or none) and its payload, for 1 or 8 meters."""

    meters: tuple[int, ...]
    keyed: bool
    user: str
    value: int | None  # None: `value` left out (count meters); the other meters get 1
    model: str | None  # None: dimension missing
    region: str | None
    at: Moment


# What a send carries: the draft's payload, the same without its timestamp, or one field
# changed (a conflict once the key is stored).
VARIANTS = ("same",) * 10 + (
    "same_without_timestamp",
    "other_value",
    "other_user",
    "other_dims",
    "other_time",
)


@dataclasses.dataclass(frozen=True)
class Send:
    draft: int  # index into the plan's drafts (modulo their number)
    variant: str
    by_name: bool  # name the meter by eventName instead of meterId
    style: int  # how the timestamp and empty dimensions are written


@dataclasses.dataclass(frozen=True)
class Target:
    draft: int
    meter: int  # which of the draft's meters
    how: str  # id | meterId | eventName | unknown_key | bad_id


@dataclasses.dataclass(frozen=True)
class Phase:
    batches: tuple[tuple[Send, ...], ...]  # one: sent alone; several: sent at once from threads
    cancels: tuple[Target, ...] = ()  # after a lone batch, or racing with the batches
    compact: bool = False  # compact the rollups, the same way


@dataclasses.dataclass(frozen=True)
class Bound:
    at: Moment
    style: str  # Z | offset | date


@dataclasses.dataclass(frozen=True)
class Query:
    meter: int
    user: str | None
    start: Bound | None
    end: Bound | None
    window: str | None
    zone: str
    zone_given: bool  # send timeZone even when it is UTC
    group_by: tuple[str, ...]
    filters: tuple[tuple[str, tuple[str, ...]], ...]


@dataclasses.dataclass(frozen=True)
class Plan:
    span: int  # which FIXED_SPANS (clock_changes venue)
    drafts: tuple[Draft, ...]
    phases: tuple[Phase, ...]
    queries: tuple[Query, ...]


def moments():
    slot_us = GRID // MICRO
    near = st.one_of(
        st.integers(-48, 48).map(lambda k: k * slot_us),  # on a slot edge
        st.integers(-48, 48).map(lambda k: k * slot_us - 1),  # just before one
        st.integers(-12 * 3600, 12 * 3600).map(lambda s: (s + 13) * 10**6),  # whole seconds
        st.integers(-3 * 86400 * 10**6, 3 * 86400 * 10**6),
    )  # anywhere
    return st.one_of(
        st.builds(Moment, st.integers(0, 10**3), near),
        st.builds(Moment, st.none(), st.integers(0, 10**6)),
    )


drafts = st.builds(
    Draft,
    meters=st.one_of(st.sampled_from(ALL_METERS).map(lambda i: (i,)), st.just(ALL_METERS)),
    keyed=st.sampled_from((True,) * 7 + (False,)),
    user=st.sampled_from(USERS),
    value=st.tuples(st.integers(0, 39), st.integers(-20, 500), st.sampled_from(HUGE)).map(
        lambda v: v[2] if v[0] == 0 else None if v[0] < 5 else v[1]
    ),
    model=st.sampled_from(MODELS + (None,)),
    region=st.sampled_from(REGIONS + (None,)),
    at=moments(),
)
sends = st.builds(
    Send, st.integers(0, 10**3), st.sampled_from(VARIANTS), st.booleans(), st.integers(0, 7)
)
targets = st.builds(
    Target,
    st.integers(0, 10**3),
    st.integers(0, 7),
    st.sampled_from(("id", "id", "meterId", "eventName", "unknown_key", "bad_id")),
)


@st.composite
def batches(draw, most: int):
    size = draw(st.integers(1, most))
    return tuple(draw(st.lists(sends, min_size=size, max_size=size)))


compactions = st.sampled_from((False, False, True))
phases = st.one_of(
    st.builds(Phase, st.tuples(batches(36)), st.just(()), compactions),
    st.builds(
        Phase,
        st.tuples(batches(36)),
        st.lists(targets, min_size=1, max_size=12).map(tuple),
        compactions,
    ),
    st.builds(
        Phase,
        st.lists(batches(16), min_size=2, max_size=3).map(tuple),
        st.lists(targets, max_size=6).map(tuple),
        compactions,
    ),
)


def _filters(picked):
    return tuple(
        (name, tuple(sorted({FILTER_VALUES[name][i % len(FILTER_VALUES[name])] for i in indexes})))
        for name, indexes in picked
    )


bounds = st.builds(Bound, moments(), st.sampled_from(("Z", "offset", "date")))
queries = st.builds(
    Query,
    meter=st.sampled_from(ALL_METERS),
    user=st.one_of(st.none(), st.none(), st.sampled_from(USERS + ("nobody",))),
    start=st.one_of(st.none(), bounds, bounds),
    end=st.one_of(st.none(), bounds, bounds),
    window=st.sampled_from((None, "hour", "day", "month")),
    zone=st.sampled_from(ZONES),
    zone_given=st.booleans(),
    group_by=st.lists(st.sampled_from(FIELDS), unique=True, max_size=2).map(tuple),
    filters=st.lists(
        st.tuples(st.sampled_from(FIELDS), st.sets(st.integers(0, 5), min_size=1, max_size=3)),
        max_size=2,
        unique_by=lambda f: f[0],
    ).map(_filters),
)
plans = st.builds(
    Plan,
    st.integers(0, len(FIXED_SPANS) - 1),
    st.lists(drafts, min_size=20, max_size=70).map(tuple),
    st.lists(phases, min_size=2, max_size=7).map(tuple),
    st.lists(queries, min_size=18, max_size=24).map(tuple),
)


# --- the venue: where the instants are, and which service takes them -------------------------


def _instant_text(at: datetime, style: int) -> str:
    return at.astimezone(WRITTEN_IN[style % len(WRITTEN_IN)]).isoformat().replace("+00:00", "Z")


def _utc_text(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def notable_instants(low: datetime, high: datetime) -> list[datetime]:
    """Span ends, local month starts and clock changes of every zone, within [low, high)."""
    found = {low, high - MICRO}
    for name in ZONES:
        zone = ZoneInfo(name)
        local = low.astimezone(zone)
        year, month = local.year, local.month
        while (start := datetime(year, month, 1, tzinfo=zone).astimezone(UTC)) < high:
            found.add(start)
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        moment = EPOCH + (low - EPOCH) // GRID * GRID
        while moment < high:
            if (moment + GRID).astimezone(zone).utcoffset() != moment.astimezone(zone).utcoffset():
                found.add(moment + GRID)
            moment += GRID
    return sorted(at for at in found if low <= at < high)


@dataclasses.dataclass(frozen=True)
class Span:
    low: datetime  # events lie in [low, high)
    high: datetime
    notable: tuple[datetime, ...]

    @classmethod
    def of(cls, low: datetime, high: datetime) -> Span:
        return cls(low, high, tuple(notable_instants(low, high)))

    def instant(self, moment: Moment) -> datetime:
        if moment.focus is None:
            return self.low + (self.high - self.low) * moment.offset // 10**6
        return self.wrap(self.notable[moment.focus % len(self.notable)] + moment.offset * MICRO)

    def wrap(self, at: datetime) -> datetime:
        return self.low + (at - self.low) % (self.high - self.low)


@dataclasses.dataclass(frozen=True)
class Venue:
    name: str
    url: str

    def span(self, plan: Plan) -> Span:
        if self.name == "clock_changes":
            return Span.of(*FIXED_SPANS[plan.span])
        now = datetime.now(UTC).replace(microsecond=0)
        return Span.of(now - timedelta(days=30), now - timedelta(minutes=1))


@pytest.fixture(scope="module")
def lenient_server(config):
    """The service accepting timestamps decades old."""
    app = create_app(dataclasses.replace(config, max_event_age=timedelta(days=36500)))
    running = LiveServer(app).start()
    yield running
    running.stop()


@pytest.fixture(params=["recent", "clock_changes"])
def venue(request, server) -> Venue:
    if request.param == "recent":
        return Venue("recent", server.url)
    return Venue("clock_changes", request.getfixturevalue("lenient_server").url)


def _new_org(admin: Api) -> dict:
    answer = admin.post("/v1/admin/orgs", json={"name": unique_org_name()})
    assert answer.status_code == 201, answer.text
    return answer.json()


# --- the model of what is stored ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Payload:
    meter: int
    user: str
    value: int
    dims: tuple[tuple[str, str], ...]
    at: datetime | None  # None: timestamp left out (only ever on a stored key)

    def same_as(self, stored: Payload) -> bool:
        return (self.meter, self.user, self.value, self.dims) == (
            stored.meter,
            stored.user,
            stored.value,
            stored.dims,
        ) and self.at in (None, stored.at)


@dataclasses.dataclass(eq=False)
class Stored:
    payload: Payload
    id: str
    live: bool = True

    def field(self, name: str) -> str:
        """userId or a dimension; a missing dimension reads as ""."""
        return self.payload.user if name == "userId" else dict(self.payload.dims).get(name, "")


@dataclasses.dataclass(frozen=True)
class Outgoing:
    """One event of a request: its body, its key (meter, idempotency) and its payload."""

    body: dict
    key: tuple[int, str] | None
    payload: Payload


class Model:
    """Every stored event, live or cancelled, and the stored event of each key."""

    def __init__(self):
        self.by_key: dict[tuple[int, str], Stored] = {}
        self.events: list[Stored] = []

    def store(self, key, payload: Payload, event_id: str) -> None:
        stored = Stored(payload, event_id)
        self.events.append(stored)
        if key is not None:
            self.by_key[key] = stored

    def expect(self, request: list[Outgoing]) -> list[str]:
        """Per event: created | duplicate | conflict, or `first` for the first copy of a key
        the model does not hold (created, unless a racing request stored it first)."""
        first_copy: dict[tuple, Payload] = {}
        statuses = []
        for out in request:
            stored = self.by_key.get(out.key) if out.key else None
            reference = stored.payload if stored else first_copy.get(out.key)  # type: ignore[arg-type]
            if out.key is None:
                statuses.append("created")
            elif reference is None:
                first_copy[out.key] = out.payload
                statuses.append("first")
            else:
                statuses.append("duplicate" if out.payload.same_as(reference) else "conflict")
        return statuses


# --- playing a plan through the service --------------------------------------------------------


class Player:
    """Plays a plan through the service, checking every answer against the model."""

    def __init__(self, api: Api, plan: Plan, span: Span, compact_rollups):
        self.api, self.plan, self.span = api, plan, span
        self.compact_rollups = compact_rollups
        self.model = Model()
        self.meters = [
            api.create_meter(
                name=f"{kind} {by or ''}",
                eventName=f"m{index}_{kind}",
                aggregationType=kind,
                dimensions=["model", "region"],
                **({"uniqueBy": by} if by else {}),
            )
            for index, (kind, by) in enumerate(METERS)
        ]

    def play(self) -> None:
        for phase in self.plan.phases:
            if len(phase.batches) > 1:
                self.record_racing(phase)
                continue
            for chunk in self.chunks(phase.batches[0]):
                self.record_alone(self.request(chunk, racing=False))
            if phase.cancels:
                self.cancel(phase.cancels)
            if phase.compact:
                self.compact_rollups()

    # -- events of a plan --------------------------------------------------------------------

    def draft(self, index: int) -> Draft:
        return self.plan.drafts[index % len(self.plan.drafts)]

    def key(self, index: int, meter: int) -> tuple[int, str] | None:
        return (meter, f"req-{index % len(self.plan.drafts)}") if self.draft(index).keyed else None

    def payload(self, index: int, meter: int, variant: str) -> Payload:
        draft = self.draft(index)
        value = 1 if draft.value is None else draft.value
        user, at = draft.user, self.span.instant(draft.at)
        dims = {
            name: v
            for name, v in (("model", draft.model), ("region", draft.region))
            if v is not None
        }
        if variant == "other_value":
            value ^= 1  # another value, still an int64
        elif variant == "other_user":
            user = USERS[(USERS.index(user) + 1) % len(USERS)]
        elif variant == "other_dims":
            dims = (
                {k: v for k, v in dims.items() if k != "region"}
                if "region" in dims
                else {**dims, "region": REGIONS[0]}
            )
        elif variant == "other_time":
            at = self.span.wrap(at + timedelta(hours=1, minutes=7, seconds=13))
        return Payload(
            meter,
            user,
            value,
            tuple(sorted(dims.items())),
            None if variant == "same_without_timestamp" else at,
        )

    def body(self, index: int, payload: Payload, send: Send) -> dict:
        meter = self.meters[payload.meter]
        body = {"eventName": meter["eventName"]} if send.by_name else {"meterId": meter["id"]}
        body["userId"] = payload.user
        draft = self.draft(index)
        if not (draft.value is None and METERS[payload.meter][0] == "count" and payload.value == 1):
            body["value"] = payload.value
        if payload.at is not None:
            body["timestamp"] = _instant_text(payload.at, send.style)
        if draft.keyed:
            body["idempotency"] = f"req-{index % len(self.plan.drafts)}"
        if payload.dims or send.style % 2:
            body["dimensions"] = dict(payload.dims)
        return body

    def chunks(self, batch: tuple[Send, ...]) -> list[list[tuple[Send, int]]]:
        """The batch's events (one per send and meter) in requests of at most MAX_BATCH."""
        expanded = [(send, meter) for send in batch for meter in self.draft(send.draft).meters]
        return [expanded[i : i + MAX_BATCH] for i in range(0, len(expanded), MAX_BATCH)]

    def request(self, chunk: list[tuple[Send, int]], racing: bool) -> list[Outgoing]:
        """The events of one request, judged against what the model holds now: build a
        request only once the earlier ones are answered."""
        keys = [self.key(send.draft, meter) for send, meter in chunk]
        seen: set = set()
        request = []
        for (send, meter), key in zip(chunk, keys):
            variant = self._variant(send, key, key in seen, racing)
            seen.add(key)
            payload = self.payload(send.draft, meter, variant)
            request.append(Outgoing(self.body(send.draft, payload, send), key, payload))
        return request

    def _variant(self, send: Send, key, seen: bool, racing: bool) -> str:
        """The plan's variant, except where the stored payload would be unknowable or racy:
        - keyless events are sent as drafted (each send is a new event);
        - a key's first copy carries its timestamp (else the service picks `now`);
        - racing requests send a new key's first copy as drafted, so that whichever wins
          stores the same payload."""
        if key is None:
            return "same"
        if (
            key not in self.model.by_key
            and not seen
            and (racing or send.variant == "same_without_timestamp")
        ):
            return "same"
        return send.variant

    # -- recording ---------------------------------------------------------------------------

    def _post(self, api: Api, request: list[Outgoing]) -> list[dict]:
        answer = api.post("/v1/billing/meter-events", json={"events": [o.body for o in request]})
        assert answer.status_code == 201, answer.text
        outcomes = answer.json()["events"]
        assert len(outcomes) == len(request)
        return outcomes

    def record_alone(self, request: list[Outgoing]) -> None:
        expected = [s.replace("first", "created") for s in self.model.expect(request)]
        outcomes = self._post(self.api, request)
        got = [o["status"] for o in outcomes]
        assert got == expected, self._explain(request, got, expected)
        self._learn([(request, outcomes)])

    def record_racing(self, phase: Phase) -> None:
        """Batches (with cancels of settled events, and compaction) at once; each new key
        is created once."""
        requests = [
            self.request(chunk, racing=True)
            for batch in phase.batches
            for chunk in self.chunks(batch)
        ]
        expected = [self.model.expect(request) for request in requests]
        cancels = [t for t in phase.cancels if self._settled(t, requests)]
        others = ([lambda: self.cancel(cancels)] if cancels else []) + (
            [self.compact_rollups] if phase.compact else []
        )
        barrier = threading.Barrier(len(requests) + len(others))

        def post(request):
            api = self.api.as_key(self.api.key)  # a session per thread
            barrier.wait(timeout=60)
            return self._post(api, request)

        def run(other):
            barrier.wait(timeout=60)
            other()

        with ThreadPoolExecutor(len(requests) + len(others)) as pool:
            running = [pool.submit(run, other) for other in others]
            answers = list(pool.map(post, requests))
            for done in running:
                done.result()
        created = defaultdict(int)  # type: ignore[var-annotated]
        for request, statuses, outcomes in zip(requests, expected, answers):
            for out, status, outcome in zip(request, statuses, outcomes):
                allowed = {"created", "duplicate"} if status == "first" else {status}
                assert outcome["status"] in allowed, (out.body, status, outcome)
                if status == "first":
                    created[out.key] += outcome["status"] == "created"
        assert set(created.values()) <= {1}, dict(created)
        self._learn(list(zip(requests, answers)))

    def _learn(self, answered: list[tuple[list[Outgoing], list[dict]]]) -> None:
        """Store what the answers created, then check every answer's id against it."""
        for request, outcomes in answered:
            for out, outcome in zip(request, outcomes):
                if outcome["status"] == "created":
                    assert out.key is None or out.key not in self.model.by_key, out.body
                    self.model.store(out.key, out.payload, outcome["id"])
        for request, outcomes in answered:
            for out, outcome in zip(request, outcomes):
                if out.key is not None:
                    assert outcome["id"] == self.model.by_key[out.key].id, (out.body, outcome)

    def _explain(self, request, got, expected) -> str:
        lines = []
        for index, (out, status, wanted) in enumerate(zip(request, got, expected)):
            if status != wanted:
                stored = self.model.by_key.get(out.key)
                lines.append(
                    f"[{index}] {out.body} -> {status}, expected {wanted}; stored "
                    f"{stored and stored.payload}"
                )
                lines += [
                    f"    same key at [{i}]: {o.body}"
                    for i, o in enumerate(request)
                    if o.key == out.key and i != index
                ]
        return "\n".join(lines)

    # -- cancelling --------------------------------------------------------------------------

    def _settled(self, target: Target, requests) -> bool:
        """Whether a cancel's outcome cannot depend on how racing requests interleave."""
        draft = self.draft(target.draft)
        key = self.key(target.draft, draft.meters[target.meter % len(draft.meters)])
        return (
            key is None
            or key in self.model.by_key
            or all(o.key != key for request in requests for o in request)
        )

    def cancel(self, targets) -> None:
        bodies, expected, doomed = [], [], []
        for target in targets:
            body, stored = self._target(target)
            if body is None:
                continue
            bodies.append(body)
            if stored is None:
                expected.append({"id": None, "status": "not_found"})
            elif not stored.live or stored in doomed:
                expected.append({"id": stored.id, "status": "already_cancelled"})
            else:
                doomed.append(stored)
                expected.append({"id": stored.id, "status": "cancelled"})
        if not bodies:
            return
        answer = self.api.as_key(self.api.key).post(
            "/v1/billing/meter-events/cancel", json={"events": bodies}
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["events"] == expected, bodies
        for stored in doomed:
            stored.live = False

    def _target(self, target: Target) -> tuple[dict | None, Stored | None]:
        """The body naming a target, and the stored event it names (None: not found)."""
        draft = self.draft(target.draft)
        meter = draft.meters[target.meter % len(draft.meters)]
        key = self.key(target.draft, meter)
        if target.how == "bad_id":
            return {"id": f"no-such-event-{target.draft}"}, None
        if target.how == "unknown_key":
            return {"meterId": self.meters[meter]["id"], "idempotency": "never-sent"}, None
        if key is None:  # keyless: by id only, once stored
            stored = next(
                (
                    s
                    for s in self.model.events
                    if s.payload == self.payload(target.draft, meter, "same")
                ),
                None,
            )
            return ({"id": stored.id}, stored) if stored else (None, None)
        stored = self.model.by_key.get(key)
        if target.how == "id" and stored is not None:
            return {"id": stored.id}, stored
        if target.how == "meterId":
            return {"meterId": self.meters[meter]["id"], "idempotency": key[1]}, stored
        return {"eventName": self.meters[meter]["eventName"], "idempotency": key[1]}, stored


# --- the brute force ----------------------------------------------------------------------------


def _unit(instant: datetime, zone: ZoneInfo, size: str) -> tuple:
    local = instant.astimezone(zone)
    assert local.utcoffset() % GRID == timedelta(0), "the grid scan needs 15-minute offsets"  # type: ignore[operator]
    if size == "month":
        return local.year, local.month
    if size == "day":
        return local.year, local.month, local.day
    return local.year, local.month, local.day, local.hour, local.utcoffset()


def windows_of(start: datetime, end: datetime, zone: ZoneInfo, size: str | None):
    """[start, end) cut wherever the local hour (at one offset), day or month changes."""
    if size is None:
        return [(start, end)]
    edges = [start]
    moment = EPOCH + ((start - EPOCH) // GRID + 1) * GRID
    while moment < end:
        if _unit(moment - MICRO, zone, size) != _unit(moment, zone, size):
            edges.append(moment)
        moment += GRID
    return list(zip(edges, edges[1:] + [end]))


class OneOf:
    """Equal to any of several values: `last` over events sharing the latest timestamp."""

    def __init__(self, values):
        self.values = values

    def __eq__(self, other):
        return other in self.values

    def __repr__(self):
        return f"OneOf({sorted(self.values)})"


def aggregate(meter: int, events: list[Stored]):
    kind, unique_by = METERS[meter]
    values = [e.payload.value for e in events]
    if kind == "sum":
        return sum(values)
    if kind == "count":
        return len(events)
    if kind == "unique_count":
        return len({e.field(unique_by) for e in events})  # type: ignore[arg-type]
    if not events:
        return None
    if kind == "min":
        return min(values)
    if kind == "max":
        return max(values)
    if kind == "avg":
        return pytest.approx(sum(values) / len(values))
    latest = max(e.payload.at for e in events)  # type: ignore[type-var]
    tied = {e.payload.value for e in events if e.payload.at == latest}
    return tied.pop() if len(tied) == 1 else OneOf(tied)


def expected_summary(model: Model, query: Query, start: datetime, end: datetime):
    """(value, eventCount, windows) by brute force over the model's live events."""
    selected = [
        e
        for e in model.events
        if e.live
        and e.payload.meter == query.meter
        and start <= e.payload.at < end  # type: ignore[operator]
        and (query.user is None or e.payload.user == query.user)
        and all(e.field(name) in allowed for name, allowed in query.filters)
    ]
    value = aggregate(query.meter, selected)
    if query.window is None and not query.group_by:
        return value, len(selected), None
    cuts = windows_of(start, end, ZoneInfo(query.zone), query.window)
    starts = [s for s, _ in cuts]
    buckets: dict[tuple, list] = defaultdict(list)
    for event in selected:
        index = bisect.bisect_right(starts, event.payload.at) - 1
        buckets[index, tuple(event.field(name) for name in query.group_by)].append(event)
    keys = sorted(buckets) if query.group_by else [(i, ()) for i in range(len(cuts))]
    windows = [
        (
            cuts[i][0],
            cuts[i][1],
            aggregate(query.meter, buckets.get((i, group), [])),
            len(buckets.get((i, group), [])),
            dict(zip(query.group_by, group)),
        )
        for i, group in keys
    ]
    return value, len(selected), windows


# --- summaries ----------------------------------------------------------------------------------


def _bound(span: Span, bound: Bound | None, end: bool) -> tuple[str | None, datetime | None]:
    """The query text of a period bound and the instant the service must read from it."""
    if bound is None:
        return None, None
    at = span.instant(bound.at)
    if bound.style == "date":
        day = at.date()
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return day.isoformat(), midnight + timedelta(days=1) if end else midnight
    return (_utc_text(at) if bound.style == "Z" else _instant_text(at, 1 + at.minute % 3)), at


def query_params(player: Player, query: Query):
    """(params, start, end) of a query: bounds in order, windows not too many."""
    span = player.span
    first, last = query.start, query.end
    if first and last and _bound(span, last, True)[1] <= _bound(span, first, False)[1]:  # type: ignore[operator]
        first, last = last, first
    (start_text, start), (end_text, end) = _bound(span, first, False), _bound(span, last, True)
    if query.window and start is None:
        start_text, start = _utc_text(span.low), span.low
    if start and end and end <= start:
        end_text, end = None, None
    if query.window == "hour" and end is None and datetime.now(UTC) - start > timedelta(days=60):  # type: ignore[operator]
        end_text, end = _utc_text(start + timedelta(days=9)), start + timedelta(days=9)  # type: ignore[arg-type, assignment, operator]
    params = [("meterId", player.meters[query.meter]["id"])]
    params += [
        (name, text)
        for name, text in (
            ("userId", query.user),
            ("periodStart", start_text),
            ("periodEnd", end_text),
        )
        if text is not None
    ]
    if query.window:
        params.append(("windowSize", query.window))
    if query.zone != "UTC" or query.zone_given:
        params.append(("timeZone", query.zone))
    params += [("groupBy", name) for name in query.group_by]
    params += [(f"filter[{name}]", value) for name, values in query.filters for value in values]
    return params, start, end


def _ceil_grid(moment: datetime) -> datetime:
    return EPOCH - (EPOCH - moment) // GRID * GRID


def _exact(value):
    """A summary value read back: integers beyond 2**53 - 1 come as exact decimal strings,
    the rest as JSON numbers (or null)."""
    if isinstance(value, str):
        assert abs(int(value)) > (1 << 53) - 1 and str(int(value)) == value, value
        return int(value)
    assert not isinstance(value, int) or abs(value) <= (1 << 53) - 1, value
    return value


def _windows(windows, zone: ZoneInfo):
    """The answer's windows as ((start, end) in UTC, value, eventCount, groupBy)."""
    if windows is None:
        return None
    parsed = []
    for window in windows:
        start, end = (datetime.fromisoformat(window[f]) for f in ("windowStart", "windowEnd"))
        for moment in (start, end):  # written in the request's zone
            assert moment.utcoffset() == moment.astimezone(zone).utcoffset(), window
        parsed.append(
            (
                start.astimezone(UTC),
                end.astimezone(UTC),
                _exact(window["value"]),
                window["eventCount"],
                window["groupBy"],
            )
        )
    return parsed


def check_summary(player: Player, query: Query) -> None:
    params, start, end = query_params(player, query)
    before = datetime.now(UTC)
    answer = player.api.get("/v1/billing/meter-events/summary", params=params)
    after = datetime.now(UTC)
    context = f"GET summary {params} over {len(player.model.events)} stored events"
    assert answer.status_code == 200, (context, answer.text)
    body = answer.json()
    assert (body["meterId"], body["aggregationType"], body["userId"]) == (
        player.meters[query.meter]["id"],
        METERS[query.meter][0],
        query.user or "",
    )
    assert (body["periodStart"], body["periodEnd"]) == (
        start and _utc_text(start),
        end and _utc_text(end),
    ), context
    assert ("windows" in body) == bool(query.window or query.group_by), context
    got_windows = _windows(body.get("windows"), ZoneInfo(query.zone))
    # Without periodEnd the period ends at the first slot boundary after the service's clock
    # plus the clock lead it accepts (5 minutes), so that no accepted event is left out.
    lead = timedelta(minutes=5)
    ends = [end] if end else sorted({_ceil_grid(before + lead), _ceil_grid(after + lead)})
    for candidate in ends:
        value, count, windows = expected_summary(player.model, query, start or EPOCH, candidate)
        if windows == got_windows:
            break
    assert (_exact(body["value"]), body["eventCount"]) == (value, count), context
    if windows is not None:
        assert len(got_windows) == len(windows), (context, got_windows, windows)
        for got, want in zip(got_windows, windows):
            assert got == want, (context, got, want)


# --- the property -----------------------------------------------------------------------------

# CI replays the same 10 plans every run; METERING_PROPERTY_EXAMPLES=N draws N fresh ones
# (a longer hunt, e.g. after changing the engine).
HUNT = int(os.environ.get("METERING_PROPERTY_EXAMPLES", "0"))


@settings(
    max_examples=HUNT or 10,
    deadline=None,
    derandomize=not HUNT,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(plan=plans)
def test_summaries_match_a_brute_force_over_exactly_once_streams(venue, admin, ndb_client, plan):
    org = _new_org(admin)

    def compact_rollups():  # what `metering rollups compact ORG` does, in this process
        with ndb_client.context(namespace=org["namespace"]):
            compact.compact_org()

    player = Player(Api(venue.url, org["apiKey"]), plan, venue.span(plan), compact_rollups)
    player.play()
    for query in plan.queries:
        check_summary(player, query)


def test_the_brute_force_cuts_windows_at_local_clock_changes():
    """The oracle itself, on facts checked by hand."""
    new_york, lord_howe = ZoneInfo("America/New_York"), ZoneInfo("Australia/Lord_Howe")
    fall_back = windows_of(
        datetime(2025, 11, 2, 4, tzinfo=UTC), datetime(2025, 11, 3, 5, tzinfo=UTC), new_york, "hour"
    )
    assert len(fall_back) == 25  # 01:00 lived twice, at -04:00 then at -05:00
    assert fall_back[1:3] == [  # 05:00Z is 01:00 EDT, 06:00Z is 01:00 EST
        (datetime(2025, 11, 2, 5, tzinfo=UTC), datetime(2025, 11, 2, 6, tzinfo=UTC)),
        (datetime(2025, 11, 2, 6, tzinfo=UTC), datetime(2025, 11, 2, 7, tzinfo=UTC)),
    ]
    assert windows_of(
        datetime(2026, 4, 4, 14, tzinfo=UTC),
        datetime(2026, 4, 4, 16, tzinfo=UTC),
        lord_howe,
        "hour",
    ) == [  # 01:00 at +11, then 01:30-02:00 at +10:30
        (datetime(2026, 4, 4, 14, tzinfo=UTC), datetime(2026, 4, 4, 15, tzinfo=UTC)),
        (datetime(2026, 4, 4, 15, tzinfo=UTC), datetime(2026, 4, 4, 15, 30, tzinfo=UTC)),
        (datetime(2026, 4, 4, 15, 30, tzinfo=UTC), datetime(2026, 4, 4, 16, tzinfo=UTC)),
    ]
    days = windows_of(
        datetime(2026, 3, 7, 5, 7, 13, tzinfo=UTC),
        datetime(2026, 3, 10, tzinfo=UTC),
        new_york,
        "day",
    )
    assert [e - s for s, e in days] == [  # clipped, spring-forward day, clipped
        timedelta(hours=23, minutes=52, seconds=47),
        timedelta(hours=23),
        timedelta(hours=20),
    ]
    kathmandu = windows_of(
        datetime(2026, 1, 31, tzinfo=UTC),
        datetime(2026, 2, 2, tzinfo=UTC),
        ZoneInfo("Asia/Kathmandu"),
        "month",
    )
    assert [s for s, _ in kathmandu][1] == datetime(2026, 1, 31, 18, 15, tzinfo=UTC)


# --- bugs found while writing this test, in their smallest form ---------------------------------


def _event(meter, **fields):
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    return {
        "meterId": meter["id"],
        "userId": "u1",
        "value": 3,
        "timestamp": _utc_text(at),
        "idempotency": "k",
        **fields,
    }


@pytest.mark.parametrize("first_copy", ["another value", "no timestamp"])
def test_an_exact_retry_after_another_copy_in_one_batch_is_a_duplicate(api, first_copy):
    meter = api.create_meter()
    event = _event(meter)
    api.record(event)
    if first_copy == "another value":
        copy, status = dict(event, value=4), "conflict"
    else:
        copy, status = {k: v for k, v in event.items() if k != "timestamp"}, "duplicate"
    outcomes = api.record(copy, event)["events"]
    assert [o["status"] for o in outcomes] == [status, "duplicate"]


def test_user_and_a_user_filter_both_narrow_the_summary(api):
    meter = api.create_meter()
    api.record(
        _event(meter, userId="alice", idempotency="a"), _event(meter, userId="bob", idempotency="b")
    )
    answer = api.get(
        "/v1/billing/meter-events/summary",
        params=[("meterId", meter["id"]), ("userId", "alice"), ("filter[userId]", "bob")],
    )
    assert (answer.json()["value"], answer.json()["eventCount"]) == (0, 0)


def test_sums_beyond_int64_in_one_slot_stay_exact(api):
    """Were a 500 (one request) or saturated at 2**63-1 (several) on Firestore."""
    meter = api.create_meter()
    top = (1 << 63) - 1
    api.record(_event(meter, value=top, idempotency="a"), _event(meter, value=top, idempotency="b"))
    api.record(_event(meter, value=top, idempotency="c"))  # all in one 15-minute slot
    assert api.summary(meterId=meter["id"])["value"] == str(3 * top)  # exact, as a string
