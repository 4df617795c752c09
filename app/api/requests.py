"""Reading request bodies and query strings into validated data."""

from __future__ import annotations

import json

from flask import request

from app.errors import ValidationFailed
from app.schemas import load


def json_body() -> dict:
    """The request body as a JSON object, or a 400 that says what is wrong."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise ValidationFailed("request body is empty; send a JSON object", code="invalid_json")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationFailed(f"request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ValidationFailed("request body must be a JSON object", code="invalid_json")
    return body


def body(schema):
    """The request body validated by `schema`."""
    return load(schema, json_body())


def query(schema):
    """The query string validated by `schema` (repeated names are refused)."""
    args = {}
    for name, values in request.args.lists():
        if len(values) > 1:
            raise ValidationFailed(f"{name} may be given only once", param=name)
        args[name] = values[0]
    return load(schema, args)
