"""The JSONPath subset meters read CloudEvents' `data` with: a path of object keys.

`$.tokens`, `$.usage.input`, `$['model name']`, `$["a"].b` and mixes of them name one
value by walking object keys from the root. Nothing else of JSONPath (indexes, wildcards,
filters, recursive descent) is accepted: a meter reads one number or string per event,
and a path that could match several values would make its reading ambiguous. Paths are
parsed once, when a meter is created, so an event costs only dictionary lookups.
"""

from __future__ import annotations

import re
from typing import Any

#: A `.name` step: letters, digits, `_` and `-`, not starting with a digit or `-`.
_DOT = re.compile(r"\.([A-Za-z_][A-Za-z0-9_\-]*)")
#: A `['name']` or `["name"]` step; the quote may appear inside only backslash-escaped.
_BRACKET = re.compile(r"""\[\s*(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)")\s*\]""")
_ESCAPE = re.compile(r"\\(.)")

#: What `read` answers when the path names nothing in the data.
MISSING: Any = object()


class InvalidPath(ValueError):
    """The text is not a path of the accepted subset; the message says why."""


def parse(text: str) -> tuple[str, ...]:
    """The keys a path walks, in order; InvalidPath for anything outside the subset."""
    if not isinstance(text, str) or not text.startswith("$"):
        raise InvalidPath("must start with $")
    keys: list[str] = []
    at = 1
    while at < len(text):
        step = _DOT.match(text, at) or _BRACKET.match(text, at)
        if step is None:
            raise InvalidPath(
                f"unsupported syntax at character {at + 1}: only $.name and $['name'] "
                "steps are accepted"
            )
        name = next(group for group in step.groups() if group is not None)
        keys.append(_ESCAPE.sub(r"\1", name))
        at = step.end()
    if not keys:
        raise InvalidPath("must name a property, e.g. $.tokens")
    return tuple(keys)


def read(data: Any, keys: tuple[str, ...]) -> Any:
    """The value the parsed path names in `data`, or MISSING."""
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return MISSING
        data = data[key]
    return data
