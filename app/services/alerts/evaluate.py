"""Evaluating alert rules from the usage feed: tallies, crossings, exactly once.

`evaluate_org(budget)` visits the current org's meters that have rules. Per meter, one
evaluator at a time (an `alert-lease` taken in a transaction, expiring after
LEASE_SECONDS, so a crashed one only delays): it takes up to `budget` pending feeds,
adds their contributions to the tallies they touch, and in ONE transaction per chunk
writes the tallies, inserts an `alert-trigger` and its outbox messages for each
threshold newly reached (or, with notifyOnResolve, left), and deletes the applied feeds.

Exactly once does not rest on the lease: the transaction reads the chunk's feeds and
tallies again, so a feed is applied once (a second applier finds it gone and starts
over) and a threshold's state moves once. Trigger and message ids are a hash of
(rule, subject, period, threshold, generation, type): a second detection of one
crossing would write the same keys, never a second message.

A tally that cannot be built from feeds alone is seeded from the summary engine
(`seed`): a period that began before the rule could have had its feed, a max tally after
a cancel, and every unique_count tally whenever touched (distinct values do not add up).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import current_app, has_app_context
from google.api_core import exceptions as core_exceptions
from google.cloud import ndb

from app import timeline
from app.config import Config
from app.core.aggregation import Aggregation
from app.core.slots import from_micros, micros
from app.models import (
    AlertFeed,
    AlertLease,
    AlertRule,
    AlertTrigger,
    root_key,
    transactional,
    utcnow,
)
from app.schemas import format_time
from app.services.alerts import feed as feed_kind
from app.services.alerts import retention, seed, tallies
from app.services.alerts import rules as rule_service
from app.services.alerts.periods import base32, digest, period_of
from app.services.webhooks import dispatch, outbox
from app.storage import entities, journal, queries, rpc

log = logging.getLogger(__name__)

#: Short: a killed evaluator delays its meters' alerts by this much at most (its process
#: keeps the lease between rounds, so a SIGKILL leaves one behind), and an evaluation
#: outliving its lease is still exactly once (the transaction re-reads).
LEASE_SECONDS = 5.0
#: A held lease is taken again (renewed) once less than this much of it is left (in this
#: process's reckoning, which ends a second early): a busy meter's lease costs one
#: transaction every two seconds.
RENEW_BEFORE_SECONDS = 2.0
#: A process lets go of a meter's lease once it found nothing pending this long after it
#: last applied a feed of it; until then it keeps it between rounds (see `_acquire`).
IDLE_RELEASE_SECONDS = 2.0
#: How long a process believes another one holds a meter's lease (it peeked) before it
#: looks again: the holder evaluates every pending feed, this process's ones included.
OTHER_HOLDER_RECHECK_SECONDS = 1.0
#: Feeds read per chunk; a chunk whose commit would exceed MAX_MUTATIONS is halved.
CHUNK_FEEDS = 200
MAX_MUTATIONS = 500
TRIGGERED, RESOLVED = "alert.triggered", "alert.resolved"


class EvaluationFailed(Exception):
    """Every meter the call tried failed (logged each): the caller lists the org as failed."""


class _Stale(Exception):
    """The chunk changed under us (a feed applied, a tally made elsewhere): start over."""


@dataclass(frozen=True)
class _Plan:
    """A rule's fields that every touched tally asks for, read from NDB once per chunk:
    reading them through NDB properties (a JSON shadow field decoded on every read) for
    every tally twice a chunk was most of the evaluator's CPU once tallies were bucketed
    (benchmarks/alerts_eval.py --profile)."""

    rule_id: str
    thresholds: tuple[tuple[int, str], ...]  # (threshold, its key in a tally's states)
    notify_on_resolve: bool
    meter_id: str


def _plans(rules: list[AlertRule]) -> tuple[_Plan, ...]:
    return tuple(
        _Plan(
            rule.id_,
            tuple((threshold, str(threshold)) for threshold in rule.thresholds),
            bool(rule.notify_on_resolve),
            rule.meter_id,
        )
        for rule in rules
    )


@dataclass(slots=True)
class Touch:
    """What a chunk adds to one tally: `ident` (spec, subject, period start) names it in
    a chunk; `key_name`, its stored name, is hashed only where a stored name is needed
    (an own entity, a feed applied in parts): hashing every touched tally's name was a
    tenth of a chunk's CPU (py-spy, session 11)."""

    ident: tuple[str, str | None, datetime]
    bucket: str  # the key name of the bucket its tally lives in (`tallies`)
    spec: str
    rules: list[AlertRule]
    subject: str | None
    start: datetime
    end: datetime
    watch: rule_service.Watch
    #: The spec's rules as plain values (`_plans`), and the earliest `spec_since` of them.
    plans: tuple[_Plan, ...] = ()
    since: datetime | None = None
    sum: int = 0
    count: int = 0
    max: int | None = None
    recompute: bool = False
    seeded: seed.Seed | None = None
    #: The stored tally the seed replaces (`_version`): it must not change until the commit.
    seeded_over: tuple[Any, ...] | None = None
    #: The lowest threshold of the spec's rules (`_state_changes`' shortcut).
    lowest: int = 0
    #: `_basis`, once asked (the settings are those of one evaluation call).
    basis: datetime | None = None
    #: What the plan reckoned (`_planned_mutations`): (the stored tally it read, value,
    #: states, state changes), for the commit to take when it reads the same tally.
    planned: tuple[Any, ...] | None = None

    @property
    def key_name(self) -> str:
        return tallies.tally_name(self.spec, self.subject, self.start)


@dataclass
class _Settings:
    #: A spec's rule taken + this: every batch committed since wrote its feed (the rule
    #: cache's TTL, and the longest a batch can take from reading it to its commit).
    complete: timedelta
    #: How far in the future an event's timestamp may lie.
    lead: timedelta
    #: Set (the background loop): the messages of a chunk are leased in its commit and
    #: handed to this process's senders at once (`dispatch.hand_off`).
    hand_off: dispatch.Settings | None = None
    #: The org's webhook endpoints by event type, read once per `evaluate_org` call.
    targets: dict[str, list[Any]] | None = None


def _settings(hand_off: dispatch.Settings | None = None) -> _Settings:
    config = current_app.config["METERING"] if has_app_context() else Config.from_env()
    complete = timedelta(seconds=config.alert_rule_cache_seconds) + timedelta(
        seconds=config.request_deadline_seconds or 60
    )
    return _Settings(complete=complete, lead=config.max_event_lead, hand_off=hand_off)


