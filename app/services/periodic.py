"""The periodic work of the service, bounded per call so one cron request fits its deadline.

Compaction of every org: rollups get dirty only where ingestion's fast path wrote,
and ingestion accepts events of the last `max_event_age` days only, so the dirty
rollups are always the recent days. One call folds at most `budget` rollups, at
most one page per org, visiting the orgs in a random order: over repeated calls
every org gets its turn even when a few busy orgs could use the whole budget.

One org's failure is that org's alone: it is logged with the org's name, listed in
the answer's `failed`, and the loop goes on with the others. A registry name this
release refuses (an older release accepted `evil\n`) is listed without being tried,
since Datastore refuses it as a namespace; `metering orgs check` lists such entries.

A call also stops, cleanly, when its request nears its deadline (`app.deadline`):
each rollup is folded in its own transaction, so stopping between two rollups (or
inside one, which rolls it back) loses nothing; the answer reports what was done
with `complete: false`, and the next call goes on.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from google.api_core import exceptions as core_exceptions
from google.cloud import ndb

from app import deadline
from app.errors import ApiError, DeadlineExceeded
from app.models import Namespace, ids
from app.services import compact
from app.services.alerts import evaluate
from app.services.orgs import is_valid_org_name
from app.services.webhooks import dispatch, registry

log = logging.getLogger(__name__)


@dataclass
class CompactionRun:
    """What one bounded compaction call did."""

    orgs: int = 0
    visited: int = 0
    compacted: int = 0
    complete: bool = True
    failed: list[str] = field(default_factory=list)


#: Seconds before the deadline at which no further rollup is started.
STOP_MARGIN_SECONDS = 1.0


def _time_is_short() -> bool:
    left = deadline.remaining()
    return left is not None and left < STOP_MARGIN_SECONDS


def org_names() -> list[str]:
    """Names of every live org."""
    query = Namespace.query(
        Namespace.deleted == False,  # noqa: E712
        namespace=ids.REGISTRY_NAMESPACE,
    )
    return [key.id() for key in query.iter(keys_only=True)]


def compact_all_orgs(budget: int, per_org: int = compact.PAGE) -> CompactionRun:
    """Fold up to `budget` dirty rollups, over all orgs; `complete` if none was left."""
    names = org_names()
    random.shuffle(names)
    run = CompactionRun(orgs=len(names))
    for name in names:
        left = budget - run.visited
        if left <= 0:
            run.complete = False
            break
        if not is_valid_org_name(name):
            log.error("compaction skipped org %r: not a valid org name", name)
            run.failed.append(name)
            continue
        try:
            finished = _compact_page(name, min(per_org, left), run)
        except (DeadlineExceeded, core_exceptions.DeadlineExceeded):
            finished = False  # out of time mid-rollup: its transaction is rolled back
        except ApiError:
            raise  # the request's own failure, not this org's
        except Exception:
            log.exception("compaction failed for org %r; continuing with the others", name)
            run.failed.append(name)
            run.complete = False
            continue
        if not finished:
            run.complete = False
            break
    return run


def _compact_page(name: str, limit: int, run: CompactionRun) -> bool:
    """Fold up to `limit` dirty rollups of one org, counting into run; False if time ran
    short before the page was done."""
    with ndb.get_context().new(namespace=name).use():
        keys = compact.dirty_keys(limit=limit)
        for key in keys:
            if _time_is_short():
                return False
            run.compacted += compact.compact_one(key)
            run.visited += 1
    if len(keys) == limit:  # maybe more in this org
        run.complete = False
    return True


# -- issue 14: deliveries (alert evaluation, then due webhook messages) -------------------


@dataclass
class DeliveryRun:
    """What one bounded delivery call did, over every registered org."""

    orgs: int = 0
    evaluated: int = 0
    sent: int = 0
    delivered: int = 0
    undelivered: int = 0
    complete: bool = True
    failed: list[str] = field(default_factory=list)
    #: Orgs visited that had nothing to do (no feed, no due message), and those that had
    #: some: the background loops visit the former less often (`background._IdleOrgs`).
    quiet: list[str] = field(default_factory=list)
    active: list[str] = field(default_factory=list)


def _sends_in_time(budget: int, settings: dispatch.Settings) -> int:
    """At most the sends that end before the request's deadline even if every endpoint
    hangs to its timeout (MAX_SENDERS at a time); the next call sends the rest."""
    left = deadline.remaining()
    if left is None:
        return budget
    rounds = int((left - STOP_MARGIN_SECONDS) // (settings.timeout_seconds + 1))
    return max(0, min(budget, dispatch.MAX_SENDERS * rounds))


def deliver_all_orgs(
    budget: int,
    *,
    settings: dispatch.Settings | None = None,
    now: datetime | None = None,
    wait: bool = True,
    only: set[str] | None = None,
    evaluate_budget: int | None = None,
    evaluate_seconds: float | None = None,
    evaluate_pace: float = 0.0,
    send: bool = True,
    evaluate_feeds: bool = True,
    due: Callable[[list[str]], list[str]] | None = None,
) -> DeliveryRun:
    """For each org with endpoints or alert rules, in its namespace: evaluate its pending
    alert feeds (up to `budget`), then send its due messages (up to `budget`). One org's
    failure is logged and listed, and the others go on. `wait=False` (the background loop)
    returns while sends are under way: each is leased, so no later round sends it again.
    `only` limits the call to those orgs (the loop's round for the orgs a commit woke).
    `evaluate_budget` (default `budget`) bounds the feeds evaluated per org before its
    sends, and `evaluate_seconds` the time (no chunk started past it): the background
    loop evaluates about a second of chunks, sends what they announced, and comes back at
    once for the rest, so that the first crossings of a backlog of feeds are not held
    until the whole backlog is evaluated (`benchmarks/alerts_exact.py`). `evaluate_pace`
    (the background loop's METERING_ALERT_ROUND_SPACING_SECONDS) spaces an org's rounds
    under sustained traffic (`evaluate_org(pace=...)`).

    Without `wait`, the evaluator hands each chunk's messages to this process's senders
    from its commit (`evaluate_org(hand_off=...)`). The background loop splits the call
    in two threads: its evaluation rounds pass `send=False` (no query for due messages
    between two chunks: what a commit stored is handed off or wakes the sender), and its
    sender's timed pass `evaluate_feeds=False` (retries coming due). `due` (the loops'
    timed passes) picks, of every registered org, those to visit this time."""
    if settings is None:
        from flask import current_app  # lazy: only a request's call needs the app

        settings = dispatch.Settings.of(current_app.config["METERING"])
    names = sorted(only) if only is not None else registry.orgs()
    if due is not None:
        names = due(names)
    random.shuffle(names)
    run = DeliveryRun(orgs=len(names))
    for name in names:
        if _time_is_short():
            run.complete = False
            break
        if not is_valid_org_name(name):
            run.failed.append(name)
            continue
        try:
            with ndb.get_context().new(namespace=name).use():
                evaluating = evaluate_budget or budget
                evaluated = (
                    evaluate.evaluate_org(
                        evaluating,
                        evaluate_seconds,
                        hand_off=None if wait else settings,
                        pace=evaluate_pace,
                    )
                    if evaluate_feeds
                    else 0
                )
                run.evaluated += evaluated
                if evaluated >= evaluating or (evaluate_seconds is not None and evaluated):
                    run.complete = False  # maybe more pending: come back at once
                if not send:
                    (run.active if evaluated else run.quiet).append(name)
                    continue
                evaluate.sweep_old_state()
                sends = _sends_in_time(budget, settings) if wait else budget
                if sends == 0:  # not enough time left for one send to time out
                    run.complete = False
                    break
                done = dispatch.dispatch_org(sends, settings, now=now, wait=wait)
        except ApiError:
            raise  # the request's own failure, not this org's
        except Exception:
            log.exception("delivery failed for org %r; continuing with the others", name)
            run.failed.append(name)
            run.complete = False
            continue
        (run.active if evaluated or done.found else run.quiet).append(name)
        run.sent += done.leased
        run.delivered += done.delivered
        run.undelivered += done.undelivered
        if done.more:
            run.complete = False
    return run
