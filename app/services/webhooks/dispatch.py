"""The dispatcher: send the current org's due messages, at least once, never one attempt twice.

One call (`dispatch_org`) finds up to `budget` due messages (pending, next attempt at or
before now: an ancestor query on `Status`, `NextAttemptAt`), leases them in batches (one
transaction for up to BATCH) and queues each for its endpoint. At most `PER_ENDPOINT`
sender threads of the pool send one endpoint's messages, going from one to the next
without waiting for a commit or a round of the loop; at most `LEASED_PER_ENDPOINT` of one
endpoint are leased and not yet recorded in a process, so a hung endpoint holds a few
threads, never the pool: the others' messages go out beside it.

Leasing moves the message's next attempt to the end of the send (timeout plus a margin)
and stores a random lease token of its own: another dispatcher, in this process or
another, finds it not due, so one attempt is sent once; a sender that dies mid-send
leaves the lease to expire, and the message is sent again, with the same `webhook-id`
and body. A queued message that waited so long that its send could outlast the lease is
not sent (its lease expires, then it is sent).

Results are recorded by group commits (`_Recorder`: one transaction for every result
that arrived while the previous one committed, up to BATCH), each checking its lease
token (a late sender whose lease was taken over records nothing; the others of the batch
are recorded): 2xx is delivered; anything else, a timeout, a connection error or a
redirect (never followed) is an attempt failed, retried after the next delay of
`RETRY_DELAYS` (with jitter) and, after the last, failed for good. Every message is its
own entity, so a batch writes each once: no entity is written more than about once a
second.

Endpoints: a deleted one fails its messages with a clear error; a disabled one's messages
wait (re-checked every `PAUSED_RECHECK`; re-enabling makes them due at once); one whose
every attempt failed for `DISABLE_AFTER` is disabled, its `disabledReason` and the log
saying why. The URL is checked again at each send (`safety.resolve`) and the connection
goes to the address that was checked.
"""

from __future__ import annotations

import concurrent.futures
import heapq
import http.client
import logging
import os
import random
import secrets as _random
import socket
import ssl
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import cast

from google.cloud import ndb

from app import timeline
from app.config import Config
from app.models import transactional, utcnow
from app.models.base import root_key
from app.models.webhook import (
    DELIVERED,
    FAILED,
    MESSAGE_KIND,
    PENDING,
    WebhookEndpoint,
    WebhookMessage,
)
from app.schemas import format_time
from app.services.webhooks import outbox, safety, signing
from app.storage import entities, journal, queries, rpc

log = logging.getLogger(__name__)

#: Delays before the 2nd, 3rd, ... attempt: about 33 hours in all, then the message fails.
#: The second attempt follows the first at once: most failures are a receiver's blip (a
#: restart, a full pool), and an alert is worth most within seconds. In the background
#: loop the transaction that records the failure leases the message again and this
#: process sends it (`Settings.resend_at_once`); elsewhere it is due at once.
RETRY_DELAYS = tuple(timedelta(seconds=s) for s in (0, 5, 300, 1800, 7200, 18000, 36000, 36000))
JITTER = 0.2
#: An endpoint whose every attempt failed for this long is disabled.
DISABLE_AFTER = timedelta(days=5)
#: How often a disabled endpoint's waiting messages are looked at again.
PAUSED_RECHECK = timedelta(hours=1)
#: Bytes of an answer kept in the log (never logged whole).
RESPONSE_BODY_KEPT = 1024
#: Seconds a lease outlasts the send's timeout (recording the result, a slow thread).
LEASE_MARGIN_SECONDS = 10
MAX_SENDERS = 128
#: Messages leased in one transaction, and attempts recorded in one: a fifth of a
#: commit's 500 mutations, and with each message's log bounded (MAX_ATTEMPTS_KEPT of at
#: most RESPONSE_BODY_KEPT each) far below a commit's 10 MiB.
BATCH = 100
#: Sends to one endpoint at once, per process: a hung endpoint holds this many sender
#: threads, never the pool. A receiver must accept that many connections at once.
PER_ENDPOINT = 32
#: Messages of one endpoint leased and not yet recorded, per process (the rest wait for a
#: later round): those past the PER_ENDPOINT being sent wait in the endpoint's queue, so
#: a sender goes from one to the next without a round of the loop in between. A queued
#: message that waited so long that its send could outlast its lease is not sent (see
#: `_send_one`): for a hung endpoint, at most this many wait for their leases to expire.
LEASED_PER_ENDPOINT = 4 * PER_ENDPOINT
_senders = concurrent.futures.ThreadPoolExecutor(
    max_workers=MAX_SENDERS, thread_name_prefix="webhook-send"
)
#: Where the group commits of results run: never in a sender (it goes on to its next
#: message) and never queued behind senders of hung endpoints.
_committers = concurrent.futures.ThreadPoolExecutor(
    max_workers=4, thread_name_prefix="webhook-record"
)
_jitter = random.Random()
#: (namespace, message key id) of the messages this process handed out (leased, queued,
#: being sent or recorded), and how many each (namespace, endpoint key id) has there.
_in_flight: set[tuple[str | None, str]] = set()
_in_flight_per_endpoint: Counter[tuple[str | None, int]] = Counter()
_in_flight_lock = threading.Lock()
#: Namespaces with a message left for a later round because its endpoint was busy: the
#: next message of theirs recorded wakes the delivery loop for them.
_backlogged: set[str | None] = set()
#: Each endpoint's leased messages waiting for a sender, and its sender tasks running.
_queues: dict[tuple[str | None, int], deque[_Queued]] = {}
_sending: Counter[tuple[str | None, int]] = Counter()