def evaluate_org(
    budget: int,
    seconds: float | None = None,
    hand_off: dispatch.Settings | None = None,
    pace: float = 0.0,
) -> int:
    """Apply up to `budget` pending feeds of the current org; how many were applied. With
    `seconds`, no chunk is started once that long has passed (one chunk at least): the
    background loop sends what a chunk announced before it evaluates the next. With
    `hand_off` (the background loop), a chunk's messages leave for this process's senders
    from its commit, without a dispatch round in between. With `pace` (the background
    loop), a round that follows one which caught up with the org's feeds less than `pace`
    seconds before does nothing (`_paced`): the feeds gather into the next round."""
    began = time.monotonic()
    until = None if seconds is None else began + seconds
    if _others_evaluate_it() or _paced(pace, began):
        return 0
    # The idle loops' usual answer, in one keys-only RPC. A process that holds a lease of
    # the org skips it: each meter's check reads its pending feeds anyway (session 13).
    if not _leases_until.after(began) and not _org_pending():
        _let_go_idle()
        return 0
    all_rules = rule_service.current_rules()
    if not all_rules:
        _let_go_idle()
        return 0
    by_meter: dict[str, list[AlertRule]] = {}
    for rule in all_rules:
        by_meter.setdefault(rule.meter_id, [])
        if not rule.deleted:
            by_meter[rule.meter_id].append(rule)
    settings = _settings(hand_off)
    applied = 0
    failed: list[str] = []
    caught_up = True
    for meter_id, rules in by_meter.items():
        if applied >= budget:
            caught_up = False
            break
        release = _acquire(meter_id)
        if release is None:
            continue  # another evaluator has the meter: it applies every pending feed
        try:
            done, drained = _evaluate_meter(
                meter_id, rules, budget - applied, settings, until, once=pace > 0
            )
            applied += done
            caught_up = caught_up and drained
        except Exception:
            failed.append(meter_id)
            log.exception("alert evaluation failed for meter %s; its feeds wait", meter_id)
        finally:
            release()
    if failed and not applied:
        raise EvaluationFailed(f"alert evaluation failed for meters {', '.join(failed)}")
    _note_other_holders(list(by_meter))
    if applied and caught_up:
        _note_round(began)
    return applied


def sweep_old_state() -> None:
    """Delete the current org's alert state that is no longer needed: old-shape tallies
    and periods long over (each at most once per process, org and 10 minutes). Not part
    of `evaluate_org`: the background loop's evaluation rounds are what a crossing waits
    for, and a sweep is a few round trips; the cron call and the sender's timed pass do
    it (`periodic.deliver_all_orgs`)."""
    try:
        tallies.sweep_legacy()
    except Exception as error:  # noqa: BLE001  (the next visit sweeps again)
        log.warning("could not sweep old-shape alert tallies: %s", error)
    retention.sweep()  # logs its own failure


# -- the lease -------------------------------------------------------------------------
# One evaluator per meter at a time, for speed only (exactly once rests on the chunk's
# transaction). A process keeps a lease it took between rounds, renewing it once less
# than RENEW_BEFORE_SECONDS of it is left, and lets go once the meter has been idle
# IDLE_RELEASE_SECONDS: taking and releasing it in transactions at every round was 6 of
# a woken round's ~17 round trips, and on a busy emulator each costs a tenth of a second
# or more (`benchmarks/alerts_exact.py`). Another process that finds it held (one
# lookup, then remembered OTHER_HOLDER_RECHECK_SECONDS) skips the meter: the holder's
# rounds apply every pending feed, that process's included. Threads of one process share
# the process's lease, one at a time (a lock per meter).


@dataclass
class _Held:
    """This process's view of one meter's lease."""

    lock: threading.Lock
    until: float = 0.0  # monotonic: while above now, this process holds the lease
    #: The first chunk's feeds, read by the check for pending ones (`_lease_for_round`),
    #: or left by the last round's last chunk, cut to fit one commit (`_evaluate_meter`).
    prefetched: list[Any] | None = None
    #: Whether `prefetched` held every feed pending when it was read (never for a rest
    #: left by a round: feeds came since).
    prefetched_complete: bool = False
    others_until: float = 0.0  # monotonic: until then, believe another process holds it
    last_applied: float = 0.0
    #: Mutations per feed that the meter's last planned chunk spent on crossings
    #: (triggers and their messages): `_feeds_that_fit`.
    crossings_per_feed: float = 0.0


class _PerOrg:
    """A moment (monotonic) per org (namespace) of this process, forgotten all at once
    past 10,000 orgs: what the evaluator remembers between rounds, without a round trip."""

    def __init__(self) -> None:
        self._moments: dict[str, float] = {}

    def get(self) -> float | None:
        return self._moments.get(ndb.get_context().get_namespace() or "")

    def set(self, moment: float | None) -> None:
        """Remember `moment` for the current org (None: forget it)."""
        namespace = ndb.get_context().get_namespace() or ""
        with _held_lock:
            if moment is None:
                self._moments.pop(namespace, None)
                return
            if len(self._moments) > 10_000:
                self._moments.clear()
            self._moments[namespace] = moment

    def raise_to(self, moment: float) -> None:
        """Remember `moment` for the current org unless a later one is remembered: one
        step under the lock, so two threads raising it at once keep the later."""
        namespace = ndb.get_context().get_namespace() or ""
        with _held_lock:
            known = self._moments.get(namespace)
            if known is not None and known >= moment:
                return
            if len(self._moments) > 10_000:
                self._moments.clear()
            self._moments[namespace] = moment

    def after(self, now: float) -> bool:
        """Whether the current org's moment is later than `now`."""
        moment = self.get()
        return moment is not None and moment > now


#: namespace -> until when (monotonic) this process holds a lease of one of the org's
#: meters, at most (a lease let go early leaves it later than it is: harmless)
_leases_until = _PerOrg()
_held: dict[tuple[str, str], _Held] = {}
_held_lock = threading.Lock()
_holder: tuple[int, str] | None = None


def held_orgs() -> set[str]:
    """The orgs (namespaces) of the meter leases this process holds now."""
    now = time.monotonic()
    with _held_lock:
        return {namespace for (namespace, _meter), held in _held.items() if held.until > now}


def _process_holder() -> str:
    """This process's lease holder name (a forked child gets its own)."""
    global _holder
    if _holder is None or _holder[0] != os.getpid():
        _holder = (os.getpid(), f"{os.getpid()}-{uuid.uuid4().hex}")
    return _holder[1]


def _held_of(meter_id: str) -> _Held:
    key = (ndb.get_context().get_namespace() or "", meter_id)
    with _held_lock:
        held = _held.get(key)
        if held is None:
            if len(_held) > 10_000:
                _held.clear()
            held = _held[key] = _Held(threading.Lock())
        return held


def _acquire(meter_id: str) -> Any:
    """Take the meter for this thread: a callable that gives it back, or None when
    another thread or process has it or nothing is pending (then a lease held since
    the meter went idle is released)."""
    held = _held_of(meter_id)
    if not held.lock.acquire(blocking=False):
        return None
    try:
        if not _lease_for_round(meter_id, held):
            held.lock.release()
            return None
    except BaseException:
        held.lock.release()
        raise
    return held.lock.release


def _lease_for_round(meter_id: str, held: _Held) -> bool:
    """Whether this process holds the meter's lease for a round with feeds to apply.
    While it holds the lease, the check for pending feeds reads the first chunk, and the
    lease is renewed when due; before (session 13), a renewal round read a pending key,
    renewed, then read the chunk, and a held meter found idle was asked twice."""
    now = time.monotonic()
    if held.until > now:
        if held.prefetched is None:  # not left by the last round (`_evaluate_meter`)
            held.prefetched = _pending(meter_id, CHUNK_FEEDS) or None
            held.prefetched_complete = len(held.prefetched or ()) < CHUNK_FEEDS
        if held.prefetched is None:
            if now - held.last_applied >= IDLE_RELEASE_SECONDS:
                held.until = 0.0
                _let_go(meter_id)
            return False  # nothing to do (the loop visits idle orgs every second)
        if held.until - now <= RENEW_BEFORE_SECONDS:
            _renew(meter_id)
            _hold_until(held, now + LEASE_SECONDS - 1.0)  # a second short: the clocks differ
        return True
    if held.others_until > now or not _pending(meter_id, 1, keys_only=True):
        return False  # another process holds it, or nothing to do: no lease written
    if not _take(meter_id):
        held.until, held.others_until = 0.0, now + OTHER_HOLDER_RECHECK_SECONDS
        return False
    _hold_until(held, now + LEASE_SECONDS - 1.0)
    return True


