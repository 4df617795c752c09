"""Decorators that declare, where a route is declared, what it takes and answers.

In the way of APIFairy (which the microblog-api project uses), each decorator does the
work and records it for the OpenAPI document (`app.openapi.operations.Operation`, read by
`app.openapi.document`), so one declaration both runs and documents a route:

    @blueprint.post("")
    @tenant
    @body(MeterCreate)
    @response(responses.Meter, 201, "The new meter.", links=METER_LINKS)
    @other_responses(400, 409)
    def create_meter(data): ...

- `@body(schema)` reads the JSON body (`requests.json_body`), validates it and passes the
  result to the view as its first argument; `@arguments(schema)` does the same with the
  query string.
- `@response(schema, status, description)` serializes what the view returns through the
  schema (`schema.dump`), so the answer is the shape the document shows. A hot path may
  pass `dump=`, a hand-written function, where a benchmark shows the schema's cost; the
  schema still describes the answer, and a test holds the two to the same shape.
- `@other_responses(*statuses)` names the error statuses beyond the operation's own.
- `operation(tag, security, errors)` makes the decorator a blueprint's views share.

Our own decorators rather than APIFairy: its body and query parsing goes through
webargs, which would bypass `requests.json_body` (the bounded JSON parser, its error
envelope and `param` paths), it cannot take the batch body whose schema depends on the
configuration nor the quick loader of the recording hot path, and it brings its own
document and error handler where `app.openapi.document` and `app.errors` exist.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from flask import current_app

from app import tenancy
from app.api import requests
from app.core.scopes import ALL_SCOPES
from app.openapi.operations import API_KEY, Answer, ConfiguredBody, declared
from app.schemas import load

#: Error statuses every tenant call may answer: no or a bad key, and the org's limits.
TENANT_ERRORS = (401, 429)
#: Error statuses every admin call may answer (429: too many wrong tokens from one address).
ADMIN_ERRORS = (401, 404, 429)


def link(operation_id: str, description: str, **parameters: str) -> dict:
    """An OpenAPI link of an answer: an operation a client can call next with its values."""
    return {"operationId": operation_id, "description": description, "parameters": parameters}


def link_with_body(operation_id: str, description: str, request_body: dict) -> dict:
    """A link whose call sends `request_body`, a whole, valid body: fuzzers (schemathesis)
    are told to send it as it is rather than merge generated fields into it."""
    return {
        "operationId": operation_id,
        "description": description,
        "requestBody": request_body,
        "x-schemathesis": {"merge_body": False},
    }


def operation(
    tag: str,
    *,
    security: str | None = API_KEY,
    errors: tuple[int, ...] = (),
    datastore: bool = True,
) -> Callable:
    """A decorator putting a view in the document's section `tag`, with who may call it,
    the error statuses it shares with its section, and whether it touches the Datastore."""

    def decorate(view):
        described = declared(view)
        described.tag, described.security, described.datastore = tag, security, datastore
        described.errors = tuple(sorted({*described.errors, *errors}))
        return view

    return decorate


def scope(name: str) -> Callable:
    """The API key scope the view needs (`app.core.scopes`): checked before the body is
    read, so a key without it gets 403 naming the scope and nothing else happens."""
    if name not in ALL_SCOPES:
        raise ValueError(f"unknown scope {name!r}")

    def decorate(view):
        described = declared(view)
        described.scope = name
        described.errors = tuple(sorted({*described.errors, 403}))

        @functools.wraps(view)
        def scoped(*args, **kwargs):
            tenancy.require_scope(name)
            return view(*args, **kwargs)

        return scoped

    return decorate


def other_responses(*statuses: int) -> Callable:
    """The error statuses the view answers besides its section's."""

    def decorate(view):
        described = declared(view)
        described.errors = tuple(sorted({*described.errors, *statuses}))
        return view

    return decorate


def body(shape, *, quick: Callable | None = None, optional: bool = False) -> Callable:
    """Validate the JSON body with `shape` (a schema class, or a `ConfiguredBody`) and pass
    it first to the view. `quick(document, config)` may load a body the common way, faster
    than the schema, or answer None to leave it to the schema (the recording hot path).
    An `optional` body may be left out: the schema then loads `{}`."""

    def decorate(view):
        declared(view).body = shape
        declared(view).body_optional = optional
        schema = None if isinstance(shape, ConfiguredBody) else shape()

        @functools.wraps(view)
        def with_body(*args, **kwargs):
            document = requests.json_body() if not optional or requests.has_body() else {}
            config = current_app.config["METERING"]
            loaded = quick(document, config) if quick is not None else None
            if loaded is None:
                loaded = load(schema if schema is not None else shape.build(config), document)
            return view(loaded, *args, **kwargs)

        return with_body

    return decorate


def arguments(
    shape, *, parameters: tuple[dict, ...] = (), read: Callable | None = None
) -> Callable:
    """Validate the query string with `shape` and pass it first to the view. `parameters`
    document what no schema field can (`filter[NAME]`), `read` then reads the query string
    in their place (by default `requests.query`)."""

    def decorate(view):
        described = declared(view)
        described.query, described.parameters = shape, parameters
        schema = shape()

        @functools.wraps(view)
        def with_arguments(*args, **kwargs):
            loaded = read() if read is not None else requests.query(schema)
            return view(loaded, *args, **kwargs)

        return with_arguments

    return decorate


def response(
    shape,
    status: int = 200,
    description: str = "",
    *,
    links: dict | None = None,
    dump: Callable | None = None,
) -> Callable:
    """Answer `status` with what the view returns, serialized through `shape` (a response
    schema class), or by `dump` where a benchmark showed the schema too slow. A media type
    (`"text/html"`), or a tuple of them, as `shape` documents an answer the view makes
    itself."""

    def decorate(view):
        declared(view).success[status] = Answer(description, shape, links or {})
        if isinstance(shape, str | tuple):  # a media type (or several): the view answers
            return view
        serialize = dump or shape().dump

        @functools.wraps(view)
        def serialized(*args, **kwargs):
            return serialize(view(*args, **kwargs)), status

        return serialized

    return decorate