@dataclass(frozen=True)
class Settings:
    """What a dispatch needs from the configuration."""

    production: bool = False
    timeout_seconds: float = 10.0
    #: Multiplies RETRY_DELAYS (tests shrink the schedule).
    retry_scale: float = 1.0
    #: A failed attempt whose next one is due at once is leased again by the transaction
    #: that records it and sent by this process (the background loop's sends; a cron
    #: call returns before such a send would end).
    resend_at_once: bool = False

    @classmethod
    def of(cls, config: Config) -> Settings:
        return cls(
            production=config.production,
            timeout_seconds=config.webhook_timeout_seconds,
            retry_scale=config.webhook_retry_scale,
        )

    @classmethod
    def background(cls, config: Config) -> Settings:
        """The background loop's sends (`app.background`, and what a start takes over
        for them): a failed attempt due again at once is resent by this process."""
        return replace(cls.of(config), resend_at_once=True)


@dataclass
class Outcome:
    """What one attempt gave."""

    status_code: int | None
    error: str | None
    response_body: str
    latency_ms: int

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass
class OrgDispatch:
    """What one dispatch of one org did; `pending` are sends still under way (wait=False)."""

    leased: int = 0
    delivered: int = 0
    undelivered: int = 0
    more: bool = False
    pending: list[concurrent.futures.Future[bool | None]] = field(default_factory=list)
    #: Due messages found (handed out, or not: in a sender already, endpoint busy).
    found: int = 0


def endpoints_by_id() -> dict[int, WebhookEndpoint]:
    """The current org's endpoints (deleted and disabled ones too) by key id."""
    found = cast(list[WebhookEndpoint], WebhookEndpoint.query(ancestor=root_key()).fetch())
    return {endpoint.key.id(): endpoint for endpoint in found}


def due_keys(now: datetime, limit: int) -> list[ndb.Key]:
    """Keys of up to `limit` of the current org's messages due at `now`, oldest due first:
    one raw keys-only query (the index NDB's same query used). The sender's timed pass
    asks it of every registered org every second, and it usually finds nothing: through
    NDB it was a few times the CPU (benchmarks/idle_loops.py)."""
    conditions: list[tuple[str, int, object]] = [
        ("Status", queries.Operator.EQUAL, PENDING),
        ("NextAttemptAt", queries.Operator.LESS_THAN_OR_EQUAL, now),
    ]
    found = queries.first_keys(MESSAGE_KIND, conditions, limit, ascending_on="NextAttemptAt")
    return [queries.ndb_key(pb) for pb in found]


def dispatch_org(
    budget: int, settings: Settings, now: datetime | None = None, wait: bool = True
) -> OrgDispatch:
    """Send up to `budget` due messages of the current org. The calling thread leases them
    in batches (`lease_many`: one transaction for up to BATCH messages) and queues each
    leased one for its endpoint, whose sender tasks (PER_ENDPOINT at most) send them one
    after another; results are recorded by group commits (`_recorder`), many per
    transaction. A slow endpoint holds only its own senders. With `wait` the call returns
    once every one is recorded (a message whose endpoint has LEASED_PER_ENDPOINT handed
    out waits for one of this call's to end); without, at once, leaving what it could
    not hand out (handed out already, or its endpoint's share taken) to a later round."""
    now = now or utcnow()
    result = OrgDispatch()
    keys = due_keys(now, budget)
    result.found = len(keys)
    if not keys:
        return result
    endpoints = endpoints_by_id()
    context = ndb.get_context()
    namespace = context.get_namespace()
    running: set[concurrent.futures.Future[bool | None]] = set()
    batch: list[ndb.Key] = []
    skipped = 0

    def start(batch: list[ndb.Key]) -> None:
        """Lease the handed-out batch and queue each leased message for its endpoint."""
        queued = [
            _Queued(context.client, leased, settings, concurrent.futures.Future())
            for leased in _lease_handed_out(namespace, batch, now, settings, endpoints)
        ]
        _enqueue_all(namespace, queued)
        running.update(item.done for item in queued)
        result.leased += 0 if wait else len(queued)
        batch.clear()

    for key in keys:
        state = _hand_out(namespace, key)
        # Its endpoint busy: a waiting call waits for one of its own sends to end first.
        while state == ENDPOINT_BUSY and wait and (running or batch):
            if batch:
                start(batch)
            if running:
                done, running = concurrent.futures.wait(
                    running, return_when=concurrent.futures.FIRST_COMPLETED
                )
                _count(result, done)
            state = _hand_out(namespace, key)
        if state == ENDPOINT_BUSY:
            with _in_flight_lock:
                _backlogged.add(namespace)
        if state != HANDED_OUT:
            skipped += 1
            continue  # a sender of this process has it, or a later round will
        batch.append(key)
        if len(batch) >= BATCH:
            start(batch)
    if batch:
        start(batch)
    if wait:
        _count(result, concurrent.futures.wait(running).done)
    else:
        result.pending = list(running)
    # More may be due past the page; not when some were left to senders already at work
    # (a round at once would only find them again: a freed sender wakes the loop).
    result.more = len(keys) == budget and not skipped
    return result


