"""What one route takes and answers, as its view declares it.

The views say it with the decorators of `app.api.declare` (`@operation`, `@body`,
`@arguments`, `@response`, `@other_responses`), which both do the work (parse the
body, serialize the answer) and record it here, in an `Operation` kept on the view
function. `app.openapi.document` reads these from the app's URL map and refuses an
app with a view that declares none, so a new endpoint cannot go undocumented.

Every endpoint can answer 413 (a body over the limit is refused before routing)
and, when it touches the Datastore, 503; the document adds those itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from marshmallow import Schema

from app.config import Config

#: Security requirement names (components.securitySchemes).
API_KEY, ADMIN_TOKEN = "apiKey", "adminToken"
#: (issue 16) A customer portal token: one end customer's read-only access.
PORTAL_TOKEN = "portalToken"

#: The attribute of a view function that holds its `Operation`.
ATTRIBUTE = "openapi_operation"


@dataclass(frozen=True)
class ConfiguredBody:
    """A body schema that depends on the configuration (e.g. the batch limit)."""

    name: str
    build: Callable[[Config], Schema]


@dataclass(frozen=True)
class Answer:
    """One success answer: its description, and a response schema (or, for an answer that
    is not a JSON object of ours, its media type); OpenAPI links to what may follow."""

    description: str
    #: a response schema class; a media type; a JSON schema (dict) of a JSON answer of
    #: another API's shape (OpenMeter's, `app.api.openmeter`); "" for no content (204);
    #: (issue 17) a tuple of media types for a streamed text answer of several formats.
    shape: type[Schema] | str | dict | tuple[str, ...]
    links: dict[str, dict] = field(default_factory=dict)


@dataclass
class Operation:
    """What one endpoint takes and answers, beyond its route and docstring."""

    #: the document's section (tag) the operation is listed under; None: undeclared.
    tag: str | None = None
    #: API_KEY, ADMIN_TOKEN or None for an open endpoint.
    security: str | None = API_KEY
    #: status of a success -> its answer.
    success: dict[int, Answer] = field(default_factory=dict)
    #: error statuses the endpoint answers besides 413 and 503.
    errors: tuple[int, ...] = ()
    #: the JSON body's schema, or how to build it from the configuration.
    body: type[Schema] | ConfiguredBody | None = None
    #: the query string's schema.
    query: type[Schema] | None = None
    #: parameters no schema field describes.
    parameters: tuple[dict, ...] = ()
    #: whether the endpoint touches the Datastore (and so can answer 503).
    datastore: bool = True
    #: errors as RFC 7807 problem+json (OpenMeter's API) rather than the envelope.
    problems: bool = False
    #: a request body described as raw OpenAPI content (media type -> {schema}).
    raw_body: dict | None = None
    #: the API key scope the operation needs (`app.core.scopes`); None: no key scope.
    scope: str | None = None
    #: issue 16: the JSON body may be left out (an admin's key creation).
    body_optional: bool = False


def operation_of(view) -> Operation | None:
    """The operation a view declares, or None."""
    return getattr(view, ATTRIBUTE, None)


def declared(view) -> Operation:
    """The view's operation, created empty on its first decorator."""
    found = operation_of(view)
    if found is None:
        found = Operation()
        setattr(view, ATTRIBUTE, found)
    return found
