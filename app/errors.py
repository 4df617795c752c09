"""The one error hierarchy of the service, and the one place that renders it.

Domain code raises an `ApiError` subclass; it carries its HTTP status, a stable
machine `code` and, where one field is to blame, the `param` that names it.
`init_app` turns every such error, every HTTP error Flask raises itself (404,
405, 413, malformed JSON) and any unexpected exception into the original
service's envelope:

    {"error": {"type": "api-error", "message": "...", "code": "...", "param": "..."}}

`code` and `param` are omitted when empty. A batch with several bad events adds
`errors`: one entry per problem, each with its own `param`.
"""

from __future__ import annotations

import logging

from flask import jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """Base of every error the API answers with; raised by services and views."""

    status = 400
    code = "invalid_request"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 details: list[dict] | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code:
            self.code = code
        self.details = details or []

    def to_dict(self) -> dict:
        body = {"type": "api-error", "message": self.message}
        if self.code:
            body["code"] = self.code
        if self.param:
            body["param"] = self.param
        if self.details:
            body["errors"] = self.details
        return {"error": body}


class ValidationFailed(ApiError):
    """Raised when a request's body or query string breaks a rule (400)."""

    status = 400
    code = "invalid_request"


class Unauthorized(ApiError):
    """Raised when the API key or admin token is missing, unknown or revoked (401)."""

    status = 401
    code = "unauthorized"


class NotFound(ApiError):
    """Raised when the addressed meter, org or key does not exist for the caller (404)."""

    status = 404
    code = "not_found"


class Conflict(ApiError):
    """Raised when a write contradicts stored state, e.g. a taken event name (409)."""

    status = 409
    code = "conflict"


class Unavailable(ApiError):
    """Raised when the Datastore cannot be reached or keeps aborting (503)."""

    status = 503
    code = "unavailable"


_HTTP_MESSAGES = {
    400: ("malformed request", "invalid_request"),
    404: ("no such endpoint", "not_found"),
    405: ("method not allowed on this endpoint", "method_not_allowed"),
    413: ("request body too large", "payload_too_large"),
    415: ("request body must be JSON", "unsupported_media_type"),
}


def _render(error: ApiError, status: int):
    response = jsonify(error.to_dict())
    response.status_code = status
    return response


def _from_http_exception(exc: HTTPException):
    message, code = _HTTP_MESSAGES.get(exc.code or 500, (exc.description or exc.name, "http_error"))
    response = _render(ApiError(message, code=code), exc.code or 500)
    if exc.code == 405 and getattr(exc, "valid_methods", None):
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response


def _from_unexpected(exc: Exception):
    log.exception("unhandled error")
    return _render(ApiError("internal error", code="internal"), 500)


def _from_datastore(exc: Exception):
    log.warning("datastore call failed: %s", type(exc).__name__)
    return _render(Unavailable("the datastore is unavailable, retry later"), 503)


def init_app(app) -> None:
    """Register the handlers that render every error in the envelope."""
    from google.api_core import exceptions as gexc

    app.register_error_handler(ApiError, lambda exc: _render(exc, exc.status))
    for transient in (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.Aborted,
                      gexc.RetryError):
        app.register_error_handler(transient, _from_datastore)
    app.register_error_handler(HTTPException, _from_http_exception)
    app.register_error_handler(Exception, _from_unexpected)