def _count(result: OrgDispatch, done: set[concurrent.futures.Future[bool | None]]) -> None:
    """Add finished sends to a dispatch's counts."""
    for future in done:
        outcome = future.result()
        if outcome is not None:
            result.leased += 1
            result.delivered += outcome
            result.undelivered += not outcome


@dataclass(frozen=True)
class Leased:
    """A message taken for one attempt: its lease token is in `message.lease`, and the
    lease ends at `until` (after it another dispatcher may take the message)."""

    message: WebhookMessage
    endpoint: WebhookEndpoint
    at: datetime
    until: datetime


def _lease_handed_out(
    namespace: str | None,
    keys: list[ndb.Key],
    now: datetime,
    settings: Settings,
    endpoints: dict[int, WebhookEndpoint],
) -> list[Leased]:
    """Lease handed-out keys; those not leased (another dispatcher has them, no longer
    due, settled without an attempt) are given back at once."""
    try:
        leased = lease_many(keys, now, settings, endpoints)
    except Exception:  # a contended lease: another dispatcher is taking them
        log.warning("could not lease %d webhook messages", len(keys), exc_info=True)
        leased = []
    taken = {item.message.key for item in leased}
    for key in keys:
        if key not in taken:
            _give_back(namespace, key)
    return leased


@dataclass
class _Queued:
    """A leased message waiting for a sender of its endpoint; `done` gets whether it was
    delivered (None: not sent) once its attempt is recorded."""

    client: ndb.Client
    leased: Leased
    settings: Settings
    done: concurrent.futures.Future[bool | None]


def _enqueue_all(namespace: str | None, items: list[_Queued]) -> None:
    """Queue leased messages for their endpoints, all under one lock; then start a
    sender task for each endpoint that has fewer than PER_ENDPOINT running (one of them
    takes each message). Queued one at a time (before session 16), the senders started
    by the first messages of a chunk's hand-off took the GIL from the evaluator that was
    still queueing its other messages."""
    for item in items:
        message = item.leased.message
        if message.lease:  # a restart after a kill makes it due at once (app/storage/journal.py)
            journal.held(message.key.urlsafe().decode(), message.lease)
        _note("queued", message)
    starts: list[tuple[str | None, int]] = []
    with _in_flight_lock:
        for item in items:
            endpoint_key = (namespace, _endpoint_key_id(item.leased.message.key))
            _queues.setdefault(endpoint_key, deque()).append(item)
            if _sending[endpoint_key] < PER_ENDPOINT:
                _sending[endpoint_key] += 1
                starts.append(endpoint_key)
    for endpoint_key in starts:
        _senders.submit(_send_queued, endpoint_key)


def _send_queued(endpoint_key: tuple[str | None, int]) -> None:
    """A sender task: send the endpoint's queued messages, one after another, until none
    is left (recording is not waited for: a group commit does it)."""
    while True:
        with _in_flight_lock:
            queue = _queues.get(endpoint_key)
            if not queue:
                _queues.pop(endpoint_key, None)
                _sending[endpoint_key] -= 1
                if _sending[endpoint_key] <= 0:
                    del _sending[endpoint_key]
                return
            item = queue.popleft()
        _send_one(endpoint_key[0], item)


