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
import logging
import os
from pathlib import Path

from flask import current_app, g
from google.auth.credentials import AnonymousCredentials
from google.cloud import ndb

from app import cache
from app.models import utcnow
from app.models.webhook import PENDING, WebhookMessage
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


def _journal_transactions(client: ndb.Client, directory: str) -> None:
    """With a journal directory: roll back what stopped processes left open there, then
    list this process's transactions in it (`app/storage/journal.py`)."""
    if not directory:
        return
    with client.context():
        journal.recover(Path(directory), rpc.rollback, _release_held)
    journal.start(Path(directory))


#: Leases released per transaction when a process starts after a killed one.
RELEASE_BATCH = 100
#: The orgs (namespaces) whose webhook messages this process made due again at its
#: start (`_release_held`): the background loops look at them at once (`app.background`).
released_orgs: set[str] = set()


def _release_held(held: list[tuple[str, str]]) -> None:
    """Give up what a stopped process held (serialized keys, each with its holder name
    or lease token), where it still holds it: an alert lease is deleted; a webhook
    message it had leased is due again at once (it may have been sent: the receiver
    drops the duplicate by its `webhook-id`), instead of when its lease would have run
    out. One transaction per org and RELEASE_BATCH keys: a killed service can leave a
    hundred messages leased."""
    by_org: dict[str, list[tuple[ndb.Key, str]]] = {}
    for key, holder in held:
        held_key = ndb.Key(urlsafe=key.encode())
        by_org.setdefault(held_key.namespace() or "", []).append((held_key, holder))
    for namespace, pairs in by_org.items():
        for at in range(0, len(pairs), RELEASE_BATCH):
            try:
                if _release_batch(pairs[at : at + RELEASE_BATCH]):
                    released_orgs.add(namespace)
            except Exception as error:  # noqa: BLE001  (they expire by themselves)
                log.warning("could not release a stopped process's leases: %s", error)


def _release_batch(pairs: list[tuple[ndb.Key, str]]) -> bool:
    """Release these leases in one transaction; whether a message is due again."""

    def release() -> bool:
        entities = ndb.get_multi([key for key, _holder in pairs])
        due, gone = [], []
        for (key, holder), entity in zip(pairs, entities):
            if isinstance(entity, WebhookMessage):
                if entity.lease == holder and entity.status == PENDING:
                    entity.lease, entity.next_attempt_at = None, utcnow()
                    due.append(entity)
            elif entity is not None and getattr(entity, "holder", None) == holder:
                gone.append(key)
        ndb.put_multi(due)
        ndb.delete_multi(gone)
        return bool(due)

    return bool(ndb.transaction(release, retries=3))


def init_app(app) -> None:
    """Create the app's NDB client and open a context around every request."""
    client = make_client(app.config["METERING"])
    metrics.instrument(client)
    _journal_transactions(client, app.config["METERING"].transaction_journal_dir)
    app.extensions["ndb"] = client
    app.extensions["ndb_context_options"] = cache.context_options(app.config["METERING"])
    app.before_request(_open_context)
    app.after_request(_report_usage)
    app.teardown_request(_close_context)
