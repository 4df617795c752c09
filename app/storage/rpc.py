"""Raw Datastore RPCs through the current NDB context's client.

Requests are raw (upb) protobufs; each call fills in the project and database of
the NDB client, wraps the request for the transport without copying, and turns
gRPC errors into `google.api_core` exceptions, as NDB does.
"""

from __future__ import annotations

import contextlib
import contextvars
import random
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import grpc
from google.api_core import exceptions as core_exceptions
from google.cloud import ndb
from google.cloud.datastore_v1.types import datastore as ds

CommitRequest = ds.CommitRequest.pb()
LookupRequest = ds.LookupRequest.pb()
RunQueryRequest = ds.RunQueryRequest.pb()
BeginTransactionRequest = ds.BeginTransactionRequest.pb()
RollbackRequest = ds.RollbackRequest.pb()
Mutation = ds.Mutation.pb()

_WRAPPERS = {
    "commit": ds.CommitRequest,
    "lookup": ds.LookupRequest,
    "run_query": ds.RunQueryRequest,
    "begin_transaction": ds.BeginTransactionRequest,
    "rollback": ds.RollbackRequest,
}
#: Each call's gRPC timeout; inside a request the transport wrapper of
#: `app.storage.metrics` cuts it to the request's time left (commits excepted: they are
#: refused past the deadline, never cut once sent; see app.deadline).
TIMEOUT = 60.0

T = TypeVar("T")


def _call(name: str, request: Any) -> Any:
    client = ndb.get_context().client
    request.project_id = client.project
    if client.database:
        request.database_id = client.database
    params = f"project_id={client.project}"
    if client.database:
        params += f"&database_id={client.database}"
    method = getattr(client.stub, name)
    try:
        response = method(
            # mypy: the proto-plus request classes have wrap()
            _WRAPPERS[name].wrap(request),  # type: ignore[attr-defined]
            timeout=TIMEOUT,
            metadata=(("x-goog-request-params", params),),
        )
    except grpc.RpcError as error:
        # mypy: google.api_core is untyped here
        raise core_exceptions.from_grpc_error(error) from None  # type: ignore[no-untyped-call]
    return type(response).pb(response)


def begin_transaction() -> bytes:
    """Start a read-write transaction; its id."""
    return cast(bytes, _call("begin_transaction", BeginTransactionRequest()).transaction)


def begin_read_only() -> bytes:
    """Start a read-only transaction (one consistent snapshot for its reads); its id."""
    request = BeginTransactionRequest()
    request.transaction_options.read_only.SetInParent()
    return cast(bytes, _call("begin_transaction", request).transaction)


# -- issue 14, alerts: reads at one consistent cut -------------------------------------
#: The transaction `lookup` and `run_query` read in when their caller names none.
_reading_in: contextvars.ContextVar[bytes | None] = contextvars.ContextVar(
    "reading_in", default=None
)


@contextlib.contextmanager
def reads_in(transaction: bytes) -> Iterator[None]:
    """Make every `lookup` and `run_query` of this block that names no transaction read in
    `transaction`: code that knows nothing of it (the summary engine) then reads at the
    transaction's snapshot. Firestore in Datastore mode allows queries in transactions;
    the legacy emulator refuses non-ancestor ones (ours are all ancestor queries)."""
    token = _reading_in.set(transaction)
    try:
        yield
    finally:
        _reading_in.reset(token)


def rollback(transaction: bytes) -> None:
    """Abandon a transaction (best effort)."""
    try:
        _call("rollback", RollbackRequest(transaction=transaction))
    except core_exceptions.GoogleAPICallError:
        pass


ATTEMPTS = 12


def retry_aborted(attempt: Callable[[], T], what: str) -> T:
    """Call `attempt()` until it does not abort on contention, with jittered backoff."""
    for number in range(ATTEMPTS):
        try:
            return attempt()
        except core_exceptions.Aborted:
            time.sleep(min(2.0, 0.05 * 2**number) * random.uniform(0.5, 1.5))
    # mypy: google.api_core is untyped here
    raise core_exceptions.Aborted(f"{what} kept colliding with concurrent writes")  # type: ignore[no-untyped-call]