def _hold_until(held: _Held, until: float) -> None:
    held.until = until
    _leases_until.raise_to(until)


def _take(meter_id: str) -> bool:
    """Take the meter's lease for this process, without a transaction's locks where it
    can: a free lease is created with an insert (of two processes inserting at once,
    one is refused at once), and only an expired one of another process is taken over
    in a transaction. Before (a transaction every time), the two workers' evaluators
    woken by the same first batches locked each other out until the emulator's lock
    timeout (2 s; `benchmarks/alerts_exact.py`)."""
    holder = _process_holder()
    current = _lease_key(meter_id).get()
    if current is None:
        taken = _insert_lease(meter_id, holder)
    elif current.holder != holder and current.until > utcnow():
        return False
    else:
        taken = _take_lease(meter_id, holder)
    if taken:  # a restart after a kill releases it at once (app/storage/journal.py)
        journal.held(_lease_key(meter_id).urlsafe().decode(), holder)
    return taken


def _insert_lease(meter_id: str, holder: str) -> bool:
    """Create the meter's lease; False when it exists already (another process took it)."""
    mutation = rpc.Mutation()
    entities.fill_key(mutation.insert.key, AlertLease._get_kind(), meter_id)
    entities.set_string(mutation.insert, "Holder", holder, indexed=False)
    entities.set_time(mutation.insert, "Until", utcnow() + timedelta(seconds=LEASE_SECONDS))
    mutation.insert.properties["Until"].exclude_from_indexes = True
    try:
        rpc.commit([mutation])
    except core_exceptions.GoogleAPICallError:  # it exists: another process inserted it
        return False
    return True


def _renew(meter_id: str) -> None:
    """Extend the lease this process holds (and still has time on): a plain write, since
    no other process takes a lease that has not expired."""
    until = utcnow() + timedelta(seconds=LEASE_SECONDS)
    try:
        AlertLease(key=_lease_key(meter_id), holder=_process_holder(), until=until).put()
    except Exception as error:  # noqa: BLE001  (it runs out: another process may take it)
        log.warning("could not renew an alert lease: %s", error)


def _let_go(meter_id: str) -> None:
    """Delete the lease this process holds (and still has time on): a plain delete."""
    holder = _process_holder()
    try:
        _lease_key(meter_id).delete()
    except Exception as error:  # noqa: BLE001  (it expires by itself)
        log.warning("could not release an alert lease (it expires): %s", error)
    else:
        journal.let_go(_lease_key(meter_id).urlsafe().decode(), holder)


# -- issue 14, session 10: the idle loops' checks ------------------------------------
# An idle worker's loops visit every registered org every second, and the evaluation
# loop every POLL_SECONDS the orgs of the leases it holds. Before, each visit read the
# org's rules (20 entities through NDB) and made an NDB query per meter: with 20 rules
# on one meter that was a few percent of a core per worker with no traffic at all
# (benchmarks/idle_loops.py), and `benchmarks/ingest.py` never saw the service go quiet.
# Now a visit first asks, in one raw keys-only RPC, whether the org has any feed; only
# then are its rules read. A lease held with nothing pending is let go as before.
_FEED_KIND = AlertFeed._get_kind()
_EQUAL = queries.Operator.EQUAL


def _org_pending() -> bool:
    """Whether the current org has any alert feed left to apply (of any meter)."""
    return bool(queries.first_keys(_FEED_KIND, [], 1))


def _let_go_idle() -> None:
    """Let go of the current org's leases this process holds on meters idle for
    IDLE_RELEASE_SECONDS (what `_lease_for_round` does for a meter found with nothing
    pending), skipping a meter another thread of this process is evaluating."""
    namespace = ndb.get_context().get_namespace() or ""
    now = time.monotonic()
    with _held_lock:
        idle = [
            (meter_id, held)
            for (org, meter_id), held in _held.items()
            if org == namespace and held.until > now
        ]
    for meter_id, held in idle:
        if now - held.last_applied < IDLE_RELEASE_SECONDS or not held.lock.acquire(False):
            continue
        try:
            if held.until > now:
                held.until, held.prefetched = 0.0, None
                _let_go(meter_id)
        finally:
            held.lock.release()


#: namespace -> until when (monotonic) other processes hold the lease of every meter of
#: the org this process last looked at (`_note_other_holders`)
_others_hold = _PerOrg()


def _note_other_holders(meter_ids: list[str]) -> None:
    """Remember until when, if at all, another process holds every one of these meters
    (the current org's, with rules): the holder applies every pending feed of them, this
    process's included. Until then this process's wakes for the org (one per batch it
    records) skip evaluation without a round trip: each cost two (pending feeds, rule
    version) in `benchmarks/ingest.py` (session 11). A meter new to the org is found by
    its holder's loop, or by this one's first wake after that time."""
    now = time.monotonic()
    helds = [_held_of(meter_id) for meter_id in meter_ids]
    if helds and all(held.until <= now < held.others_until for held in helds):
        _others_hold.set(min(held.others_until for held in helds))
    else:
        _others_hold.set(None)


def _others_evaluate_it() -> bool:
    """Whether other processes hold every meter of the current org (`_note_other_holders`)."""
    return _others_hold.after(time.monotonic())


# -- issue 14, session 12: paced rounds ----------------------------------------------
# The background loop started a round at every wake and poll (0.2 s), so a burst of
# batches was applied in chunks of about ten feeds, four or five a second. A chunk's cost
# follows the tallies it touches, and a user met by several batches of one chunk is one
# touch: in `benchmarks/ingest.py`'s spread load a chunk of ten feeds touched 1.3 tallies
# per event, one of the whole second's forty feeds 0.5. And each chunk rewrites its
# buckets, which Cloud Datastore takes at about one write per second per entity
# sustained. So once a round has caught up with an org's feeds, the loop's next round of
# that org waits until `pace` seconds after it began; a round that left feeds (its budget
# or its time ran out) is followed at once, and a meter idle for longer than `pace` is
# evaluated at its first wake, so pacing costs latency only under sustained traffic.

#: namespace -> when (monotonic) this process's last round of the org that applied feeds
#: and caught up with them began
_rounds = _PerOrg()


def _paced(pace: float, now: float) -> bool:
    """Whether the current org's last caught-up round began less than `pace` s before."""
    return pace > 0 and _rounds.after(now - pace)


def _note_round(began: float) -> None:
    _rounds.set(began)


def _note_applied(meter_id: str) -> None:
    _held_of(meter_id).last_applied = time.monotonic()