def _send_one(namespace: str | None, item: _Queued) -> None:
    """Send one attempt of a leased message and hand its outcome to the recorder. Not
    sent (None) when the message waited so long that the send could outlast its lease:
    another dispatcher could then send the same attempt, so the lease is left to expire
    instead (the message is sent again then, with the same id)."""
    leased = item.leased
    message = leased.message
    try:
        with item.client.context(namespace=namespace):
            started = utcnow()
            if started > leased.at + timedelta(seconds=LEASE_MARGIN_SECONDS / 2):
                log.warning("webhook message %s waited past its lease", message.key.id())
                _finish(namespace, item, None)
                return
            at = max(leased.at, started)  # a test's later `now` is kept
            _note("sending", message)
            outcome = send(leased.endpoint, message, item.settings)
            _note("sent", message, status=outcome.status_code)
    except Exception:
        log.exception("webhook message %s: the attempt failed", message.key.id())
        _finish(namespace, item, False)
        return
    _recorder.add(
        namespace, item.client, Result(message.key, message.lease, outcome, at, item.settings, item)
    )


def _finish(namespace: str | None, item: _Queued, delivered: bool | None) -> None:
    """The message's attempt is over (recorded, or given up): free its place."""
    message = item.leased.message
    if message.lease:
        journal.let_go(message.key.urlsafe().decode(), message.lease)
    _give_back(namespace, message.key)
    item.done.set_result(delivered)


def _give_back(namespace: str | None, key: ndb.Key) -> None:
    """A handed-out message leaves this process's hands; if a round left messages for
    lack of room, wake the loop to hand them out."""
    with _in_flight_lock:
        _in_flight.discard((namespace, key.id()))
        endpoint_key = (namespace, _endpoint_key_id(key))
        _in_flight_per_endpoint[endpoint_key] -= 1
        if _in_flight_per_endpoint[endpoint_key] <= 0:
            del _in_flight_per_endpoint[endpoint_key]
        backlogged = namespace in _backlogged
        _backlogged.discard(namespace)
    if backlogged:
        outbox.wake_org(namespace)  # a sender is free: hand out what waited


def _note(step: str, message: WebhookMessage, **fields: object) -> None:
    """A timeline line of one message's send; its id (a key lookup) only when it is on."""
    if timeline.enabled():
        timeline.note(step, message=message.key.id(), **fields)


def wait_for_sends(until: float) -> int:
    """Wait until every message handed to this process's senders is sent and recorded,
    or the monotonic time `until`; how many are still out then."""
    while True:
        with _in_flight_lock:
            left = len(_in_flight)
        if not left or time.monotonic() >= until:
            return left
        time.sleep(0.02)


def _endpoint_key_id(key: ndb.Key) -> int:
    """The endpoint a message key names: `<webhook-id>.<endpoint key id>`."""
    return int(str(key.id()).rpartition(".")[2])


HANDED_OUT, IN_A_SENDER, ENDPOINT_BUSY = "handed out", "in a sender", "endpoint busy"


def _hand_out(namespace: str | None, key: ndb.Key) -> str:
    """Take the message for this process (HANDED_OUT) unless it has it already
    (IN_A_SENDER) or its endpoint has LEASED_PER_ENDPOINT handed out (ENDPOINT_BUSY)."""
    endpoint_key = (namespace, _endpoint_key_id(key))
    with _in_flight_lock:
        if (namespace, key.id()) in _in_flight:
            return IN_A_SENDER
        if _in_flight_per_endpoint[endpoint_key] >= LEASED_PER_ENDPOINT:
            return ENDPOINT_BUSY
        _in_flight.add((namespace, key.id()))
        _in_flight_per_endpoint[endpoint_key] += 1
    return HANDED_OUT


def lease_many(
    keys: list[ndb.Key],
    now: datetime,
    settings: Settings,
    endpoints: dict[int, WebhookEndpoint],
) -> list[Leased]:
    """Take due messages for one attempt each, in one transaction per BATCH: each gets its
    own lease token and its next attempt moved past the send's end, so another
    dispatcher finds it not due. A message of a deleted endpoint is failed, one of a
    disabled endpoint waits (PAUSED_RECHECK); neither is returned, nor is a message
    another dispatcher leased or settled first. Raises when a transaction could not
    commit (contention): its messages are left as they were."""
    now = max(now, utcnow())
    until = now + timedelta(seconds=settings.timeout_seconds + LEASE_MARGIN_SECONDS)
    leased: list[Leased] = []
    for first in range(0, len(keys), BATCH):
        leased += _lease_batch(keys[first : first + BATCH], now, until, endpoints)
    return leased


