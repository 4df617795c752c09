"""Request and response shapes (marshmallow), used only at the HTTP edge.

`load(schema, data)` validates a request body or query and turns marshmallow's
nested error dict into one `ValidationFailed` whose `param` names the first bad
field (`events[3].timestamp`) and whose `errors` list names the first
`MAX_LISTED_ERRORS` of them (then one entry counting the rest).

An error answer must stay small whatever the request: a caller's text (a field
name, a query parameter) is echoed at most `MAX_ECHOED_NAME` characters per name
and `MAX_ECHOED_PATH` per `param`, and the schemas refuse a list or object longer
than its limit before looking at its entries (`app.schemas.fields`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from marshmallow import Schema, ValidationError, pre_load

from app.errors import ValidationFailed

#: Problems listed in `error.errors`; one more entry says how many were left out.
MAX_LISTED_ERRORS = 20
#: Characters of one caller-chosen name (a field, a key) repeated in an error.
MAX_ECHOED_NAME = 128
#: Characters of a whole `param` (a path of names) repeated in an error.
MAX_ECHOED_PATH = 512


def shorten(text: str, limit: int = MAX_ECHOED_NAME) -> str:
    """`text`, cut to `limit` characters with a mark saying how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…({len(text)} characters)"


# Fields that are JSON objects: marshmallow reports an entry's problems under
# {"<entry>": {"key": [...], "value": [...]}}, which we name `field.<entry>`.
_DICT_FIELDS = {"dimensions", "metadata", "filter"}  # filter: issue 14, alert rules


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
        if (
            key == "_schema"
            or (depth_in_dict == 2 and key in ("key", "value"))
            or (depth_in_dict == 1 and key == "")
        ):
            sub_path = path
        elif isinstance(key, int):
            sub_path = f"{path}[{key}]"
        else:
            name = shorten(str(key))
            sub_path = shorten(f"{path}.{name}" if path else name, MAX_ECHOED_PATH)
        if depth_in_dict == 1:  # noqa: SIM108 - two cases, each with its own reason
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


def failure(details: list[dict]) -> ValidationFailed:
    """One ValidationFailed for problems `{"param"?, "message"}`: the first is the error's
    own message and param; `errors` lists the first MAX_LISTED_ERRORS, then one entry
    with the count of the rest (a message only, no param)."""
    first = details[0]
    listed = details[:MAX_LISTED_ERRORS]
    if len(details) > MAX_LISTED_ERRORS:
        left_out = len(details) - MAX_LISTED_ERRORS
        listed = listed + [{"message": f"{left_out} more problem{'s' * (left_out > 1)} not listed"}]
    return ValidationFailed(
        first["message"], param=first.get("param"), details=listed if len(details) > 1 else None
    )


def validation_failed(messages) -> ValidationFailed:
    """One ValidationFailed for a marshmallow error dict."""
    problems = _flatten(messages) or [{"param": None, "message": "invalid request"}]
    return failure(
        [
            {"param": p["param"], "message": _describe(p)}
            if p["param"]
            else {"message": _describe(p)}
            for p in problems
        ]
    )


class BoundedSchema(Schema):
    """A schema that refuses an object with more than MAX_LISTED_ERRORS unknown fields as
    one problem, before marshmallow would list (and echo) every one of them."""

    @pre_load
    def _few_unknown_fields(self, data, **_):
        if isinstance(data, dict) and len(data) > len(self.load_fields) + MAX_LISTED_ERRORS:
            known = {field.data_key or name for name, field in self.load_fields.items()}
            unknown = [name for name in data if name not in known]
            if len(unknown) > MAX_LISTED_ERRORS:
                shown = ", ".join(shorten(str(name)) for name in unknown[:3])
                raise ValidationError(f"{len(unknown)} unknown fields, such as {shown}")
        return data


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
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