def _lease_key(meter_id: str) -> ndb.Key:
    return ndb.Key("alert-lease", meter_id, parent=root_key())


def _take_lease(meter_id: str, holder: str) -> bool:
    """Take over an expired lease (or renew this process's own), in a transaction."""

    @transactional(retries=3)
    def take() -> bool:
        now = utcnow()
        lease = _lease_key(meter_id).get()
        if lease is not None and lease.holder != holder and lease.until > now:
            return False
        AlertLease(
            key=_lease_key(meter_id), holder=holder, until=now + timedelta(seconds=LEASE_SECONDS)
        ).put()
        return True

    try:
        return bool(take())
    except Exception:  # noqa: BLE001  (contention: another evaluator is taking it)
        return False


# -- one meter -------------------------------------------------------------------------


def _pending(meter_id: str, limit: int, keys_only: bool = False) -> list[Any]:
    """Up to `limit` pending feeds of the meter (`keys_only`: raw keys, for a check)."""
    if keys_only:
        return queries.first_keys(_FEED_KIND, [("MeterId", _EQUAL, meter_id)], limit)
    # raw: NDB's query machinery, then its models, were a tenth of a chunk's CPU each
    found = queries.first_entities(_FEED_KIND, [("MeterId", _EQUAL, meter_id)], limit)
    return [feed_kind.Pending(entity) for entity in found]


def _evaluate_meter(
    meter_id: str,
    rules: list[AlertRule],
    budget: int,
    settings: _Settings,
    until: float | None = None,
    once: bool = False,
) -> tuple[int, bool]:
    """(feeds applied, whether it caught up: none was pending when it last looked). With
    `once` (a paced round), a chunk that held every feed pending when it was read ends
    the round: the feeds recorded since wait for the next (`_paced`). Before, a round
    went on reading what arrived while it applied a chunk, and a burst of batches was
    applied in chunks of a few feeds each."""
    applied = 0
    stale = 0
    held = _held_of(meter_id)
    #: the feeds of the last read that its chunk left (it was cut to fit one commit), and
    #: whether that read held every feed pending then
    rest: list[feed_kind.Pending] = []
    rest_complete = False
    while applied < budget:
        if applied and until is not None and time.monotonic() >= until:
            break
        if rest and not stale:
            feeds, complete, rest = rest, rest_complete, []
        else:
            prefetched, held.prefetched = held.prefetched, None
            if prefetched is None or stale:
                feeds = _pending(meter_id, CHUNK_FEEDS)
                complete = len(feeds) < CHUNK_FEEDS
            else:
                feeds, complete = prefetched, held.prefetched_complete
            timeline.note("feeds read", meter=meter_id, feeds=len(feeds))
        if not feeds:
            return applied, True
        every = complete and len(feeds) <= budget - applied
        feeds = feeds[: budget - applied]
        fit = _feeds_that_fit(held)
        if len(feeds) > fit:
            # the rest is the next chunk's, not read again (session 16: a chunk cut to
            # 30 of 100 pending feeds read the other 70 again, each a batch's events)
            feeds, rest, rest_complete, every = feeds[:fit], feeds[fit:], complete, False
        if not rules:  # every rule of the meter archived: nothing to evaluate them for
            ndb.delete_multi([f.key for f in feeds])
            applied += len(feeds)
            continue
        try:
            applied += _apply_chunk(meter_id, rules, feeds, settings)
            _note_applied(meter_id)
            if once and every:
                return applied, True
        except _Stale:
            stale += 1
            if stale > 5:
                break
    if rest and not stale:  # the next round's first chunk, not read again
        held.prefetched, held.prefetched_complete = rest[:KEPT_FOR_NEXT_ROUND], False
    return applied, False


#: Feeds a round that ran out of time leaves to the meter's next round (the rest of its
#: last read, past the chunk it applied last): about two chunks under a burst of
#: crossings, and a bound on what a process keeps per meter between rounds.
KEPT_FOR_NEXT_ROUND = 50


#: Mutations a chunk's commit keeps for its buckets (and old-shape tallies folded in)
#: when `_feeds_that_fit` cuts a chunk: at most BUCKETS per (spec, period) touched.
BUCKET_RESERVE = 100


def _feeds_that_fit(held: _Held) -> int:
    """How many feeds the meter's next chunk should hold so that its commit stays under
    MAX_MUTATIONS, from its last chunk's crossings per feed (session 12): with thresholds
    crossed by one event in three (`benchmarks/ingest.py`'s dense rules) a paced chunk of
    forty feeds was planned whole, found too big, and planned again in halves, and
    again, three times its planning for one commit's worth. A chunk still found too big
    is halved as before (`_halves`)."""
    if held.crossings_per_feed <= 0:
        return CHUNK_FEEDS
    room = MAX_MUTATIONS - BUCKET_RESERVE
    return max(1, min(CHUNK_FEEDS, int(room / (1 + held.crossings_per_feed))))


def _apply_chunk(
    meter_id: str,
    rules: list[AlertRule],
    feeds: list[feed_kind.Pending],
    settings: _Settings,
    seeds: dict[Ident, tuple[seed.Seed, Any]] | None = None,
) -> int:
    """Apply `feeds` in one transaction, or in halves when one commit would be too big
    (planned before the transaction: `_planned_mutations`). The halves reuse the seeds
    read for the whole chunk, which are all at one cut: a half's tally that the other
    half has not written since (same `_version`) is seeded right by it, and the others
    are read again."""
    began = time.thread_time()
    timeline.note("chunk begins", feeds=len(feeds))
    meter = seed.meter_of(meter_id)
    aggregation = meter.aggregation_type  # an NDB property: read once, not per tally
    touches = _touches(feeds, rules)
    legacy = tallies.legacy_possible()
    stored = tallies.read(touches.values(), legacy, remembered=True)
    timeline.note("chunk tallies read", touches=len(touches))
    now = utcnow()
    if not legacy and _seed_periods(meter, touches, stored, settings, now):
        stored = tallies.read(touches.values(), legacy)
        timeline.note("chunk periods seeded whole")
    existing = stored.tallies
    seeds = {} if seeds is None else seeds
    seeding = [
        touch
        for name, touch in touches.items()
        if _needs_seed(
            touch, existing[name], aggregation, settings, now, _whole(stored, touch, now)
        )
    ]
    unread = [
        touch
        for touch in seeding
        if touch.ident not in seeds or seeds[touch.ident][1] != _version(existing[touch.ident])
    ]
    try:
        read = seed.seed_all(meter, unread, seed.SINGLE_SEEDS if len(feeds) > 1 else None)
    except seed.TooManySingle:  # fewer feeds meet fewer tallies: each half on its own
        return _halves(meter_id, rules, feeds, settings, seeds)
    if unread:
        timeline.note("chunk tallies seeded", tallies=len(unread))
    for touch, seeded in zip(unread, read):
        seeds[touch.ident] = (seeded, _version(existing[touch.ident]))
    for touch in seeding:
        touch.seeded, touch.seeded_over = seeds[touch.ident]
    for name, touch in touches.items():
        if touch.seeded is None and existing[name] is None:
            provisional = _provisional(stored, touch, now, _basis(touch, settings))
            if provisional is not None:
                touch.seeded, touch.seeded_over = provisional, None
    if settings.targets is None:  # read once per evaluation call, when first needed
        settings.targets = _Targets()
    targets = settings.targets
    planned, crossing = _planned_mutations(feeds, touches, stored, aggregation, targets)
    timeline.note("chunk planned", feeds=len(feeds), touches=len(touches), mutations=planned)
    _held_of(meter_id).crossings_per_feed = crossing / len(feeds)
    if len(feeds) > 1 and planned > MAX_MUTATIONS:
        return _halves(meter_id, rules, feeds, settings, seeds)
    try:
        applied = _commit_chunk(meter, feeds, touches, targets, settings, now, legacy)
        _chunk_sizes.count(len(feeds), time.thread_time() - began)
        return applied
    except _TooBig:  # the tallies changed since they were planned
        if len(feeds) == 1:
            in_order = sorted(touches.values(), key=lambda touch: touch.bucket)
            return _commit_in_parts(meter, feeds[0], in_order, targets, settings, now, legacy)
        return _halves(meter_id, rules, feeds, settings, seeds)