def _lease_batch(
    keys: list[ndb.Key], now: datetime, until: datetime, endpoints: dict[int, WebhookEndpoint]
) -> list[Leased]:
    @transactional(retries=3)
    def lease() -> list[Leased]:
        taken: list[Leased] = []
        changed: list[WebhookMessage] = []
        for message in cast(list[WebhookMessage | None], ndb.get_multi(keys)):
            if message is None or message.status != PENDING or message.next_attempt_at > now:
                continue
            endpoint = endpoints.get(_endpoint_key_id(message.key))
            if endpoint is None or endpoint.deleted:
                message.log_attempt(_attempt(now, Outcome(None, "the endpoint was deleted", "", 0)))
                message.status, message.next_attempt_at, message.lease = FAILED, None, None
                message.updated_at = now
            elif not endpoint.enabled:
                message.next_attempt_at = now + PAUSED_RECHECK  # waits; re-enabling wakes it
            else:
                message.lease = _random.token_hex(8)
                message.next_attempt_at = until
                message.updated_at = now
                taken.append(Leased(message, endpoint, now, until))
            changed.append(message)
        for item in taken:  # noted before the commit, as `_commit_journaled` does: a
            # process killed between the commit and the hand-off (`_enqueue_all`) left them
            # to wait out their leases (a token that never committed releases nothing)
            journal.held(item.message.key.urlsafe().decode(), item.message.lease)
        if changed:
            ndb.put_multi(changed)
        return taken

    taken = lease()
    if taken and timeline.enabled():
        timeline.note("leased", messages=[item.message.key.id() for item in taken])
    return taken


def lease_at_creation(
    built: list[WebhookMessage],
    targets: list[WebhookEndpoint],
    now: datetime,
    settings: Settings,
) -> list[Leased]:
    """Lease messages for their first attempt as they are built (`outbox.messages`, one
    per target, in order), to be put in the transaction that stores them: the commit
    that announces a fact also takes its first sends for this process, which then hands
    them to its senders (`hand_off`) with no query and no lease transaction in between.
    A process that dies before sending leaves the leases to expire, and any dispatcher
    sends them then, as for a lease taken by `lease_many`."""
    return [
        _lease_for_attempt(message, endpoint, now, settings)
        for message, endpoint in zip(built, targets, strict=True)
    ]


def _lease_for_attempt(
    message: WebhookMessage, endpoint: WebhookEndpoint, now: datetime, settings: Settings
) -> Leased:
    """Give the message (being written in the caller's transaction) a lease of its own
    for one attempt, ending after the send's timeout and a margin."""
    until = now + timedelta(seconds=settings.timeout_seconds + LEASE_MARGIN_SECONDS)
    message.lease = _random.token_hex(8)
    message.next_attempt_at = until
    return Leased(message, endpoint, now, until)


@dataclass
class Released:
    """What `release_stopped` did with a stopped process's leases in one org."""

    #: Messages leased anew for this process, to hand to its senders (`hand_off`).
    taken: list[Leased] = field(default_factory=list)
    #: Whether a message was made due at once (for any dispatcher's next round).
    due: bool = False


def release_stopped(
    pairs: list[tuple[ndb.Key, str]],
    settings: Settings | None,
    endpoints: dict[int, WebhookEndpoint],
) -> Released:
    """Give up, in one transaction, what a stopped process held in the current org (keys,
    each with its holder name or lease token), where it still holds it: an alert lease
    is deleted; a webhook message it had leased is, with `settings` (this process sends
    in the background), leased anew for this process (noted in its journal before the
    commit), else due at once. Either way it goes out now instead of when the old lease
    runs out (it may have been sent: the receiver drops the duplicate by its
    `webhook-id`). Taking them here spares a restarted service the round that would
    find them due and lease them again: in `benchmarks/alerts_exact.py --restart`
    (session 15) that round leased a killed service's 259 messages in four
    transactions, the last 1.4 s after they were released. A message whose endpoint is
    disabled or deleted (or missing from `endpoints`, the org's `endpoints_by_id`) is
    only made due: a dispatcher's round settles it."""
    now = utcnow()

    @transactional(retries=3)
    def release() -> Released:
        done = Released()
        changed, gone = [], []
        for (key, holder), entity in zip(pairs, ndb.get_multi([key for key, _ in pairs])):
            if isinstance(entity, WebhookMessage):
                if entity.lease != holder or entity.status != PENDING:
                    continue
                endpoint = endpoints.get(_endpoint_key_id(key))
                if (
                    settings is not None
                    and endpoint is not None
                    and endpoint.enabled
                    and not endpoint.deleted
                ):
                    done.taken.append(_lease_for_attempt(entity, endpoint, now, settings))
                else:
                    entity.lease, entity.next_attempt_at, done.due = None, now, True
                changed.append(entity)
            elif entity is not None and getattr(entity, "holder", None) == holder:
                gone.append(key)
        for item in done.taken:  # before the commit, as `_lease_batch` does
            journal.held(item.message.key.urlsafe().decode(), item.message.lease)
        ndb.put_multi(changed)
        ndb.delete_multi(gone)
        return done

    return release()


