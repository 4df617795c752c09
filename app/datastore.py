"""The NDB client of the app, and the per-request NDB context.

`init_app` creates one `ndb.Client` per app (pointed at the emulator when
`Config.emulator_host` is set), counts its RPCs, and opens an NDB context for
every request in the default namespace. Every answer reports the request's
Datastore work in `X-Datastore-Usage: rpcs=N; read=N; written=N`. `use_namespace`
switches the rest of the request to an org's namespace; `app.tenancy` calls it once,
after authenticating the caller, and nothing else passes namespaces around.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from flask import current_app, g
from google.auth.credentials import AnonymousCredentials
from google.cloud import ndb

from app import cache, timeline
from app.models.webhook import WebhookMessage
from app.services.webhooks import dispatch
from app.storage import journal, metrics, rpc

log = logging.getLogger(__name__)


def make_client(config) -> ndb.Client:
    """An NDB client for the configured project (and emulator, if any)."""
    if config.emulator_host:
        # NDB reads the emulator address from the environment only.
        os.environ["DATASTORE_EMULATOR_HOST"] = config.emulator_host
        return ndb.Client(project=config.project, credentials=AnonymousCredentials())
    return ndb.Client(project=config.project)


def client() -> ndb.Client:
    """The current app's NDB client."""
    return current_app.extensions["ndb"]


def _open_context() -> None:
    metrics.start()
    stack = contextlib.ExitStack()
    g.ndb_stack = stack
    stack.enter_context(client().context(**current_app.extensions["ndb_context_options"]))


def _close_context(_exc=None) -> None:
    stack = g.pop("ndb_stack", None)
    if stack is not None:
        stack.close()


def _report_usage(response):
    usage = metrics.current()
    if usage is not None:
        response.headers["X-Datastore-Usage"] = usage.header()
    return response


def use_namespace(namespace: str) -> None:
    """Run the rest of this request in `namespace`."""
    context = ndb.get_context().new(namespace=namespace)
    g.ndb_stack.enter_context(context.use())


def reopen_context() -> contextlib.AbstractContextManager:
    """(issue 17, export) A context manager that opens, again, an NDB context in this
    request's namespace, for a body streamed after the view returned: the request's own
    context is closed by then (`teardown_request` runs before a streamed body is read)."""
    namespace = ndb.get_context().get_namespace()
    options = current_app.extensions["ndb_context_options"]
    return client().context(namespace=namespace, **options)


def _journal_transactions(client: ndb.Client, config) -> None:
    """With a journal directory: roll back what stopped processes left open there, then
    list this process's transactions in it (`app/storage/journal.py`)."""
    directory = config.transaction_journal_dir
    if not directory:
        return
    # Started first: the leases taken over from a stopped process are noted in it.
    journal.start(Path(directory))
    # With the background loops, this process sends a stopped one's leased messages.
    sends = dispatch.Settings.background(config) if config.background_delivery_seconds > 0 else None
    with client.context():
        journal.recover(Path(directory), rpc.rollback, functools.partial(_release_held, sends))


#: Leases released per transaction when a process starts after a killed one.
RELEASE_BATCH = 100


@dataclass
class Recovered:
    """What this process's start did with stopped processes' leases (`_release_held`),
    for its background loops to act on at once (`app.background`)."""

    #: Orgs (namespaces) with webhook messages made due again.
    due_orgs: set[str] = field(default_factory=set)
    #: Messages leased anew for this process and handed to its senders.
    taken: int = 0


recovered = Recovered()


def _release_held(sends: dispatch.Settings | None, held: list[tuple[str, str]]) -> None:
    """Give up what stopped processes held (serialized keys, each with its holder name or
    lease token), per org and RELEASE_BATCH keys a transaction (`dispatch.release_stopped`):
    a killed service can leave a hundred messages leased. With `sends` (the background
    loops will run), the messages each transaction leased anew for this process go to
    its senders at once (`dispatch.hand_off`: the pool and the recorder need no loop)."""
    by_org: dict[str, list[tuple[ndb.Key, str]]] = {}
    for key, holder in held:
        held_key = ndb.Key(urlsafe=key.encode())
        by_org.setdefault(held_key.namespace() or "", []).append((held_key, holder))
    timeline.note("releasing", leases=len(held))
    for namespace, pairs in by_org.items():
        with ndb.get_context().new(namespace=namespace or None).use():
            endpoints = dispatch.endpoints_by_id() if sends is not None else {}
            for batch in _release_batches(pairs):
                try:
                    done = dispatch.release_stopped(batch, sends, endpoints)
                except Exception as error:  # noqa: BLE001  (they expire by themselves)
                    log.warning("could not release a stopped process's leases: %s", error)
                    continue
                if done.due:
                    recovered.due_orgs.add(namespace)
                if sends is not None and done.taken:  # sent while the next batch is released
                    dispatch.hand_off(done.taken, sends)
                    recovered.taken += len(done.taken)
    timeline.note("released", orgs=len(by_org))


def _release_batches(pairs: list[tuple[ndb.Key, str]]) -> list[list[tuple[ndb.Key, str]]]:
    """An org's leases in the order they are released: the alert evaluation leases
    first, alone (a few keys, one per meter; the other worker's evaluator waits for
    them), then the webhook messages by RELEASE_BATCH."""
    messages = [pair for pair in pairs if pair[0].kind() == WebhookMessage._get_kind()]
    others = [pair for pair in pairs if pair[0].kind() != WebhookMessage._get_kind()]
    batches = [others[at : at + RELEASE_BATCH] for at in range(0, len(others), RELEASE_BATCH)]
    return batches + [
        messages[at : at + RELEASE_BATCH] for at in range(0, len(messages), RELEASE_BATCH)
    ]


def init_app(app) -> None:
    """Create the app's NDB client and open a context around every request."""
    client = make_client(app.config["METERING"])
    metrics.instrument(client)
    _journal_transactions(client, app.config["METERING"])
    app.extensions["ndb"] = client
    app.extensions["ndb_context_options"] = cache.context_options(app.config["METERING"])
    app.before_request(_open_context)
    app.after_request(_report_usage)
    app.teardown_request(_close_context)
