"""The one error hierarchy of the service, and the one place that renders it.

Domain code raises an `ApiError` subclass; it carries its HTTP status, a stable
machine `code` and, where one field is to blame, the `param` that names it.
`init_app` turns every such error, every HTTP error Flask raises itself (404,
405, 413, malformed JSON) and any unexpected exception into the original
service's envelope:

    {"error": {"type": "api-error", "message": "...", "code": "...", "param": "..."}}

`code` and `param` are omitted when empty. A batch with several bad events adds
`errors`: one entry per problem, each with its own `param`. Flask's own errors
say what was wrong (the method and path of a 404 or 405, the limit of a 413);
a 405 carries the `Allow` header. A body whose declared length is over the
limit is refused with 413 before authentication or routing reads anything.
"""

from __future__ import annotations

import logging

from flask import current_app, jsonify, request
from google.api_core import exceptions as gexc
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

log = logging.getLogger(__name__)


class ApiError(Exception):
    """Base of every error the API answers with; raised by services and views."""

    status = 400
    code = "invalid_request"
    #: Seconds after which a retry may succeed; sent as `Retry-After` when set.
    retry_after: int | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        details: list[dict] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.param = param
        if code:
            self.code = code
        self.details = details or []

    def to_dict(self) -> dict:
        body: dict[str, object] = {"type": "api-error", "message": self.message}
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


class Forbidden(ApiError):
    """Raised when the caller's key lacks the scope an operation needs (403)."""

    status = 403
    code = "missing_scope"


class NotFound(ApiError):
    """Raised when the addressed meter, org or key does not exist for the caller (404)."""

    status = 404
    code = "not_found"


class Conflict(ApiError):
    """Raised when a write contradicts stored state, e.g. a taken event name (409)."""

    status = 409
    code = "conflict"


class InternalError(ApiError):
    """Raised when the fault is ours, not the caller's (500): corrupt stored data, an
    inconsistency between layers. The message says so and nothing more; the details
    go to the log, with the stored entity at fault where there is one."""

    status = 500
    code = "internal"


#: `Retry-After` of every 503: long enough for a transient outage or a busy moment to pass.
UNAVAILABLE_RETRY_SECONDS = 5


class Unavailable(ApiError):
    """Raised when the Datastore cannot be reached or keeps aborting (503, Retry-After)."""

    status = 503
    code = "unavailable"
    retry_after = UNAVAILABLE_RETRY_SECONDS


class DeadlineExceeded(Unavailable):
    """Raised when a request runs out of its deadline (503, with Retry-After).

    Nothing half-written remains: every write is one commit, and a commit is never
    cut short by the deadline (see app.deadline).
    """

    code = "deadline_exceeded"


_HTTP_CODES = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def _http_message(exc: HTTPException) -> str:
    """A message that says what was wrong with this request, not just the status."""
    method, path = request.method, request.path
    if exc.code == 404:
        return f"no such endpoint: {method} {path}"
    if exc.code == 405:
        allowed = _allowed(exc)
        return f"method {method} is not allowed on {path}" + (
            f"; allowed: {', '.join(allowed)}" if allowed else ""
        )
    if exc.code == 413:
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        return "request body too large" + (
            f": at most {limit} bytes are accepted" if limit is not None else ""
        )
    if exc.code == 400:
        return "malformed request"
    if exc.code == 415:
        return "request body must be JSON"
    return exc.description or exc.name


def _allowed(exc: HTTPException) -> list[str]:
    return sorted(getattr(exc, "valid_methods", None) or [])


def _render(error: ApiError, status: int):
    response = jsonify(error.to_dict())
    response.status_code = status
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def _from_http_exception(exc: HTTPException):
    status = exc.code or 500
    response = _render(
        ApiError(_http_message(exc), code=_HTTP_CODES.get(status, "http_error")), status
    )
    if status == 405 and _allowed(exc):
        response.headers["Allow"] = ", ".join(_allowed(exc))
    return response


def _refuse_oversized_body() -> None:
    """413 before anything else for a body whose declared length is over the limit.

    Endpoints that read no body would otherwise accept any size, and the caller
    would learn nothing until a body-reading endpoint refused it. Streamed
    (chunked) bodies have no declared length; `app.api.requests` limits those as
    it reads them.
    """
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    length = request.content_length
    if limit is not None and length is not None and length > limit:
        raise RequestEntityTooLarge()


def _from_unexpected(exc: Exception):
    log.exception("unhandled error")
    return _render(InternalError("internal error"), 500)


def _from_datastore(exc: Exception):
    log.warning("datastore call failed: %s", type(exc).__name__)
    passed = current_app.extensions.get("deadline_passed")
    # Its timeout was the request's time left; or, past the deadline, a client library's
    # retries gave up (RetryError) or a call was dropped: the deadline was the cause.
    if isinstance(exc, gexc.DeadlineExceeded) or (passed is not None and passed()):
        return _render(
            DeadlineExceeded(
                "the datastore did not answer within the request's deadline; retry later"
            ),
            503,
        )
    return _render(Unavailable("the datastore is unavailable, retry later"), 503)


def init_app(app) -> None:
    """Register the handlers that render every error in the envelope."""
    app.register_error_handler(ApiError, lambda exc: _render(exc, exc.status))
    # Cancelled: gRPC's "499 Stream removed" when the emulator or the Datastore drops a
    # call under contention. Retrying is safe: a commit that landed anyway is found again
    # by its events' keys (answered `duplicate`), never stored twice.
    for transient in (
        gexc.ServiceUnavailable,
        gexc.DeadlineExceeded,
        gexc.Aborted,
        gexc.RetryError,
        gexc.Cancelled,
    ):
        app.register_error_handler(transient, _from_datastore)
    app.register_error_handler(HTTPException, _from_http_exception)
    app.register_error_handler(Exception, _from_unexpected)
    app.before_request(_refuse_oversized_body)


class TooManyRequests(ApiError):
    """Raised when an org is over its request limit or read budget, or an address over
    its limit of failed authentications (429, with Retry-After)."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after