def hand_off(leased: list[Leased], settings: Settings) -> None:
    """Queue messages leased in the commit that stored them (`lease_at_creation`) for
    this process's senders, in the current org. Nobody waits for them: their results
    are recorded by the group commits like any other send. They are queued even past an
    endpoint's LEASED_PER_ENDPOINT (they are leased already): a queued one that waits
    past its lease's margin is not sent, and goes out once the lease has expired."""
    context = ndb.get_context()
    namespace = context.get_namespace()
    queued: list[_Queued] = []
    with _in_flight_lock:
        for item in leased:
            key = item.message.key
            if (namespace, key.id()) in _in_flight:
                continue
            _in_flight.add((namespace, key.id()))
            _in_flight_per_endpoint[(namespace, _endpoint_key_id(key))] += 1
            done: concurrent.futures.Future[bool | None] = concurrent.futures.Future()
            queued.append(_Queued(context.client, item, settings, done))
    _enqueue_all(namespace, queued)


def _attempt(at: datetime, outcome: Outcome) -> dict[str, object]:
    return {
        "at": format_time(at),
        "statusCode": outcome.status_code,
        "latencyMs": outcome.latency_ms,
        "error": outcome.error,
        "responseBody": outcome.response_body,
    }


def send(endpoint: WebhookEndpoint, message: WebhookMessage, settings: Settings) -> Outcome:
    """POST the message's body to the endpoint, signed with its live secrets."""
    body = message.body.encode()
    started = time.monotonic()
    try:
        target = safety.resolve(endpoint.url, settings.production)
    except safety.UnsafeUrl as refused:
        return Outcome(None, f"refused: {refused.message}", "", 0)
    headers = signing.headers(
        message.message_id,
        body,
        signing.live_secrets(endpoint.secrets, utcnow()),
        int(time.time()),
    )
    try:
        status, answer = _post(target, headers, body, settings.timeout_seconds)
    except TimeoutError:
        return Outcome(None, f"timed out after {settings.timeout_seconds:g} s", "", _ms(started))
    except (OSError, http.client.HTTPException) as error:
        return Outcome(None, _describe(error), "", _ms(started))
    text = answer.decode("utf-8", errors="replace")[:RESPONSE_BODY_KEPT]
    problem = None
    if 300 <= status < 400:
        problem = f"HTTP {status}: redirects are not followed"
    elif not 200 <= status < 300:
        problem = f"HTTP {status}"
    return Outcome(status, problem, text, _ms(started))


def _ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def _describe(error: BaseException) -> str:
    if isinstance(error, ConnectionResetError):
        return "connection reset by the endpoint"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, http.client.RemoteDisconnected):
        return "the endpoint closed the connection without answering"
    if isinstance(error, ssl.SSLError):
        return f"TLS error: {error}"
    return f"{type(error).__name__}: {error}"[:RESPONSE_BODY_KEPT]


class _OneWrite(http.client.HTTPConnection):
    """Sends a request's head and body in one write. `http.client` writes them one after
    the other, so a sender killed between the two (`benchmarks/alerts_exact.py
    --embedded --restart`, session 13) left the receiver a request with its headers and
    no body, which a receiver that verifies what it read counts as a bad signature."""

    def _send_output(self, message_body: object = None, encode_chunked: bool = False) -> None:
        if not isinstance(message_body, bytes) or encode_chunked:
            super()._send_output(message_body, encode_chunked)  # type: ignore[misc]
            return
        buffer = self._buffer  # type: ignore[attr-defined]  # http.client's request lines
        buffer.extend((b"", b""))
        head = b"\r\n".join(buffer)
        del buffer[:]
        self.send(head + message_body)


class _PinnedHTTPConnection(_OneWrite):
    """Connects to the checked address, while Host names the URL's host."""

    def __init__(self, target: safety.Target, timeout: float):
        super().__init__(target.host, target.port, timeout=timeout)
        self.address = target.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPSConnection(_OneWrite, http.client.HTTPSConnection):
    """Connects to the checked address; SNI and the certificate check use the URL's host."""

    def __init__(self, target: safety.Target, timeout: float):
        super().__init__(
            target.host, target.port, timeout=timeout, context=ssl.create_default_context()
        )
        self.address = target.address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def _post(
    target: safety.Target, headers: dict[str, str], body: bytes, timeout: float
) -> tuple[int, bytes]:
    """(status, first KiB of the answer): the whole exchange ends within `timeout` (the
    watchdog shuts the socket of an endpoint that trickles its answer)."""
    kind = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
    connection = kind(target, timeout)
    timed_out = threading.Event()

    def abort() -> None:
        timed_out.set()
        if connection.sock is not None:
            try:
                connection.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    watch = _watchdog.watch(timeout, abort)
    try:
        connection.request("POST", target.path, body=body, headers=headers)
        answer = connection.getresponse()
        return answer.status, answer.read(RESPONSE_BODY_KEPT)
    except (OSError, http.client.HTTPException):
        if timed_out.is_set():
            raise TimeoutError from None
        raise
    finally:
        _watchdog.cancel(watch)
        connection.close()