class _Targets(dict[str, list[Any]]):
    """A chunk's endpoints per message type, read when its first crossing of that type is
    planned (`_planned_mutations`): most chunks cross nothing, and reading them for
    every chunk was two queries of its few RPCs. A crossing met only inside the commit's
    transaction (the tallies changed since planned) starts the chunk over (`_Stale`):
    the endpoints are read outside transactions."""

    def __missing__(self, kind: str) -> list[Any]:
        found = self[kind] = outbox.targets(kind)
        return found


#: How often a process logs the sizes of the chunks it applied (`_ChunkSizes`).
CHUNK_REPORT_SECONDS = 10.0


class _ChunkSizes:
    """Feeds per applied chunk, logged (INFO, `alert chunks`) at most every
    CHUNK_REPORT_SECONDS per process: what one chunk costs depends on its size, and the
    loop's wakes decide it (benchmarks/ingest.py prints their totals)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sizes: Counter[int] = Counter()
        self._cpu = 0.0
        self._since = time.monotonic()

    def count(self, feeds: int, cpu: float) -> None:
        """A chunk of `feeds` applied, its thread's CPU seconds (seeds and commit included)."""
        now = time.monotonic()
        with self._lock:
            self._sizes[feeds] += 1
            self._cpu += cpu
            if now - self._since < CHUNK_REPORT_SECONDS:
                return
            sizes, self._sizes, self._since = self._sizes, Counter(), now
            spent, self._cpu = self._cpu, 0.0
        report = {
            "feedsPerChunk": {str(n): c for n, c in sorted(sizes.items())},
            "cpuSeconds": round(spent, 4),
        }
        log.info("alert chunks: %s", json.dumps(report))


_chunk_sizes = _ChunkSizes()


def _halves(
    meter_id: str,
    rules: list[AlertRule],
    feeds: list[feed_kind.Pending],
    settings: _Settings,
    seeds: dict[Ident, tuple[seed.Seed, Any]],
) -> int:
    half = len(feeds) // 2
    return _apply_chunk(meter_id, rules, feeds[:half], settings, seeds) + _apply_chunk(
        meter_id, rules, feeds[half:], settings, seeds
    )


def _planned_mutations(
    feeds: list[feed_kind.Pending],
    touches: dict[Ident, Touch],
    stored: tallies.Read,
    aggregation: str,
    targets: dict[str, list[Any]],
) -> tuple[int, int]:
    """The mutations the chunk's commit will hold if its tallies do not change meanwhile:
    its feeds deleted, its tallies' buckets (and old-shape tallies folded in), each
    crossing's trigger and messages; and how many of them are the crossings'. Splitting
    a chunk here costs nothing read; a commit found too big inside the transaction has
    read everything for nothing (on the emulator, most of a second a time)."""
    crossing = 0
    for name, touch in touches.items():
        tally = stored.tallies[name]
        value = _value_after(tally, touch, aggregation)
        states = tally.states if tally is not None else {}
        changes, states = _state_changes(touch.plans, value, states, touch.lowest)
        touch.planned = (tally, value, states, changes)
        for _rule, _threshold, _generation, kind in changes:
            crossing += 1 + len(targets[kind])
    return len(feeds) + tallies.planned_writes(stored, touches.values()) + crossing, crossing


def _applied(
    tally: tallies.Tally | None, touch: Touch, aggregation: str, basis: datetime, now: datetime
) -> tuple[tallies.Tally, list[Crossing]]:
    """The tally with the chunk applied, and its crossings. When the commit read the very
    tally object the plan did (`tallies.Bucket.tally`: the bucket is unchanged), the
    plan's reckoning (`_planned_mutations`) is taken instead of done again."""
    planned = touch.planned
    if planned is None or planned[0] is not tally:
        updated = _updated(tally, touch, aggregation, basis)
        return updated, _crossings(updated, touch, now)
    _tally, value, states, changes = planned
    # the plan's own tally is reckoned in the commit's fast path; here it is a new one
    seeded_at = touch.seeded.at if touch.seeded is not None else None
    updated = tallies.Tally(value, states, seeded_at, basis)
    return updated, _triggers(changes, touch, value, now)


class _TooBig(Exception):
    """One commit would hold more than MAX_MUTATIONS mutations."""


def _commit_in_parts(
    meter: Any,
    feed: feed_kind.Pending,
    touches: list[Touch],
    targets: dict[str, list[Any]],
    settings: _Settings,
    decided: datetime,
    legacy: bool,
    last: bool = True,
) -> int:
    """Apply one feed too big for one commit (a batch of many users under many specs) in
    several: each part's transaction writes some tallies and records their names in the
    feed (`done`), the last one deletes it. A part whose tallies the feed already lists
    was applied by someone else: `_Stale`."""
    try:
        in_part = {t.ident: t for t in touches}
        return _commit_chunk(meter, [feed], in_part, targets, settings, decided, legacy, last)
    except _TooBig:
        if len(touches) == 1:
            raise
        half = len(touches) // 2
        first, rest = touches[:half], touches[half:]
        _commit_in_parts(meter, feed, first, targets, settings, decided, legacy, last=False)
        return _commit_in_parts(meter, feed, rest, targets, settings, decided, legacy, last)


Ident = tuple[str, str | None, datetime]  # (spec, subject, period start): `Touch.ident`


