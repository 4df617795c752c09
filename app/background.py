"""Compaction in the background of `metering serve`: what App Engine's cron does.

On App Engine, `cron.yaml` calls `/v1/cron/compact` every 10 minutes. A service started
with `metering serve` has no cron, and its rollups would stay unfolded until someone runs
`metering rollups compact`: still exact, but a summary then reads every shard's deltas
(a busy day of an org-wide rollup is 8 shards of 96 slots instead of one compacted
entity). So with `METERING_BACKGROUND_COMPACTION_SECONDS` above 0 (what `metering serve`
sets, unless the environment says otherwise) each worker runs the cron's bounded call
(`periodic.compact_all_orgs`) every that many seconds, jittered, in a daemon thread.
Several workers folding at once is safe: each rollup is folded in its own transaction,
and a rollup found clean is skipped. `stop(app)` ends the loop (an embedding program or a
test that serves an app and goes on).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable

from google.api_core import exceptions as core_exceptions

from app import datastore, timeline
from app.services import periodic
from app.services.alerts import evaluate
from app.services.webhooks import dispatch, outbox

log = logging.getLogger(__name__)
_EXTENSION = "background_compaction"


# -- issue 14: deliveries -------------------------------------------------------------------
# What App Engine's cron does every minute (`periodic.deliver_all_orgs`: alert evaluation,
# then due webhook messages) runs in two threads of each worker of `metering serve`:
# - `_Deliverer` evaluates: every METERING_BACKGROUND_DELIVERY_SECONDS, and at once for
#   an org whose commit stored alert feeds or messages (`outbox.wake`). A chunk's
#   messages leave from its commit (`dispatch.hand_off`), so its rounds make no query
#   for due messages between two chunks.
# - `_Sender` leases and queues an org's due messages as soon as a commit stored some
#   (`outbox.wake`), and visits every org every that many seconds for the retries that
#   came due. It does not wait for the sends (each is leased, so no later pass sends it
#   again): a hung endpoint holds a few sender threads, not the loop.
_DELIVERY_EXTENSION = "background_delivery"
_SEND_EXTENSION = "background_send"
#: Seconds of alert evaluation per round before the round sends what it announced (one
#: chunk at least): a backlog's first crossings leave with their chunk.
EVALUATE_SECONDS = 1.0
#: How often the evaluation loop looks for the feeds of meters it holds the lease of.
POLL_SECONDS = 0.2


#: The loops' timed passes visit an org that had nothing to do in its last N timed
#: visits only every min(2 ** (N - 1), IDLE_STRIDE_MAX) passes (`_IdleOrgs`).
IDLE_STRIDE_MAX = 4


class _IdleOrgs:
    """The orgs one loop's timed passes found with nothing to do, and when to visit each
    again. An idle worker's passes visited every registered org every second, one query
    each per loop: with 50 orgs that was most of a worker's idle CPU, and as much again
    in the emulator (benchmarks/idle_loops.py). A timed pass is the safety net (a feed
    or message left by a process that died, a retry coming due, a feed another process
    left to a lease that was let go meanwhile), so an org idle for a while is visited
    every IDLE_STRIDE_MAX passes at most, and at once again as soon as a commit of this
    process wakes the loop for it or a visit finds work."""

    def __init__(self, period: float, clock: Callable[[], float] = time.monotonic):
        self.period, self.clock = period, clock
        self.lock = threading.Lock()
        self.streak: dict[str, int] = {}
        self.next_visit: dict[str, float] = {}

    def due(self, names: list[str]) -> list[str]:
        """Of these orgs, the ones this timed pass visits."""
        now = self.clock()
        with self.lock:
            return [name for name in names if self.next_visit.get(name, 0.0) <= now]

    def visited(self, run: periodic.DeliveryRun) -> None:
        """Note what a timed pass found."""
        now = self.clock()
        with self.lock:
            if len(self.streak) > 10_000:
                self.streak.clear()
                self.next_visit.clear()
            for name in run.quiet:
                streak = self.streak[name] = self.streak.get(name, 0) + 1
                stride = min(2 ** (streak - 1), IDLE_STRIDE_MAX)
                self.next_visit[name] = now + self.period * (stride - 0.5)
        self.forget([*run.active, *run.failed])

    def forget(self, names: Iterable[str]) -> None:
        """These orgs had work (or a commit of this process woke the loop for them)."""
        with self.lock:
            for name in names:
                self.streak.pop(name, None)
                self.next_visit.pop(name, None)


class _Loop:
    """A thread of one app that works for the orgs a commit woke (`outbox.wake(org)`) at
    once, and for every org every METERING_BACKGROUND_DELIVERY_SECONDS (and at once after
    a pass that left work); `visit` says what it does, `only_messages` which commits wake
    it (`outbox.on_wake`)."""

    name = "metering-loop"
    only_messages = False

    def __init__(self, client, context_options: dict, config):
        self.client, self.context_options = client, context_options
        self.seconds, self.budget = config.background_delivery_seconds, config.cron_delivery_budget
        self.pace = config.alert_round_spacing_seconds
        self.settings = dispatch.Settings.background(config)
        self.stopping = threading.Event()
        self.woken = threading.Event()
        self.lock = threading.Lock()
        self.woken_orgs: set[str] = set()
        self.everyone_now = False
        self.idle = _IdleOrgs(self.seconds)
        #: org -> when (monotonic) a commit last woke the loop for it: a graceful stop's
        #: last round looks at the latest (`_Deliverer.last_pass`)
        self.recent: dict[str, float] = {}
        self.forget = outbox.on_wake(self.wake, only_messages=self.only_messages)
        self.thread = threading.Thread(target=self.run, name=self.name, daemon=True)

    def wake(self, namespace: str | None) -> None:
        """A commit of this org (None: of any org, a pass over every org) woke us."""
        with self.lock:
            if namespace is None:
                self.everyone_now = True
            else:
                self.woken_orgs.add(namespace)
        self.woken.set()

    def run(self) -> None:
        # The first pass at once: a start after a stop finds the feeds and messages its
        # predecessor left (session 15: the evaluator waited for a wake, 0.3 to 0.6 s).
        next_pass = time.monotonic()
        while not self.stopping.is_set():
            polled = self.polled_orgs()
            wait = next_pass - time.monotonic()
            self.woken.wait(max(0.0, min(wait, POLL_SECONDS) if polled else wait))
            self.woken.clear()
            if self.stopping.is_set():
                break
            with self.lock:
                self._note_recent(self.woken_orgs)
                orgs, self.woken_orgs = self.woken_orgs | polled, set()
                everyone, self.everyone_now = self.everyone_now, False
            self.idle.forget(orgs)
            if everyone or time.monotonic() >= next_pass:
                more = self.visit(None, timed=not everyone)  # the woken orgs too
                next_pass = time.monotonic() + (0.0 if more else self.seconds)
            elif orgs and self.visit(orgs):  # more left for them: theirs again at once
                with self.lock:
                    self.woken_orgs |= orgs
                self.woken.set()

    def _note_recent(self, woken: set[str]) -> None:
        now = time.monotonic()
        if len(self.recent) > 10_000:
            self.recent.clear()
        self.recent.update(dict.fromkeys(woken, now))

    def visit(self, only: set[str] | None, timed: bool = False) -> bool:
        """Work for these orgs (None: every org; `timed`: those `self.idle` picks, plus
        the woken ones); whether work is left."""
        raise NotImplementedError

    def _due(self, timed: bool) -> Callable[[list[str]], list[str]] | None:
        """What a pass visits: a timed one, the orgs `self.idle` picks (the woken ones,
        forgotten by `run` first, among them); any other, every org."""
        return self.idle.due if timed else None

    def polled_orgs(self) -> set[str]:
        """Orgs to visit every POLL_SECONDS even when no commit of this process wakes us."""
        return set()

    def stop(self, timeout: float) -> None:
        self.forget()
        self.stopping.set()
        self.woken.set()
        self.thread.join(timeout)


class _Deliverer(_Loop):
    """The evaluation loop of one app: a commit that stored feeds or messages of an org
    starts a round at once for that org alone, so the wait after a commit does not grow
    with the number of orgs. A chunk's messages are handed off from its commit, others
    wake the `_Sender`, and the retries coming due are the `_Sender`'s timed passes'."""

    name = "metering-delivery"

    def polled_orgs(self) -> set[str]:
        """The orgs whose meter leases this process holds: the batches their other
        processes record wake those processes' loops, which leave the meter to us, so we
        look for their feeds every POLL_SECONDS until the lease goes idle (2 s)."""
        return evaluate.held_orgs()

    def visit(self, only: set[str] | None, timed: bool = False) -> bool:
        began = time.monotonic()
        try:
            with self.client.context(**self.context_options):
                run = periodic.deliver_all_orgs(
                    self.budget,
                    settings=self.settings,
                    wait=False,
                    only=only,
                    evaluate_seconds=EVALUATE_SECONDS,
                    evaluate_pace=self.pace,
                    send=False,
                    due=self._due(timed),
                )
        except Exception:  # the next round retries
            log.warning("background delivery failed", exc_info=True)
            self.stopping.wait(min(self.seconds, 5.0))
            return False
        timeline.note(
            "evaluation pass",
            orgs=None if only is None else len(only),
            timed=timed,
            seconds=round(time.monotonic() - began, 4),
            complete=run.complete,
        )
        if timed:
            self.idle.visited(run)
        return not run.complete and not run.failed

    def last_pass(self, seconds: float) -> None:
        """A graceful stop's last evaluation (`drain`): the feeds of the orgs whose meter
        leases this process holds and of the LAST_PASS_ORGS orgs its commits woke last,
        unpaced, no chunk started past `seconds`."""
        with self.lock:
            self._note_recent(self.woken_orgs)
            latest = sorted(self.recent, key=self.recent.__getitem__)[-LAST_PASS_ORGS:]
        orgs = set(latest) | evaluate.held_orgs()
        if not orgs or seconds <= 0:
            return
        try:
            with self.client.context(**self.context_options):
                periodic.deliver_all_orgs(
                    self.budget,
                    settings=self.settings,
                    wait=False,
                    only=orgs,
                    evaluate_seconds=seconds,
                    send=False,
                )
        except Exception:  # the next start evaluates them
            log.warning("the last evaluation before the stop failed", exc_info=True)


class _Sender(_Loop):
    """The sends of one app, in a thread of their own: a commit that stored messages of an
    org has them leased and queued at once, while the `_Deliverer` may be in the middle
    of its second of alert evaluation (before, a crossing committed early in that second
    waited for the rest of it; `benchmarks/alerts_exact.py`, stage `commit -> receipt`).
    Only commits that stored messages wake it, not ingestion's. Its timed pass visits
    every org for the retries that came due, and sweeps old alert state (the
    `_Deliverer`'s rounds did both before, between two chunks of evaluation)."""

    name = "metering-send"
    only_messages = True

    def visit(self, only: set[str] | None, timed: bool = False) -> bool:
        if only is None:
            return self.send_all(timed)
        more = False
        for namespace in only:
            if self.stopping.is_set():
                break
            more = self.send(namespace) or more
        return more

    def send_all(self, timed: bool = False) -> bool:
        """A timed pass: every org's due messages (the retries); whether more are due."""
        try:
            with self.client.context(**self.context_options):
                run = periodic.deliver_all_orgs(
                    self.budget,
                    settings=self.settings,
                    wait=False,
                    evaluate_feeds=False,
                    due=self._due(timed),
                )
        except Exception:  # the next pass retries
            log.warning("background sending failed", exc_info=True)
            return False
        if timed:
            self.idle.visited(run)
        return not run.complete and not run.failed

    def send(self, namespace: str) -> bool:
        """Lease and queue one org's due messages; whether more are due."""
        try:
            with (
                self.client.context(**self.context_options) as context,
                context.new(namespace=namespace).use(),
            ):
                return dispatch.dispatch_org(self.budget, self.settings, wait=False).more
        except Exception:  # the next timed pass sends them
            log.warning("sending the webhook messages of %r failed", namespace, exc_info=True)
            return False


class _Compactor:
    """The loop of one app, and how to end it."""

    def __init__(self, client, context_options: dict, seconds: float, budget: int):
        self.client, self.context_options = client, context_options
        self.seconds, self.budget = seconds, budget
        self.stopping = threading.Event()
        self.jitter = random.Random()  # its own: the module's random is the program's
        self.thread = threading.Thread(target=self.run, name="metering-compaction", daemon=True)

    def run(self) -> None:
        while not self.stopping.wait(self.seconds * self.jitter.uniform(0.5, 1.5)):
            try:
                with self.client.context(**self.context_options):
                    run = periodic.compact_all_orgs(self.budget)
                if run.compacted:
                    log.info("background compaction folded %d rollups", run.compacted)
            except core_exceptions.GoogleAPICallError as error:  # the next round retries
                log.warning("background compaction failed: %s", error)


def _act_on_recovered() -> None:
    """The orgs whose messages this process's start made due again
    (`datastore.recovered`) are visited at once."""
    recovered, datastore.recovered = datastore.recovered, datastore.Recovered()
    timeline.note("loops started", taken=recovered.taken, due_orgs=len(recovered.due_orgs))
    for namespace in sorted(recovered.due_orgs):
        outbox.wake_org(namespace)


def init_app(app) -> None:
    """Start the compaction and delivery loops the configuration asks for."""
    config = app.config["METERING"]
    if config.background_delivery_seconds > 0:  # issue 14
        deliverer = _Deliverer(
            app.extensions["ndb"],
            app.extensions["ndb_context_options"],
            config,
        )
        app.extensions[_DELIVERY_EXTENSION] = deliverer
        deliverer.thread.start()
        sender = _Sender(app.extensions["ndb"], app.extensions["ndb_context_options"], config)
        app.extensions[_SEND_EXTENSION] = sender
        sender.thread.start()
        _act_on_recovered()
    if config.background_compaction_seconds <= 0:
        return
    compactor = _Compactor(
        app.extensions["ndb"],
        app.extensions["ndb_context_options"],
        config.background_compaction_seconds,
        config.cron_compact_budget,
    )
    app.extensions[_EXTENSION] = compactor
    compactor.thread.start()


#: Orgs a graceful stop's last evaluation round looks at, besides those whose meter
#: leases the process holds: those its commits woke last (one cheap query each when
#: nothing is pending).
LAST_PASS_ORGS = 50
#: Seconds a worker stopped gracefully (SIGTERM, Ctrl-C) spends on its last alert
#: evaluation and its queued webhook sends (`drain`), within gunicorn's graceful timeout
#: (7 s, `app/cli.py`; gunicorn takes up to about 2 s to end a worker's loop first).
DRAIN_SECONDS = 2.0


def drain(app, seconds: float = DRAIN_SECONDS) -> None:
    """A graceful stop's last work, for at most `seconds` (session 15): the loops stop
    (the evaluation round under way ends with its chunk, and its messages are handed
    off), one last unpaced round evaluates the feeds still pending, and the messages
    handed to this process's senders are sent and recorded. Before, a stopped worker
    left every queued message and every unevaluated feed to the next start, where they
    waited for the restart, the release of their leases and a round of the loops
    (`benchmarks/alerts_exact.py --restart --restart-signal TERM --timeline`). What is
    left at the end (a send to a hung endpoint) stays leased to this process and is
    taken over by the next start (`app/storage/journal.py`)."""
    until = time.monotonic() + seconds
    deliverer = app.extensions.pop(_DELIVERY_EXTENSION, None)
    sender = app.extensions.pop(_SEND_EXTENSION, None)
    for loop in (deliverer, sender):
        if loop is not None:
            loop.stop(max(0.0, until - time.monotonic()))
    if deliverer is not None and not deliverer.thread.is_alive():
        deliverer.last_pass(min(EVALUATE_SECONDS, until - time.monotonic()))
    left = dispatch.wait_for_sends(until)
    timeline.note("drained", unsent=left, seconds=round(seconds - (until - time.monotonic()), 3))


def stop(app, timeout: float = 30.0) -> None:
    """End the app's background loops, if it has any, and wait for a round under way."""
    deliverer = app.extensions.pop(_DELIVERY_EXTENSION, None)
    if deliverer is not None:
        deliverer.stop(timeout)
    sender = app.extensions.pop(_SEND_EXTENSION, None)
    if sender is not None:
        sender.stop(timeout)
    compactor = app.extensions.pop(_EXTENSION, None)
    if compactor is not None:
        compactor.stopping.set()
        compactor.thread.join(timeout)
