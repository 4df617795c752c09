"""Request and response shapes (marshmallow), used only at the HTTP edge.

`load(schema, data)` validates a request body or query and turns marshmallow's
nested error dict into one `ValidationFailed` whose `param` names the first bad
field (`events[3].timestamp`) and whose `errors` list names all of them.
"""

from __future__ import annotations

from datetime import datetime, timezone

from marshmallow import Schema, ValidationError

from app.errors import ValidationFailed


# Fields that are JSON objects: marshmallow reports an entry's problems under
# {"<entry>": {"key": [...], "value": [...]}}, which we name `field.<entry>`.
_DICT_FIELDS = {"dimensions", "metadata"}


def _flatten(messages, path: str = "", depth_in_dict: int = 0) -> list[dict]:
    if isinstance(messages, str):
        return [{"param": path or None, "message": messages}]
    if isinstance(messages, list):
        found = []
        for item in messages:
            found += _flatten(item, path)
        return found
    found = []
    for key, sub in messages.items():
        if key == "_schema" or (depth_in_dict == 2 and key in ("key", "value")) or (
                depth_in_dict == 1 and key == ""):
            sub_path = path
        elif isinstance(key, int):
            sub_path = f"{path}[{key}]"
        else:
            sub_path = f"{path}.{key}" if path else str(key)
        if depth_in_dict == 1:
            child_depth = 2  # `key` names one entry of the object
        else:
            child_depth = 1 if str(key) in _DICT_FIELDS else 0
        found += _flatten(sub, sub_path, child_depth)
    return found


def _describe(problem: dict) -> str:
    message = problem["message"].rstrip(".")
    if message == "Unknown field":
        return f"unknown field {problem['param']}"
    if message == "Missing data for required field":
        return f"{problem['param']} is required"
    if problem["param"]:
        return f"{problem['param']}: {message[0].lower() + message[1:]}"
    return message


def validation_failed(messages) -> ValidationFailed:
    """One ValidationFailed for a marshmallow error dict."""
    problems = _flatten(messages) or [{"param": None, "message": "invalid request"}]
    details = [
        {"param": p["param"], "message": _describe(p)} if p["param"] else {"message": _describe(p)}
        for p in problems
    ]
    first = details[0]
    return ValidationFailed(first["message"], param=first.get("param"),
                            details=details if len(details) > 1 else None)


def load(schema: Schema, data):
    """Validate `data` with `schema`, raising ValidationFailed on any problem."""
    try:
        return schema.load(data)
    except ValidationError as exc:
        raise validation_failed(exc.messages) from None


def format_time(value: datetime | None) -> str | None:
    """RFC 3339 in UTC with a `Z`, microseconds only when there are some."""
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