def _touches(feeds: Iterable[feed_kind.Pending], rules: list[AlertRule]) -> dict[Ident, Touch]:
    """(spec, subject, period start) -> what `feeds` add to that tally, over every active
    rule's spec. Asked for every contribution of every feed and spec, so kept to plain
    lookups: a spec without a filter or a one-user scope counts everything, and no name
    is hashed unless a feed was applied in parts (`benchmarks/alerts_eval.py --profile`)."""
    specs: dict[str, list[AlertRule]] = {}
    for rule in rules:
        specs.setdefault(rule_service.spec_of(rule), []).append(rule)
    watches = []
    for spec, of_spec in specs.items():
        watch = rule_service.watch_of(spec, of_spec[0])
        plans = _plans(of_spec)
        # a plain datetime: NDB's (with nanoseconds) made every `_basis` sum slow
        since = from_micros(micros(min(rule.spec_since or rule.created_at for rule in of_spec)))
        lowest = min(threshold for plan in plans for threshold, _name in plan.thresholds)
        every = watch.scope != "one" and not watch.filter
        watches.append((watch, of_spec, plans, since, lowest, every, watch.scope == "org"))
    touches: dict[Ident, Touch] = {}
    horizon = retention.tally_horizon()
    for feed in feeds:
        done = _done(feed)
        recompute = bool(feed.recompute)
        for user, dimensions, day, slot, total, count, high in feed_kind.decode(feed.contributions):
            for watch, of_spec, plans, since, lowest, every, org in watches:
                if not every and not watch.counts(user, dimensions):
                    continue
                subject = None if org else user
                start, end = period_of(day, slot, watch.period, watch.time_zone)
                ident = (watch.spec, subject, start)
                if done and tally_name(*ident) in done:
                    continue  # a part of this feed already applied (`_commit_in_parts`)
                touch = touches.get(ident)
                if touch is None:
                    if start < horizon:
                        continue  # over for alerts, its tally maybe swept (`retention`)
                    bucket = tallies.bucket_name(watch.spec, start, subject)
                    touch = touches[ident] = Touch(
                        ident, bucket, watch.spec, of_spec, subject, start, end, watch, plans, since
                    )
                    touch.lowest = lowest
                touch.sum += total
                touch.count += count
                if high is not None and (touch.max is None or high > touch.max):
                    touch.max = high
                if recompute:
                    touch.recompute = True
    return touches


def _parts_applied_since(
    found: list[feed_kind.Pending], planned: list[feed_kind.Pending], touches: dict[Ident, Touch]
) -> bool:
    """Whether a part of a feed applied since the chunk was planned (another evaluator's
    `_commit_in_parts`) holds one of the chunk's tallies. Parts applied before the plan
    are not: `_touches` left those feeds' shares of them out, and the other feeds' shares
    of the same tallies count. (Checking every applied part gave up, at every try, a
    chunk holding a feed left half applied by a dead evaluator and a later feed adding to
    one of its applied tallies: the meter's feeds stayed pending.)"""
    names = {touch.key_name for touch in touches.values()}
    return any((_done(fresh) - _done(before)) & names for fresh, before in zip(found, planned))


def _done(feed: feed_kind.Pending) -> set[str]:
    """Tally names a part of this feed was applied to (`_commit_in_parts`)."""
    return set(json.loads(feed.done)) if feed.done else set()


tally_name = tallies.tally_name


def complete_after(rules: list[AlertRule], settings: _Settings) -> datetime:
    """From when on every batch of the spec's meter surely wrote its feed: the earliest
    time one of its active rules took the spec (created, or its filter changed), plus the
    rule cache's TTL and the request deadline."""
    since = min(rule.spec_since or rule.created_at for rule in rules)
    return since + settings.complete  # type: ignore[no-any-return]


def _basis(touch: Touch, settings: _Settings) -> datetime:
    """`complete_after` of the touch's rules, from the values read once per chunk
    (remembered on the touch: it is asked several times per tally)."""
    if touch.basis is None:
        if touch.since is None:
            touch.basis = complete_after(touch.rules, settings)
        else:
            touch.basis = touch.since + settings.complete
    return touch.basis


def _whole(stored: tallies.Read, touch: Touch, now: datetime) -> datetime | None:
    """The basis under which the touch's (spec, period) was seeded whole, if it was and
    that still holds: a read made before the basis holds until the basis has passed."""
    bucket = stored.buckets[touch.bucket]
    if bucket.whole is not None and bucket.whole_at is not None and now >= bucket.whole:
        return None
    return bucket.whole


def _provisional(
    stored: tallies.Read, touch: Touch, now: datetime, basis: datetime
) -> seed.Seed | None:
    """For a new tally of a (spec, period) seeded whole before its basis: its seed (0 at
    that read's cut: its user had no value then, and every feed since is added), so that
    it is read again once the basis has passed, like any tally seeded before it."""
    bucket = stored.buckets[touch.bucket]
    if bucket.whole_at is None or _whole(stored, touch, now) != basis:
        return None
    return seed.Seed(0, bucket.whole_at)


def _seed_periods(
    meter: Any,
    touches: dict[Ident, Touch],
    stored: tallies.Read,
    settings: _Settings,
    now: datetime,
) -> bool:
    """Seed whole each per-user (spec, period) where the chunk meets a new tally that
    needs a seed (`_needs_seed`): every user's value at one cut, stored in the period's
    buckets (`tallies.store_periods`). A user new to the period later needs no seed of its
    own. Before the basis (the rule's first half minute, when tenants record the most
    against it and each chunk met users new to its periods) the read is provisional: it
    holds until the basis has passed, then the period is seeded whole again, and the
    tallies made under it are each read again once, as any tally seeded before its
    basis (`_provisional`). Before, each chunk meeting new users read
    every user's rollups of the period again (`seed._grouped_values`): in
    `benchmarks/ingest.py`'s rounds, thousands of entities per 100-event batch. Whether
    any period was stored (then the chunk reads its tallies again)."""
    if meter.aggregation_type not in (Aggregation.SUM, Aggregation.COUNT, Aggregation.MAX):
        return False  # unique_count tallies are seeded at every touch anyway
    periods: dict[tuple[str, datetime], Touch] = {}
    for name, touch in touches.items():
        basis = _basis(touch, settings)
        if (
            touch.watch.scope == "user"
            and stored.tallies[name] is None
            and _whole(stored, touch, now) != basis
            and _needs_seed(touch, None, meter.aggregation_type, settings, now)
        ):
            periods.setdefault((touch.spec, touch.start), touch)
    if not periods:
        return False
    bases = [_basis(touch, settings) for touch in periods.values()]
    found = seed.seed_periods(meter, list(periods.values()), max(bases))
    if found is None:
        return False
    seeded, values = found
    wanted = [
        (spec, start, _basis(touch, settings), values[(spec, start)])
        for (spec, start), touch in periods.items()
    ]
    return bool(tallies.store_periods(wanted, seeded, meter.id_))


def _needs_seed(
    touch: Touch,
    tally: tallies.Tally | None,
    aggregation: str,
    settings: _Settings,
    now: datetime,
    whole: datetime | None = None,
) -> bool:
    """Whether the tally must be read from the summary engine: always for unique_count, for
    max after a cancel; a new tally of a period that may hold events recorded before every
    batch wrote a feed (future timestamps included); one built under another basis (its
    spec may have gone unwatched: the earliest rule archived, then others); and one seeded
    before its basis, once the basis has passed (a batch of a process whose rule cache was
    stale may have committed since without a feed: that one re-read takes it in; until
    then the value may be short, never over). Not more often: right after a rule is
    created is when a tenant records the most against it, and re-reading every touched
    tally then (once a second each, an earlier version) made the evaluator fall tens of
    seconds behind (`benchmarks/alerts_exact.py`). A new tally of a period seeded whole
    under its basis (`whole`, `_seed_periods`) needs none: its user had no value at that
    cut, and every event since wrote a feed."""
    basis = _basis(touch, settings)
    if aggregation == Aggregation.UNIQUE_COUNT:
        return True
    if aggregation == Aggregation.MAX and touch.recompute:
        return True
    if tally is None:
        return touch.start < basis + settings.lead and whole != basis
    if tally.basis != basis:
        return True
    if tally.seeded_at is None or tally.seeded_at >= basis:
        return False
    return now >= basis