@contextlib.contextmanager
def transaction() -> Iterator[bytes]:
    """A read-write transaction id; rolled back if the block raises (commit it inside)."""
    transaction_id = begin_transaction()
    try:
        yield transaction_id
    except BaseException:
        rollback(transaction_id)
        raise


def new_commit(transaction: bytes | None = None) -> Any:
    """An empty CommitRequest: in `transaction`, or in a single-use transaction. Adding
    mutations with `request.mutations.add()` builds them in place (no copy)."""
    request = CommitRequest(mode=CommitRequest.TRANSACTIONAL)
    if transaction is not None:
        request.transaction = transaction
    else:
        request.single_use_transaction.read_write.SetInParent()
    return request


def send_commit(request: Any) -> Any:
    """Commit a request from `new_commit` atomically."""
    return _call("commit", request)


def commit(mutations: list[Any], transaction: bytes | None = None) -> Any:
    """Commit mutations atomically: in `transaction`, or in a single-use transaction."""
    request = new_commit(transaction)
    request.mutations.extend(mutations)
    return send_commit(request)


def lookup(keys: list[Any], transaction: bytes | None = None) -> dict[bytes, Any]:
    """Entities found for `keys`, by serialized key; follows `deferred` keys."""
    found: dict[bytes, Any] = {}
    if transaction is None:
        transaction = _reading_in.get()
    pending = list(keys)
    while pending:
        request = LookupRequest()
        request.keys.extend(pending)
        if transaction is not None:
            request.read_options.transaction = transaction
        response = _call("lookup", request)
        for result in response.found:
            found[result.entity.key.SerializeToString()] = result.entity
        pending = list(response.deferred)
    return found


def run_query(
    query: Any,
    namespace: str | None,
    transaction: bytes | None = None,
    batch_sizes: Iterator[int] | None = None,
) -> Iterator[Any]:
    """Every entity a query yields, following its cursors. With `batch_sizes`, each RPC
    asks for at most the next size: a reader that stops early then pays (in entities
    read) for little more than what it used, instead of the server's whole batch."""
    for batch in run_query_pages(query, namespace, transaction, batch_sizes):
        yield from batch


def run_query_pages(
    query: Any,
    namespace: str | None,
    transaction: bytes | None = None,
    batch_sizes: Iterator[int] | None = None,
) -> Iterator[list[Any]]:
    """`run_query`, one list of entities per RPC: for a reader that hands each batch on
    before the next RPC starts (issue 17's export, whose answer may end at any RPC)."""
    if transaction is None:
        transaction = _reading_in.get()
    while True:
        request = RunQueryRequest()
        request.query.CopyFrom(query)
        if batch_sizes is not None:
            request.query.limit.value = next(batch_sizes)
        if namespace:
            request.partition_id.namespace_id = namespace
        request.partition_id.project_id = ndb.get_context().client.project
        if transaction is not None:
            request.read_options.transaction = transaction
        batch = _call("run_query", request).batch
        yield [result.entity for result in batch.entity_results]
        more = batch.more_results == batch.NOT_FINISHED or (
            batch_sizes is not None and batch.more_results == batch.MORE_RESULTS_AFTER_LIMIT
        )
        if not more or not batch.entity_results:
            return
        query.start_cursor = batch.end_cursor


def run_query_batch(query: Any, namespace: str | None, start_cursor: bytes = b"") -> Any:
    """One batch of a query from `start_cursor` (a Datastore position; b"" for the start),
    as the server answers it: its entity results each carry the position after them, and
    `more_results` says whether any follow. For a reader that must remember exactly how
    far it got between requests (range cancellation)."""
    request = RunQueryRequest()
    request.query.CopyFrom(query)
    if start_cursor:
        request.query.start_cursor = start_cursor
    if namespace:
        request.partition_id.namespace_id = namespace
    request.partition_id.project_id = ndb.get_context().client.project
    return _call("run_query", request).batch