class _Watchdog:
    """One thread that calls each watched send's `abort` once its deadline has passed,
    unless it was cancelled first. Before (session 16), each send started a
    `threading.Timer` of its own: a thread started and ended per message, in the
    process whose evaluator hands the messages off. Under a burst of crossings that was
    a tenth of the process's samples (py-spy, `benchmarks/alerts_exact.py --batch 50`),
    fighting the evaluator for the GIL."""

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.deadlines: list[tuple[float, int, Callable[[], None]]] = []
        self.live: set[int] = set()  # the handles watched and not cancelled
        self.count = 0
        self.pid = 0

    def watch(self, seconds: float, abort: Callable[[], None]) -> int:
        """Call `abort` in `seconds` unless `cancel` comes first; a handle for `cancel`."""
        with self.condition:
            if self.pid != os.getpid():  # first use in this process (or a forked child)
                self.pid, self.deadlines, self.live = os.getpid(), [], set()
                threading.Thread(target=self._run, name="webhook-watchdog", daemon=True).start()
            self.count += 1
            self.live.add(self.count)
            heapq.heappush(self.deadlines, (time.monotonic() + seconds, self.count, abort))
            if self.deadlines[0][1] == self.count:
                self.condition.notify()
            return self.count

    def cancel(self, handle: int) -> None:
        with self.condition:
            self.live.discard(handle)

    def _run(self) -> None:
        with self.condition:
            while True:
                while self.deadlines and self.deadlines[0][1] not in self.live:
                    heapq.heappop(self.deadlines)
                if not self.deadlines:
                    self.condition.wait()
                    continue
                wait = self.deadlines[0][0] - time.monotonic()
                if wait > 0:
                    self.condition.wait(wait)
                    continue
                _at, handle, abort = heapq.heappop(self.deadlines)
                self.live.discard(handle)
                self.condition.release()
                try:
                    abort()
                except Exception:
                    log.warning("aborting a timed-out webhook send failed", exc_info=True)
                finally:
                    self.condition.acquire()


_watchdog = _Watchdog()


def retry_delay(failed_attempts: int, settings: Settings) -> timedelta | None:
    """The wait after the `failed_attempts`-th failed attempt, or None when it was the last."""
    if failed_attempts > len(RETRY_DELAYS):
        return None
    delay = RETRY_DELAYS[failed_attempts - 1] * settings.retry_scale
    return delay * _jitter.uniform(1 - JITTER, 1 + JITTER)


@dataclass
class Result:
    """One attempt's outcome, to record under the lease it was sent with."""

    key: ndb.Key
    lease: str | None
    outcome: Outcome
    at: datetime
    settings: Settings
    #: The queued message it came from (None: recorded directly, as `record` does).
    queued: _Queued | None = None


def record_many(results: list[Result]) -> set[ndb.Key]:
    """Log each attempt and settle its message (delivered, retried later, or failed), in
    one transaction; the keys recorded. A message whose lease is no longer the one it was
    sent with (another dispatcher took it over after the lease ran out) records nothing:
    the others of the batch are recorded all the same."""
    return _record(results)[0]


def _record(results: list[Result]) -> tuple[set[ndb.Key], list[Leased]]:
    """`record_many`, and the messages its transaction leased again for an attempt at
    once (`Settings.resend_at_once`), for this process to send. Raw reads and writes
    (session 16): NDB's transaction, lookup and put of a batch were most of the record
    threads' CPU, in the process whose evaluator handed the messages off, and each
    message is now converted once, from what was read (`entities.model_of`), and
    written as `outbox.upsert_of` builds it."""
    again: list[Leased] = []
    keys = [entities.key_of(result.key) for result in results]

    def store(transaction: bytes) -> set[ndb.Key]:
        again.clear()
        found = rpc.lookup(keys, transaction)
        changed: list[WebhookMessage] = []
        for result, key in zip(results, keys, strict=True):
            message = cast(
                WebhookMessage | None, entities.model_of(found.get(key.SerializeToString()))
            )
            if message is None or message.lease != result.lease or message.status != PENDING:
                continue
            _settle(message, result)
            if _resend_now(message, result):
                assert result.queued is not None
                endpoint = result.queued.leased.endpoint
                again.append(_lease_for_attempt(message, endpoint, utcnow(), result.settings))
            changed.append(message)
        if changed:
            rpc.commit([outbox.upsert_of(message) for message in changed], transaction)
        else:
            rpc.rollback(transaction)
        return {message.key for message in changed}

    def in_transaction() -> set[ndb.Key]:
        with rpc.transaction() as transaction:
            return store(transaction)

    return rpc.retry_aborted(in_transaction, "recording webhook attempts"), list(again)


def _resend_now(message: WebhookMessage, result: Result) -> bool:
    return (
        result.settings.resend_at_once
        and result.queued is not None
        and message.status == PENDING
        and message.next_attempt_at is not None
        and message.next_attempt_at <= result.at
    )


