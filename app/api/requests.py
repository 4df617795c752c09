"""Reading request bodies and query strings into validated data.

A body must be one JSON object in UTF-8 of at most `MAX_CONTENT_LENGTH` bytes.
Beyond what `json` itself refuses, `json_body` refuses what would only fail
later, deeper down (and then as a 500): strings that are not valid Unicode (lone
UTF-16 surrogates from `\\ud800` escapes cannot be stored), NaN and Infinity
(not JSON, and they would be echoed back as invalid JSON), numbers too large
for anything to hold, an object naming one field twice, and nesting deep
enough to exhaust the interpreter's recursion limit. Each problem names the
field it was found in (`events[2].userId`) as the error's `param`.
"""

from __future__ import annotations

import json
import re
import math

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from app.errors import ValidationFailed
from app.schemas import load

#: Deepest nesting of objects and arrays a body may have (the body itself is level 1).
MAX_DEPTH = 64
#: Most digits an integer in a body may have; int64 needs 19.
MAX_INT_DIGITS = 100


class _Unusable:
    """Stands in for a JSON value that parses but cannot be used; `why` says why."""

    def __init__(self, why: str):
        self.why = why


class _Repeated(dict):
    """An object that named `field` more than once."""

    def __init__(self, pairs, field: str):
        super().__init__(pairs)
        self.field = field


def _object(pairs: list[tuple[str, object]]) -> dict:
    seen = set()
    for name, _value in pairs:
        if name in seen:
            return _Repeated(pairs, name)
        seen.add(name)
    return dict(pairs)


def _integer(text: str):
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        return _Unusable(f"is a number with more than {MAX_INT_DIGITS} digits")
    return int(text)


def _float(text: str):
    value = float(text)
    if not math.isfinite(value):
        return _Unusable("is a number too large to represent")
    return value


def _constant(name: str):
    return _Unusable(f"is {name}, which is not a JSON value")


def _printable(name: str) -> str:
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def _join(path: str, name: str) -> str:
    name = _printable(name)
    return f"{path}.{name}" if path else name


def _bad_string(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _check(document) -> None:
    """Refuse the first value of `document` that is parsed JSON but unusable."""
    stack = [(document, "", 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, (dict, list)) and depth > MAX_DEPTH:
            raise ValidationFailed(
                f"request body nests objects and arrays more than {MAX_DEPTH} levels deep"
                + (f" at {path}" if path else ""),
                param=path or None, code="invalid_json")
        if isinstance(value, _Repeated):
            where = _join(path, value.field)
            raise ValidationFailed(f"{where} is given more than once", param=where,
                                   code="invalid_json")
        if isinstance(value, dict):
            children = []
            for name, item in value.items():
                where = _join(path, name)
                if _bad_string(name):
                    raise ValidationFailed(f"{where}: the field name is not valid Unicode "
                                           "(a lone UTF-16 surrogate)", param=where,
                                           code="invalid_json")
                children.append((item, where, depth + 1))
            stack.extend(reversed(children))
        elif isinstance(value, list):
            stack.extend(reversed([(item, f"{path}[{index}]", depth + 1)
                                   for index, item in enumerate(value)]))
        elif isinstance(value, _Unusable):
            raise ValidationFailed(f"{path or 'request body'} {value.why}", param=path or None,
                                   code="invalid_json")
        elif isinstance(value, str) and _bad_string(value):
            raise ValidationFailed(f"{path or 'request body'} is not valid Unicode "
                                   "(a lone UTF-16 surrogate)", param=path or None,
                                   code="invalid_json")


def _raw_body() -> bytes:
    """The body's bytes; 413 if it is larger than the configured maximum.

    A body with a `Content-Length` over the limit is refused before it is read. A
    streamed (chunked) body has no length: werkzeug stops reading it at the limit
    and would hand over a truncated body, so it is read to one byte past the limit
    to tell a body at the limit from one over it.
    """
    limit = request.max_content_length
    if limit is not None and "_cached_data" not in request.__dict__:
        try:
            request.max_content_length = limit + 1
        except AttributeError:  # Flask < 3.1: the limit cannot be set per request
            pass
    raw = request.get_data(cache=True)
    if limit is not None and len(raw) > limit:
        raise RequestEntityTooLarge()
    return raw


def json_body() -> dict:
    """The request body as a JSON object, or a 400 that says what is wrong."""
    raw = _raw_body()
    if not raw.strip():
        raise ValidationFailed("request body is empty; send a JSON object", code="invalid_json")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationFailed(f"request body is not valid UTF-8: {exc.reason} at byte {exc.start}",
                               code="invalid_json") from None
    try:
        body = json.loads(text, object_pairs_hook=_object, parse_int=_integer,
                          parse_float=_float, parse_constant=_constant)
    except RecursionError:
        raise ValidationFailed(
            f"request body nests objects and arrays more than {MAX_DEPTH} levels deep",
            code="invalid_json") from None
    except ValueError as exc:
        raise ValidationFailed(f"request body is not valid JSON: {exc}",
                               code="invalid_json") from None
    if not isinstance(body, dict):
        raise ValidationFailed("request body must be a JSON object, not "
                               + _json_type(body), code="invalid_json")
    _check(body)
    return body


def _json_type(value) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


def body(schema):
    """The request body validated by `schema`."""
    return load(schema, json_body())


def _query_args(repeatable=lambda name: False) -> dict:
    args = {}
    for name, values in request.args.lists():
        if not name:
            raise ValidationFailed("the query string has a parameter without a name")
        if repeatable(name):
            args[name] = values
        elif len(values) > 1:
            raise ValidationFailed(f"{name} may be given only once", param=name)
        else:
            args[name] = values[0]
    return args


def query(schema):
    """The query string validated by `schema` (repeated and unnamed parameters are refused)."""
    return load(schema, _query_args())


_FILTER = re.compile(r"^filter\[([^\[\]]{1,64})\]$")


def summary_query() -> tuple[dict, dict[str, frozenset[str]]]:
    """The summary's query string: its fields, and `filter[NAME]=VALUE` (repeatable)."""
    from app.schemas.events import SummaryQuery

    filters: dict[str, frozenset[str]] = {}
    args = {}
    repeatable = lambda name: name == "groupBy" or name.startswith("filter")  # noqa: E731
    for name, values in _query_args(repeatable).items():
        match = _FILTER.match(name) if name.startswith("filter") else None
        if name.startswith("filter") and match is None:
            raise ValidationFailed("filters read filter[NAME]=VALUE", param=name)
        if match is None:
            args[name] = values
            continue
        filters[match.group(1)] = frozenset(values)
    return load(SummaryQuery(), args), filters