def _version(tally: tallies.Tally | None) -> tuple[Any, ...] | None:
    """What tells two states of a stored tally apart."""
    if tally is None:
        return None
    return (tally.value, tally.seeded_at, tally.basis, json.dumps(tally.states, sort_keys=True))


# -- the transaction -------------------------------------------------------------------


def _commit_chunk(
    meter: Any,
    feeds: list[feed_kind.Pending],
    touches: dict[Ident, Touch],
    targets: dict[str, list[Any]],
    settings: _Settings,
    decided: datetime,
    legacy: bool,
    last: bool = True,
) -> int:
    """Apply the chunk in one transaction (with `last` False, the one feed's part of it:
    see `_commit_in_parts`). It gives up (`_Stale`) when its feeds or tallies
    changed since they were read: a feed gone (another evaluator applied it), a tally that
    now needs a seed, or a seeded tally written meanwhile (the seed would overwrite what
    was added to it)."""
    feed_keys = [f.key_pb for f in feeds]
    stored_messages = [0]
    leased: list[dispatch.Leased] = []
    aggregation = meter.aggregation_type
    last_read: list[tallies.Read] = []

    def attempt(transaction: bytes) -> int:
        stored = tallies.read(touches.values(), legacy, feed_keys, transaction)
        timeline.note("chunk read again")
        last_read[:] = [stored]
        if any(f is None for f in stored.extra):
            raise _Stale()
        found = [feed_kind.Pending(f) for f in stored.extra]
        done = {name for f in found for name in _done(f)}
        if done and _parts_applied_since(found, feeds, touches):
            raise _Stale()
        now = utcnow()
        writes: list[Any] = []  # NDB entities: the triggers' messages
        crossed: list[Any] = []  # the triggers' raw upserts
        updated: list[tuple[Touch, tallies.Tally]] = []
        messages = 0
        leased.clear()  # a retried attempt builds its messages again
        found_tallies = stored.tallies
        for touch in touches.values():
            tally = found_tallies[touch.ident]
            basis = _basis(touch, settings)
            planned = touch.planned
            if tally is not None and planned is not None and planned[0] is tally:
                # the very stored tally object the plan read (its bucket is unchanged:
                # `tallies.Bucket.tally`), at the same moment (`decided`): what the plan
                # decided of it (no seed needed, or a seed read over this very tally; its
                # value, states and changes) holds
                _tally, value, states, changes = planned
                seeded_at = touch.seeded.at if touch.seeded is not None else tally.seeded_at
                updated.append((touch, tallies.Tally(value, states, seeded_at, basis)))
                if not changes:
                    continue
                crossings = _triggers(changes, touch, value, now)
            else:
                if touch.seeded is None and _needs_seed(
                    touch, tally, aggregation, settings, decided, _whole(stored, touch, decided)
                ):
                    raise _Stale()  # it changed since we looked (another evaluator): again
                if touch.seeded is not None and _version(tally) != touch.seeded_over:
                    raise _Stale()
                tally, crossings = _applied(tally, touch, aggregation, basis, now)
                updated.append((touch, tally))
            for trigger in crossings:
                crossed.append(trigger.upsert())
                endpoints = _targets_in_commit(targets, trigger.type)
                if not endpoints:
                    continue
                sent = outbox.messages(
                    endpoints, trigger.type, trigger.message_id, payload(trigger), now
                )
                writes += sent
                messages += len(sent)
                if settings.hand_off is not None:
                    leased.extend(
                        dispatch.lease_at_creation(
                            sent, targets[trigger.type], now, settings.hand_off
                        )
                    )
        mutations = tallies.writes(stored, updated, meter.id_) + crossed
        if len(writes) + len(mutations) + len(feed_keys) > MAX_MUTATIONS:
            raise _TooBig()
        if last:
            mutations += [entities.delete_raw(key) for key in feed_keys]
        else:
            [feed] = found
            applied = done | {t.key_name for t in touches.values()}
            mutations.append(feed.with_done(json.dumps(sorted(applied))))
        mutations += [outbox.upsert_of(message) for message in writes]
        _commit_journaled(mutations, transaction, leased)
        stored_messages[0] = messages
        if timeline.enabled():
            timeline.note(
                "chunk committed",
                meter=meter.id_,
                feeds=len(feed_keys),
                # which feeds (their key ids): a feed applied twice shows in two commits
                feed_ids=[key.path[-1].id for key in feed_keys] if last else [],
                messages=[entity.key.id() for entity in writes],
                handed_off=bool(leased),
            )
        return len(feed_keys) if last else 0

    def in_transaction() -> int:
        with rpc.transaction() as transaction:
            return attempt(transaction)

    # Raw, not `ndb.transaction`: NDB's futures and conversions were a third of a chunk's
    # CPU (benchmarks/alerts_eval.py, py-spy). The transaction is the same: the chunk's
    # feeds and buckets read in it, everything written in its one commit, retried when
    # it collides (`Aborted`).
    applied = rpc.retry_aborted(in_transaction, "an alert chunk's commit")
    tallies.remember_written(last_read[0])
    if leased and settings.hand_off is not None:
        outbox.forget_built()  # no round needed to send them: they leave from here
        dispatch.hand_off(leased, settings.hand_off)
    elif stored_messages[0]:
        outbox.wake()
    return applied


def _commit_journaled(
    mutations: list[Any], transaction: bytes, leased: list[dispatch.Leased]
) -> None:
    """Commit, with the messages leased in the commit (`dispatch.lease_at_creation`)
    noted in this process's journal first: a process killed between the commit and
    their hand-off leaves them to a restart to release at once, not to their leases to
    run out (`benchmarks/alerts_exact.py --restart` once saw them 20 s late). A note
    of a commit that failed releases nothing: no message holds its lease token."""
    notes = [(item.message.key.urlsafe().decode(), item.message.lease) for item in leased]
    for key, token in notes:
        journal.held(key, token)
    try:
        rpc.commit(mutations, transaction)
    except BaseException:
        for key, token in notes:
            journal.let_go(key, token)
        raise


def _targets_in_commit(targets: dict[str, list[Any]], kind: str) -> list[Any]:
    """The endpoints for `kind` inside a chunk's commit: when they were not read while
    planning (the tallies changed since), start over (`_Stale`) rather than query with
    the transaction open."""
    if kind not in targets:
        raise _Stale()
    return targets[kind]


def _updated(
    tally: tallies.Tally | None, touch: Touch, aggregation: str, basis: datetime
) -> tallies.Tally:
    """The tally with the chunk's contributions (or its seed) applied (a new object: the
    one read stays as it was, for `_version`)."""
    value = _value_after(tally, touch, aggregation)
    updated = (
        tallies.Tally()
        if tally is None
        else tallies.Tally(tally.value, tally.states, tally.seeded_at, tally.basis)
    )
    updated.basis = basis
    if touch.seeded is not None:
        updated.seeded_at = touch.seeded.at
    updated.value = value
    return updated


