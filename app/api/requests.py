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

import contextlib
import gc
import itertools
import json
import math
import re

from flask import request
from gunicorn.http.errors import NoMoreData, ParseException
from werkzeug.exceptions import RequestEntityTooLarge

from app.errors import ValidationFailed
from app.schemas import MAX_ECHOED_NAME, MAX_ECHOED_PATH, load, shorten
from app.schemas.events import SummaryQuery

#: Deepest nesting of objects and arrays a body may have (the body itself is level 1).
MAX_DEPTH = 64
#: Most digits an integer in a body may have; int64 needs 19.
MAX_INT_DIGITS = 100
#: Most fields one object of a body may have. No request has a use for more: an event
#: has 8 fields, metadata 50 keys, and 8 KiB of metadata JSON holds objects of at most
#: about 900 distinct keys. Refused while parsing, before the object is built.
MAX_OBJECT_FIELDS = 4096


class _TooManyFields(Exception):
    """Raised from the parser's object hook; stops parsing at once."""


class _Unusable:
    """Stands in for a JSON value that parses but cannot be used; `why` says why."""

    def __init__(self, why: str):
        self.why = why


class _Repeated(dict):
    """An object that named `field` more than once."""

    def __init__(self, pairs, field: str):
        super().__init__(pairs)
        self.field = field


# A `\\uD800`..`\\uDFFF` escape: the only way a decoded body can hold a UTF-16 surrogate
# (the UTF-8 decoder refuses encoded ones). A hint only: a valid pair matches too.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
# Integers are parsed by the checking hook only when the body holds a run of more than
# MAX_INT_DIGITS digits, floats only when it holds a digit, an `e` and a three-digit
# exponent (hints only: strings may hold those too). Found with `bytes.translate` and
# substring searches, which run in C: a regular expression trying every digit of a
# megabyte of numbers took tens of milliseconds.
_NUMBER_SHAPES = bytes.maketrans(b"0123456789Ee-", b"0000000000ee+")
_LONG_DIGITS = b"0" * (MAX_INT_DIGITS + 1)
_LARGE_EXPONENTS = (b"0e000", b"0e+000")


def _number_hints(raw: bytes) -> tuple[bool, bool]:
    """(may hold a too long integer, may hold a float out of range)."""
    shapes = raw.translate(_NUMBER_SHAPES)
    long_digits = _LONG_DIGITS in shapes
    return long_digits, long_digits or any(shape in shapes for shape in _LARGE_EXPONENTS)


class _Parser:
    """`json.loads` hooks for one body, which note whether any value may be unusable.

    Most bodies hold nothing unusable, so `_check` then walks only their objects and
    arrays (for depth); it looks for stand-ins only when a hook may have made one
    (`suspect`), and at strings only when one really holds a lone surrogate (`strings`,
    see `settle`).
    """

    def __init__(self, raw: bytes):
        self.strings = _SURROGATE_ESCAPE.search(raw) is not None
        long_integers, large_floats = _number_hints(raw)
        self.suspect = long_integers  # so `_check` looks for `_checked_int`'s stand-ins
        self.parse_int = _checked_int if long_integers else int  # the builtins parse in C
        self.parse_float = self.float if large_floats else float

    def object(self, pairs: list[tuple[str, object]]) -> dict:
        if not pairs:
            return {}
        if len(pairs) > MAX_OBJECT_FIELDS:
            raise _TooManyFields(len(pairs))
        value = dict(pairs)
        if len(value) == len(pairs):
            return value
        self.suspect = True
        seen = set()
        for name, _item in pairs:
            if name in seen:
                return _Repeated(pairs, name)
            seen.add(name)
        return value  # not reached: a shorter dict means a repeated name

    def float(self, text: str):
        value = float(text)
        if not math.isfinite(value):
            self.suspect = True
            return _Unusable("is a number too large to represent")
        return value

    def constant(self, name: str):
        self.suspect = True
        return _Unusable(f"is {name}, which is not a JSON value")

    def settle(self, document) -> None:
        """Clear `strings` when no string of `document` holds a lone surrogate: one encode
        of the whole document (in C) instead of one per string."""
        if self.strings:
            try:
                json.dumps(document, ensure_ascii=False, default=lambda _: None).encode("utf-8")
            except UnicodeEncodeError:
                self.suspect = True
            else:
                self.strings = False


