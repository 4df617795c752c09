"""Structured logs for Cloud Logging, and a request id on every answer.

Every log record becomes one JSON line on stderr with the fields Cloud Logging
reads (`severity`, `message`, `time`, `logging.googleapis.com/trace` from the
request's `X-Cloud-Trace-Context`, with the project id), plus `requestId`. Each
request ends with one access line carrying `httpRequest`.

What is never logged: request headers (API keys, the admin token), bodies (event
payloads) and query strings. The access line names the path only. As a second
line of defence the formatter scrubs every string of every line, nested fields
included (the message, exception text, `httpRequest.requestUrl`, the user agent,
extra fields), of anything shaped like an API key or a bearer credential and of
the configured secrets themselves: a path can carry a key
(`/v1/billing/meters/mk_...`) or the admin token as easily as a message can.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import traceback
import uuid
from datetime import UTC, datetime

from flask import current_app, g, has_request_context, request

log = logging.getLogger("metering.access")

REQUEST_ID_HEADER = "X-Request-Id"
TRACE_HEADER = "X-Cloud-Trace-Context"
TRACE_FIELD = "logging.googleapis.com/trace"
SPAN_FIELD = "logging.googleapis.com/spanId"
SAMPLED_FIELD = "logging.googleapis.com/trace_sampled"
# Used with fullmatch: `$` would let a value ending in a newline through.
_GOOD_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_TRACE = re.compile(r"([0-9a-fA-F]{32})(?:/([0-9]+))?(?:;o=([01]))?")
_CREDENTIALS = re.compile(r"mk_[A-Za-z0-9_-]+|(?i:bearer)\s+\S+")
#: Python's level names that are also Cloud Logging severities; others become DEFAULT.
_SEVERITIES = frozenset({"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"})
_SECRETS: set[str] = set()
#: Attributes every LogRecord has; any other attribute came in through `extra=`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


def scrub(text: str) -> str:
    """Text with API keys, bearer credentials and configured secrets blanked."""
    text = _CREDENTIALS.sub("[redacted]", text)
    for secret in _SECRETS:
        text = text.replace(secret, "[redacted]")
    return text


def scrub_fields(value):
    """`value` (a log line or any part of it) with every string scrubbed, dict keys and
    nested containers included; anything else that is not a JSON scalar becomes its
    scrubbed text, so nothing reaches the line unscrubbed through `str()` later."""
    if isinstance(value, str):
        return scrub(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, dict):
        return {scrub(str(key)): scrub_fields(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [scrub_fields(item) for item in value]
    return scrub(str(value))


def trace_fields(header: str | None, project: str) -> dict:
    """Cloud Logging's trace fields from an `X-Cloud-Trace-Context` value."""
    match = _TRACE.fullmatch((header or "").strip())
    if not match:
        return {}
    trace_id, span_id, sampled = match.groups()
    fields: dict[str, object] = {TRACE_FIELD: f"projects/{project}/traces/{trace_id.lower()}"}
    if span_id:
        fields[SPAN_FIELD] = span_id
    if sampled is not None:
        fields[SAMPLED_FIELD] = sampled == "1"
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per record, in the shape Cloud Logging parses, scrubbed whole."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + "".join(traceback.format_exception(*record.exc_info))
        elif record.stack_info:
            message += "\n" + record.stack_info
        line = {
            name: value
            for name, value in vars(record).items()
            if name not in _RECORD_ATTRIBUTES and not name.startswith("_")
        }
        line.update(
            {
                "severity": (record.levelname if record.levelname in _SEVERITIES else "DEFAULT"),
                "message": message,
                "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
                "logger": record.name,
            }
        )
        line.update(_request_fields())
        return json.dumps(scrub_fields(line), ensure_ascii=False)


def _request_fields() -> dict:
    if not has_request_context():
        return {}
    fields = {"requestId": g.get("request_id")} if g.get("request_id") else {}
    project = current_app.config["METERING"].project
    fields.update(trace_fields(request.headers.get(TRACE_HEADER), project))
    return fields


class StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time of each record."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


#: Gunicorn's own logging, for app.yaml's gunicorn (gunicorn.conf.py) and `metering serve`
#: alike: its messages go through the same JSON formatter, so they are scrubbed like every
#: other line (gunicorn quotes what it could not parse: a header, a chunk size, a transfer
#: coding, any of which can be a key). Its access line is off: the service writes its own.
GUNICORN_LOGCONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "app.logs.JsonFormatter"}},
    "handlers": {"stderr": {"class": "app.logs.StderrHandler", "formatter": "json"}},
    "root": {"level": "INFO", "handlers": ["stderr"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
        "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
    },
}


def configure_logging(level: int = logging.INFO) -> None:
    """Send every record of the process to stderr as JSON (once per process)."""
    root = logging.getLogger()
    if not any(isinstance(handler.formatter, JsonFormatter) for handler in root.handlers):
        handler = StderrHandler()
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
    root.setLevel(level)
    # The development server's own access line would repeat ours, query string and all.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    logging.captureWarnings(True)  # NDB reports an unreachable cache as a warning


def _start_request() -> None:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    # A key-shaped id would be blanked in every line, losing the request's thread.
    sane = _GOOD_REQUEST_ID.fullmatch(given) and scrub(given) == given
    g.request_id = given if sane else uuid.uuid4().hex
    g.request_started = time.perf_counter()


def _finish_request(response):
    request_id = g.get("request_id") or uuid.uuid4().hex
    response.headers[REQUEST_ID_HEADER] = request_id
    started = g.get("request_started")
    latency = time.perf_counter() - started if started is not None else 0.0
    log.info(
        "%s %s %s",
        request.method,
        request.path,
        response.status_code,
        extra={
            "httpRequest": {
                "requestMethod": request.method,
                "requestUrl": request.path,
                "status": response.status_code,
                "latency": f"{latency:.6f}s",
                "userAgent": request.user_agent.string or "",
                "remoteIp": request.remote_addr,
            }
        },
    )
    return response


def init_app(app) -> None:
    """JSON logs for the process; a request id and an access line for every request."""
    config = app.config["METERING"]
    _SECRETS.update(s for s in (config.admin_token,) if s)
    if config.hashid_salt and len(config.hashid_salt) >= 8:
        _SECRETS.add(config.hashid_salt)
    configure_logging()
    app.before_request_funcs.setdefault(None, []).insert(0, _start_request)
    app.after_request(_finish_request)
