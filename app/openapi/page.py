"""The OpenAPI document as one human-readable HTML page, rendered on the server.

The page needs nothing at run time but this process: no script, no stylesheet
or font from elsewhere. Operations are grouped by tag; each lists its auth,
parameters, body and answers, linking to the schemas, which follow as tables.
Jinja escapes every string from the document.
"""

from __future__ import annotations

import re

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape

_environment = Environment(
    loader=PackageLoader("app.openapi", "templates"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_METHODS = ("get", "post", "put", "patch", "delete")
_CODE = re.compile(r"`([^`]+)`")


def inline_code(text: str) -> Markup:
    """Text with its `backquoted` parts set as code, everything else escaped."""
    return Markup(_CODE.sub(r"<code>\1</code>", str(escape(text))))


_environment.filters["code"] = inline_code


def render(document: dict) -> str:
    """The page for an OpenAPI 3 document."""
    return _environment.get_template("docs.html").render(
        info=document["info"],
        version=document["openapi"],
        tags=_by_tag(document),
        tag_descriptions={tag["name"]: tag.get("description") for tag in document.get("tags", [])},
        schemas=document.get("components", {}).get("schemas", {}),
        security=document.get("components", {}).get("securitySchemes", {}),
        responses=document.get("components", {}).get("responses", {}),
        type_of=type_of,
        constraints_of=constraints_of,
        ref_name=ref_name,
    )


def _by_tag(document: dict) -> dict[str, list[dict]]:
    tags: dict[str, list[dict]] = {tag["name"]: [] for tag in document.get("tags", [])}
    for path, item in document["paths"].items():
        for method in _METHODS:
            if method in item:
                operation = item[method]
                tags.setdefault(operation["tags"][0], []).append(
                    {"path": path, "method": method, **operation}
                )
    return {name: operations for name, operations in tags.items() if operations}


def ref_name(value: dict) -> str | None:
    """The component name a `$ref` points to, or None for an inline value."""
    ref = value.get("$ref") if isinstance(value, dict) else None
    return ref.rsplit("/", 1)[-1] if ref else None


def type_of(schema: dict) -> dict:
    """A short label for a schema and, if it is a named schema, the name to link to."""
    name = ref_name(schema)
    if name:
        return {"label": name, "link": name}
    if schema.get("type") == "array":
        inner = type_of(schema.get("items", {}))
        return {"label": f"array of {inner['label']}", "link": inner["link"]}
    if schema.get("type") == "object" and isinstance(schema.get("additionalProperties"), dict):
        inner = type_of(schema["additionalProperties"])
        return {"label": f"object of {inner['label']}", "link": inner["link"]}
    types = schema.get("type")
    if types is None and schema.get("anyOf"):  # a value of several types (a summary value)
        types = list(dict.fromkeys(option.get("type", "any") for option in schema["anyOf"]))
    types = types or "any"
    types = [types] if isinstance(types, str) else list(types)
    label = " or ".join(t for t in types if t != "null")
    formats = [schema.get("format")] + [option.get("format") for option in schema.get("anyOf", [])]
    if any(formats):
        label += f" ({' or '.join(f for f in formats if f)})"
    if "null" in types:
        label += " or null"
    return {"label": label, "link": None}


_PLURALS = {"character": "characters", "item": "items", "entry": "entries"}
_LIMITS = (
    ("minLength", "at least", "character"),
    ("maxLength", "at most", "character"),
    ("minItems", "at least", "item"),
    ("maxItems", "at most", "item"),
    ("minProperties", "at least", "entry"),
    ("maxProperties", "at most", "entry"),
    ("minimum", "at least", None),
    ("maximum", "at most", None),
)


def _limit(words: str, number, noun: str | None) -> str:
    if noun is None:
        return f"{words} {number}"
    return f"{words} {number} {noun if number == 1 else _PLURALS[noun]}"


def constraints_of(schema: dict) -> list[str]:
    """The rules a schema sets on its value, in words."""
    rules = []
    if "propertyNames" in schema:
        rules += [f"each name {rule}" for rule in constraints_of(schema["propertyNames"])]
    if "enum" in schema:
        rules.append("one of " + ", ".join(str(value) for value in schema["enum"]))
    rules += [_limit(words, schema[key], noun) for key, words, noun in _LIMITS if key in schema]
    if "pattern" in schema:
        rules.append(f"matches {schema['pattern']}")
    items = schema.get("items")
    if isinstance(items, dict) and not ref_name(items):
        rules += [f"each {rule}" for rule in constraints_of(items)]
    return rules