def _checked_int(text: str, _int=int, _limit=MAX_INT_DIGITS):
    """An integer of at most MAX_INT_DIGITS digits, or a stand-in saying it is longer (a
    plain function with its globals bound: it runs once per integer of such a body)."""
    if len(text) > _limit and len(text.lstrip("-")) > _limit:
        return _Unusable(f"is a number with more than {_limit} digits")
    return _int(text)


def _printable(name: str) -> str:
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def _bad_string(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


_CONTAINERS = (dict, list, _Repeated)


def _check(document, parser: _Parser) -> None:
    """Refuse the shallowest unusable value of `document` (the first of its level).

    The walk goes level by level and touches each value with C-level operations
    (`chain.from_iterable`, `filter`) and one type test: a megabyte of `{}` walks in a
    few milliseconds (it took 0.7 s with a path string pushed per value). Stand-ins are
    looked for only when the parser may have made one, and a path is worked out only
    for the value refused (`_locate`).
    """
    parser.settle(document)
    levels: list[list] = []
    level, depth = [document], 1
    while level:
        if depth > MAX_DEPTH:
            where = _locate(level[0], levels)
            raise ValidationFailed(
                f"request body nests objects and arrays more than {MAX_DEPTH} levels deep"
                + (f" at {where}" if where else ""),
                param=where or None,
                code="invalid_json",
            )
        children = _values(level)
        if parser.suspect:
            _refuse_first_problem(level, children, levels, parser)
        levels.append(level)
        depth += 1
        if depth <= MAX_DEPTH:  # empty ones have nothing to look into, unless too deep
            level = [item for item in filter(None, children) if type(item) in _CONTAINERS]
        else:
            level = [item for item in children if type(item) in _CONTAINERS]


def _values(level: list) -> list:
    """The values of every container of a level, in order; in C when they are all objects."""
    try:
        return list(itertools.chain.from_iterable(map(dict.values, level)))
    except TypeError:  # arrays among them
        children: list = []
        for container in level:
            children.extend(container if type(container) is list else container.values())
        return children


def _refuse_first_problem(level: list, children: list, levels: list, parser: _Parser) -> None:
    """Refuse the first repeated field, unusable field name or unusable value of a level.

    Without strings to look into, the stand-ins are found by their type with
    `list(map(type, ...)).index(...)`, in C, instead of a Python loop over every value.
    """
    if not parser.strings:
        repeated = _first_of_type(level, _Repeated)
        if repeated is not None:
            where = _join(_locate(repeated, levels), repeated.field)
            _refuse(f"{where} is given more than once", where)
        unusable = _first_of_type(children, _Unusable)
        if unusable is not None:
            where = _locate(unusable, levels + [level])
            _refuse(f"{where or 'request body'} {unusable.why}", where)
        return
    for container in level:
        if type(container) is _Repeated:
            where = _join(_locate(container, levels), container.field)
            _refuse(f"{where} is given more than once", where)
        if type(container) is not list:
            for name in container:
                if _bad_string(name):
                    where = _join(_locate(container, levels), name)
                    _refuse(
                        f"{where}: the field name is not valid Unicode (a lone UTF-16 surrogate)",
                        where,
                    )
    for item in children:
        why = _problem(item, parser)
        if why is not None:
            where = _locate(item, levels + [level])
            _refuse(f"{where or 'request body'} {why}", where)


def _first_of_type(values: list, kind: type):
    try:
        return values[list(map(type, values)).index(kind)]
    except ValueError:
        return None


def _problem(value, parser: _Parser) -> str | None:
    """Why a scalar cannot be used, or None."""
    if type(value) is _Unusable:
        return value.why
    if parser.strings and type(value) is str and _bad_string(value):
        return "is not valid Unicode (a lone UTF-16 surrogate)"
    return None


def _refuse(message: str, where: str) -> None:
    raise ValidationFailed(message, param=where or None, code="invalid_json")


def _locate(target, levels: list[list]) -> str:
    """The path of `target` (found by identity), whose parent is in `levels[-1]`, whose
    parent's parent is in `levels[-2]`, and so on; shortened for echoing."""
    steps = []
    for containers in reversed(levels):
        found = _parent_of(target, containers)
        if found is None:
            break
        target, key = found
        steps.append(key)
    path = ""
    for key in reversed(steps):
        path = f"{path}[{key}]" if isinstance(key, int) else _join(path, key)
    return shorten(path, MAX_ECHOED_PATH)


def _parent_of(target, containers: list):
    for container in containers:
        pairs = enumerate(container) if type(container) is list else container.items()
        for key, value in pairs:
            if value is target:
                return container, key
    return None


def _join(path: str, name: str) -> str:
    name = shorten(_printable(name), MAX_ECHOED_NAME)
    return shorten(f"{path}.{name}" if path else name, MAX_ECHOED_PATH)


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
    try:
        raw = request.get_data(cache=True)
    except (ParseException, NoMoreData) as exc:  # gunicorn: a broken chunked body
        raise ValidationFailed(
            f"request body could not be read: {type(exc).__name__}", param=None
        ) from None
    if limit is not None and len(raw) > limit:
        raise RequestEntityTooLarge()
    return raw


@contextlib.contextmanager
def _collector_paused():
    """Pause the cyclic garbage collector while a body is parsed.

    Parsing makes up to a few hundred thousand containers, none of them garbage, and
    each few hundred allocations start a collection that walks them again: an object
    of 80,000 keys parsed twice as slowly. The pause is process-wide but short (one
    parse, tens of milliseconds); only the thread that paused it resumes it, so
    overlapping requests at worst parse with the collector running.
    """
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def has_body() -> bool:
    """Whether the request sent a body (issue 16: optional bodies)."""
    return bool(_raw_body().strip())


def json_body() -> dict:
    """The request body as a JSON object, or a 400 that says what is wrong."""
    raw = _raw_body()
    if not raw.strip():
        raise ValidationFailed("request body is empty; send a JSON object", code="invalid_json")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationFailed(
            f"request body is not valid UTF-8: {exc.reason} at byte {exc.start}",
            code="invalid_json",
        ) from None
    parser = _Parser(raw)
    try:
        with _collector_paused():
            body = json.loads(
                text,
                object_pairs_hook=parser.object,
                parse_int=parser.parse_int,
                parse_float=parser.parse_float,
                parse_constant=parser.constant,
            )
    except _TooManyFields as exc:
        raise ValidationFailed(
            f"request body holds an object of {exc.args[0]} fields; an "
            f"object may hold at most {MAX_OBJECT_FIELDS}",
            code="invalid_json",
        ) from None
    except RecursionError:
        raise ValidationFailed(
            f"request body nests objects and arrays more than {MAX_DEPTH} levels deep",
            code="invalid_json",
        ) from None
    except ValueError as exc:
        raise ValidationFailed(
            f"request body is not valid JSON: {exc}", code="invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise ValidationFailed(
            "request body must be a JSON object, not " + _json_type(body), code="invalid_json"
        )
    _check(body, parser)
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
    args: dict[str, object] = {}
    for name, values in request.args.lists():
        if not name:
            raise ValidationFailed("the query string has a parameter without a name")
        if repeatable(name):
            args[name] = values
        elif len(values) > 1:
            shown = shorten(name, MAX_ECHOED_PATH)
            raise ValidationFailed(f"{shown} may be given only once", param=shown)
        else:
            args[name] = values[0]
    return args


def query(schema):
    """The query string validated by `schema` (repeated and unnamed parameters are refused)."""
    return load(schema, _query_args())


_FILTER = re.compile(r"filter\[([^\[\]]{1,64})\]")  # fullmatch: no final newline


def summary_query(schema=None) -> tuple[dict, dict[str, frozenset[str]]]:
    """The summary's query string: its fields, and `filter[NAME]=VALUE` (repeatable).
    `schema` replaces `SummaryQuery` (the portal's summary, issue 16)."""
    filters: dict[str, frozenset[str]] = {}
    args = {}
    repeatable = lambda name: name == "groupBy" or name.startswith("filter")  # noqa: E731
    for name, values in _query_args(repeatable).items():
        match = _FILTER.fullmatch(name) if name.startswith("filter") else None
        if name.startswith("filter") and match is None:
            raise ValidationFailed(
                "filters read filter[NAME]=VALUE", param=shorten(name, MAX_ECHOED_PATH)
            )
        if match is None:
            args[name] = values
            continue
        filters[match.group(1)] = frozenset(values)
    return load(schema or SummaryQuery(), args), filters