def _settle(message: WebhookMessage, result: Result) -> None:
    message.log_attempt(_attempt(result.at, result.outcome))
    message.lease = None
    message.updated_at = result.at
    if result.outcome.delivered:
        message.status, message.next_attempt_at = DELIVERED, None
    else:
        delay = retry_delay(message.attempt_count, result.settings)
        if delay is None:
            message.status, message.next_attempt_at = FAILED, None
        else:
            message.next_attempt_at = result.at + delay


class _Recorder:
    """Group commit of results: a sender hands its outcome in and goes on to its next
    message; one committer task per org (on `_committers`) records every result waiting,
    up to BATCH per transaction, until none is left. So one transaction records what all
    the senders finished while the previous one committed: a burst of N sends costs a
    few commits, not N. Then, per result: the endpoint's health, and the message's place
    freed (`_finish`)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.waiting: dict[tuple[str | None, ndb.Client], list[Result]] = {}

    def add(self, namespace: str | None, client: ndb.Client, result: Result) -> None:
        org = (namespace, client)
        with self.lock:
            start = org not in self.waiting
            self.waiting.setdefault(org, []).append(result)
        if start:
            _committers.submit(self._commit_all, org)

    def _commit_all(self, org: tuple[str | None, ndb.Client]) -> None:
        namespace, client = org
        while True:
            with self.lock:
                waiting = self.waiting[org]
                batch, self.waiting[org] = waiting[:BATCH], waiting[BATCH:]
                if not batch:
                    del self.waiting[org]
                    return
            with client.context(namespace=namespace):
                self._commit(namespace, batch)

    @staticmethod
    def _commit(namespace: str | None, batch: list[Result]) -> None:
        again: list[Leased] = []
        try:
            recorded, again = _record(batch)
        except Exception:  # their leases run out and they are sent again
            log.exception("could not record %d webhook attempts", len(batch))
            recorded = set()
        for result in batch:
            assert result.queued is not None
            try:
                if result.key in recorded:
                    note_endpoint_health(result.queued.leased.endpoint, result.outcome, result.at)
            except Exception:
                log.exception("could not note the health of an endpoint")
            finally:
                _finish(namespace, result.queued, result.outcome.delivered)
        if again:
            hand_off(again, _resend_settings(batch))


_recorder = _Recorder()


def _resend_settings(batch: list[Result]) -> Settings:
    """The settings the batch's sends were made with (one background loop's)."""
    return next(r.settings for r in batch if r.settings.resend_at_once)


#: endpoint (namespace, key id) -> when this process last wrote its first failure
#: (monotonic): a burst of failures writes the endpoint once, not once per message.
_failure_written: dict[tuple[str | None, int], float] = {}
FAILURE_WRITE_SECONDS = 10.0


def note_endpoint_health(endpoint: WebhookEndpoint, outcome: Outcome, now: datetime) -> None:
    """Track the endpoint's run of failures without making it a hot entity (about one
    write a second is what one entity sustains, and deliveries come by the hundred): a
    delivery writes nothing; a failure writes `failing_since` when the endpoint has none
    (at most once per FAILURE_WRITE_SECONDS per process); a failure once that is
    DISABLE_AFTER old disables the endpoint, unless its log shows a delivery since, which
    restarts the run (`_delivered_since`, one indexed read, at most once per run)."""
    if outcome.delivered:
        return
    since = endpoint.failing_since
    if since is not None and now - since < DISABLE_AFTER:
        return
    if since is None:
        ident, moment = (endpoint.key.namespace(), endpoint.key.id()), time.monotonic()
        with _in_flight_lock:
            if moment - _failure_written.get(ident, -FAILURE_WRITE_SECONDS) < FAILURE_WRITE_SECONDS:
                return
            _failure_written[ident] = moment

    @transactional(retries=5)
    def store() -> None:
        current = cast(WebhookEndpoint | None, endpoint.key.get())
        if current is None or current.deleted:
            return
        if current.failing_since is None:
            current.failing_since = now
        elif now - current.failing_since < DISABLE_AFTER or not current.enabled:
            return
        elif _delivered_since(current, current.failing_since):
            current.failing_since = now  # it answered in between: a new run starts
        else:
            current.enabled = False
            current.disabled_reason = (
                f"disabled at {format_time(now)}: every attempt failed since "
                f"{format_time(current.failing_since)} (5 days); last error: {outcome.error}"
            )
            log.warning("webhook endpoint %s disabled: %s", current.id_, current.disabled_reason)
        current.put()

    store()


def _delivered_since(endpoint: WebhookEndpoint, since: datetime) -> bool:
    """Whether a message of the endpoint was delivered at or after `since`: its newest
    delivered message (the delivery log's index), recorded then."""
    newest = WebhookMessage.log_of(endpoint.id_, DELIVERED).fetch(1)
    return bool(newest) and newest[0].updated_at is not None and newest[0].updated_at >= since