def _value_after(tally: tallies.Tally | None, touch: Touch, aggregation: str) -> int:
    """The tally's value once the chunk's contributions (or its seed) are applied."""
    old = int(tally.value or 0) if tally is not None else 0
    seeded = touch.seeded
    if seeded is not None:
        if aggregation == Aggregation.UNIQUE_COUNT:
            return seeded.value
        if aggregation == Aggregation.MAX:
            return max(seeded.value, touch.max or 0)
        return seeded.value + (touch.sum if aggregation == Aggregation.SUM else touch.count)
    if aggregation == Aggregation.SUM:
        return old + touch.sum
    if aggregation == Aggregation.COUNT:
        return old + touch.count
    if aggregation == Aggregation.MAX:
        return max(old, touch.max or 0)
    return old


def _state_changes(
    plans: tuple[_Plan, ...], value: int, states: dict[str, Any], lowest: int = 0
) -> tuple[list[tuple[_Plan, int, int, str]], dict[str, Any]]:
    """(rule, threshold, generation, type) of each threshold the value newly reaches, and
    (notifyOnResolve) newly leaves, and the states after them: `states` itself when
    nothing changed (never changed in place: it is the record as read, and
    `tallies.writes` keeps a record's encoded states when its states are that object),
    else a copy with the changed rules' entries replaced (a threshold without one never
    fired: generation 0). `lowest` (the lowest threshold of `plans`, or less) is the
    common case's shortcut: a tally below every threshold whose thresholds never fired
    changes nothing."""
    if value < lowest and not states:
        return [], states
    found = []
    after = states
    for plan in plans:
        of_rule = states.get(plan.rule_id)
        changed = None
        for threshold, name in plan.thresholds:
            if threshold > value and not (of_rule and plan.notify_on_resolve):
                continue  # not reached, and nothing to resolve
            triggered, generation = (of_rule.get(name) if of_rule else None) or (False, 0)
            if not triggered and value >= threshold:
                found.append((plan, threshold, generation, TRIGGERED))
                state = [True, generation]
            elif triggered and value < threshold and plan.notify_on_resolve:
                found.append((plan, threshold, generation, RESOLVED))
                state = [False, generation + 1]
            else:
                continue
            if changed is None:
                changed = dict(of_rule or {})
            changed[name] = state
        if changed is not None:
            if after is states:
                after = dict(states)
            after[plan.rule_id] = changed
    return found, after


def _crossings(tally: tallies.Tally, touch: Touch, now: datetime) -> list[Crossing]:
    """Triggers for thresholds newly reached, and (notifyOnResolve) newly left; the
    tally's per-rule states updated."""
    value = int(tally.value)
    if value < touch.lowest and not tally.states:
        return []  # below every threshold, none ever fired (`_state_changes`)
    changes, tally.states = _state_changes(touch.plans, value, tally.states, touch.lowest)
    return _triggers(changes, touch, value, now)


def _triggers(
    changes: list[tuple[_Plan, int, int, str]], touch: Touch, value: int, now: datetime
) -> list[Crossing]:
    """The triggers of a tally's state changes (`_state_changes`)."""
    return [
        _trigger(plan, touch, threshold, generation, kind, value, now)
        for plan, threshold, generation, kind in changes
    ]


@dataclass(frozen=True)
class Crossing:
    """An `alert-trigger` as a chunk writes it (`upsert`): the fields of `AlertTrigger`,
    built without NDB. Benchmarks/ingest.py's rules cross thresholds by the hundred per
    chunk, and building and converting NDB entities for them was most of a chunk's CPU
    in the service (py-spy). tests/test_raw_encoding.py checks it stores what
    `AlertTrigger.put()` would."""

    key_name: str
    alert_id: str
    type: str
    meter_id: str
    user_id: str | None
    threshold: int
    value: str
    period_start: datetime
    period_end: datetime
    at: datetime
    message_id: str
    generation: int

    def upsert(self) -> Any:
        """The raw upsert of its `alert-trigger` entity: a copy of what the chunk's
        triggers of one rule and period share (`_trigger_template`), its own fields set."""
        mutation = rpc.Mutation()
        entity = mutation.upsert
        entity.CopyFrom(
            _trigger_template(
                self.alert_id, self.type, self.meter_id, self.period_start, self.period_end,
                self.at,
            )
        )  # fmt: skip
        entities.fill_key(entity.key, _TRIGGER_KIND, self.key_name)
        props = entity.properties
        if self.user_id is None:
            props["UserId"].null_value = 0
        else:
            props["UserId"].string_value = self.user_id
        props["Value"].string_value = self.value
        props["MessageId"].string_value = self.message_id
        props["Threshold"].integer_value = self.threshold
        props["Generation"].integer_value = self.generation
        return mutation


_TRIGGER_KIND = AlertTrigger._get_kind()


@functools.lru_cache(maxsize=256)  # a chunk's triggers share a few rules and periods
def _trigger_template(
    alert_id: str,
    kind: str,
    meter_id: str,
    start: datetime,
    end: datetime,
    at: datetime,
) -> Any:
    """An `alert-trigger` entity without its key, with the fields a rule's triggers of
    one period and chunk share, and the others' index flags (`Crossing.upsert` sets
    their values).
    Setting every field of each of the hundreds of triggers a chunk of
    benchmarks/ingest.py's rules makes was a tenth of its CPU (session 11)."""
    entity = rpc.Mutation().upsert
    entities.set_string(entity, "AlertId", alert_id)
    for name, text in (("Type", kind), ("MeterId", meter_id)):
        entities.set_string(entity, name, text, indexed=False)
    for name in ("UserId", "Value", "MessageId", "Threshold", "Generation"):
        entity.properties[name].exclude_from_indexes = True
    for name, moment in (("PeriodStart", start), ("PeriodEnd", end)):
        entities.set_time(entity, name, moment)
        entity.properties[name].exclude_from_indexes = True
    entities.set_time(entity, "At", at)
    return entity


def _trigger(
    plan: _Plan,
    touch: Touch,
    threshold: int,
    generation: int,
    kind: str,
    value: int,
    now: datetime,
) -> Crossing:
    name = base32(
        digest(plan.rule_id, touch.subject, _iso(touch.start), threshold, generation, kind)
    )
    return Crossing(
        key_name="atr_" + name,
        alert_id=plan.rule_id,
        type=kind,
        meter_id=plan.meter_id,
        user_id=touch.subject,
        threshold=threshold,
        value=str(value),
        period_start=touch.start,
        period_end=touch.end,
        at=now,
        message_id="msg_" + name,
        generation=generation,
    )


@functools.lru_cache(maxsize=1024)  # a chunk's triggers share a few period starts
def _iso(moment: datetime) -> str:
    return moment.isoformat()


def _number(value: int) -> int | str:
    return value if abs(value) <= (1 << 53) - 1 else str(value)


def payload(trigger: Crossing | AlertTrigger) -> dict[str, Any]:
    """The `data` of an alert.triggered / alert.resolved message."""
    at_name = "triggeredAt" if trigger.type == TRIGGERED else "resolvedAt"
    return {
        "alertId": trigger.alert_id,
        "meterId": trigger.meter_id,
        "userId": trigger.user_id,
        "threshold": trigger.threshold,
        "value": _number(int(trigger.value)),
        "periodStart": format_time(trigger.period_start),
        "periodEnd": format_time(trigger.period_end),
        at_name: format_time(trigger.at),
    }
