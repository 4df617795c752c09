"""The outbox: messages stored in the same commit as the fact they announce.

A caller announcing a fact reads the subscribed endpoints first (`targets`, outside its
transaction: the legacy emulator refuses non-ancestor queries inside one, and the list
changes rarely), builds the messages (`messages`) and puts them in the transaction that
writes the fact. A crash before the commit loses both, after it neither: the
dispatcher finds the messages due. `wake()` after the commit has this process's delivery
loop send them at once instead of at its next round.

A message's id (its `webhook-id`) is derived from what makes the fact unique
(`event_id`), and its key from that id and the endpoint: the same fact announced twice
is one stored message, and every endpoint and every retry sees the same id.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

from google.cloud import ndb

from app.models.base import root_key
from app.models.webhook import PENDING, WebhookEndpoint, WebhookMessage
from app.schemas import format_time
from app.storage import entities
from app.storage.rpc import Mutation

_wakers: list[Callable[[str | None], None]] = []
#: Called only when the waking thread built messages (`messages`) since its last wake:
#: a commit that stored messages, not one that only stored alert feeds.
_message_wakers: list[Callable[[str | None], None]] = []
_wakers_lock = threading.Lock()
_built = threading.local()


def event_id(*parts: str) -> str:
    """A message id: `msg_` + 26 base32 characters of a hash of what makes the fact unique."""
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return "msg_" + base64.b32encode(digest).decode()[:26].lower()


def targets(event_type: str) -> list[WebhookEndpoint]:
    """The current org's enabled endpoints subscribed to `event_type` (outside a transaction)."""
    found = cast(list[WebhookEndpoint], WebhookEndpoint.query(ancestor=root_key()).fetch())
    return [
        endpoint
        for endpoint in found
        if not endpoint.deleted and endpoint.enabled and endpoint.takes(event_type)
    ]


def body_of(event_type: str, data: dict[str, Any], at: datetime) -> str:
    """The delivered body: fixed at creation, the same bytes on every attempt."""
    return json.dumps(
        {"type": event_type, "timestamp": format_time(at), "data": data},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def messages(
    targets: list[WebhookEndpoint],
    event_type: str,
    event_id: str,
    data: dict[str, Any],
    at: datetime,
) -> list[WebhookMessage]:
    """Unsaved messages, one per target, for the caller to put in its transaction."""
    body = body_of(event_type, data, at)
    built = []
    for endpoint in targets:
        message = WebhookMessage(
            key=WebhookMessage.key_for(event_id, endpoint.key),
            message_id=event_id,
            endpoint_id=endpoint.id_,
            event_type=event_type,
            body=body,
            status=PENDING,
            created_at=at,
            updated_at=at,
            next_attempt_at=at,
            attempt_count=0,
            attempts=[],
        )
        message._check()
        built.append(message)
    _built.messages = bool(built) or getattr(_built, "messages", False)
    return built


_MESSAGE_KIND = WebhookMessage._get_kind()
#: (property name, attribute, indexed) of a message, as `WebhookMessage` declares them.
_MESSAGE_FIELDS = (
    ("MessageId", "message_id", False),
    ("EndpointId", "endpoint_id", True),
    ("EventType", "event_type", False),
    ("Body", "body", False),
    ("Status", "status", True),
    ("CreatedAt", "created_at", True),
    ("UpdatedAt", "updated_at", False),
    ("NextAttemptAt", "next_attempt_at", True),
    ("Lease", "lease", False),
    ("AttemptCount", "attempt_count", False),
)


def upsert_of(message: WebhookMessage) -> Any:
    """The raw upsert of a message built by `messages` (leased or not), exactly as its
    `put()` would store it (`tests/test_raw_encoding.py` compares the two). NDB's
    conversion took 2 ms a message: a third of the evaluator's CPU for a chunk that
    crossed many thresholds (`benchmarks/alerts_eval.py --profile`, session 15)."""
    mutation = Mutation()
    entity = mutation.upsert
    entities.fill_key(entity.key, _MESSAGE_KIND, message.key.id(), message.key.namespace())
    for name, attribute, indexed in _MESSAGE_FIELDS:
        value = getattr(message, attribute)
        slot = entity.properties[name]
        if value is None:
            slot.null_value = 0
        elif isinstance(value, datetime):
            entities.set_time_value(slot, value)
        elif isinstance(value, int):
            slot.integer_value = value
        else:
            slot.string_value = value
        if not indexed:
            slot.exclude_from_indexes = True
    entities.set_string(entity, "Attempts_", entities.shadow_json(message.attempts), False)
    return mutation


def forget_built() -> None:
    """This thread's messages since its last wake need no wake: they were handed to the
    senders directly (`dispatch.hand_off`)."""
    _built.messages = False


def on_wake(waker: Callable[[str | None], None], only_messages: bool = False) -> Callable[[], None]:
    """Have `wake()` call `waker` with the org's namespace (the delivery loop's; with
    `only_messages`, only for commits that stored messages: the sender's); returns how to
    stop it."""
    registry = _message_wakers if only_messages else _wakers
    with _wakers_lock:
        registry.append(waker)

    def forget() -> None:
        with _wakers_lock:
            if waker in registry:
                registry.remove(waker)

    return forget


def wake(messages: bool | None = None) -> None:
    """Nudge this process's delivery loop: the current org has work now (called outside
    an NDB context, or in the default namespace: every org may have). `messages`: whether
    messages are due (None: whether this thread built any since its last wake)."""
    context = ndb.get_context(raise_context_error=False)
    built, _built.messages = getattr(_built, "messages", False), False
    due = built if messages is None else messages
    wake_org((context.get_namespace() or None) if context is not None else None, due)


def wake_org(namespace: str | None, messages: bool = True) -> None:
    """Nudge this process's delivery loop for one org (None: every org); `messages`: some
    of the org's messages are due (the sender's wakers too)."""
    with _wakers_lock:
        wakers = list(_wakers) + (list(_message_wakers) if messages else [])
    for waker in wakers:
        waker(namespace)
