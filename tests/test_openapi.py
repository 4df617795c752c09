"""The OpenAPI document at /openapi.json and its reference page at /docs."""

from __future__ import annotations

import re

import pytest
from openapi_spec_validator import validate

from app import create_app
from app.api.openapi import document_of
from app.openapi import document
from app.openapi.document import IMPLICIT_METHODS, UndocumentedRoute, openapi_path
from tests.support.http import error_of

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@pytest.fixture(scope="module")
def served(server) -> dict:
    from tests.support.http import Api

    answer = Api(server.url).get("/openapi.json")
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "application/json"
    return answer.json()


def operations_of(spec: dict) -> set[tuple[str, str]]:
    return {
        (path, method.upper())
        for path, item in spec["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def test_the_served_document_is_valid_openapi_3(served):
    validate(served)
    assert served["openapi"].startswith("3.")


def test_every_route_of_the_app_is_documented_and_nothing_else(app, served):
    """Static files aside; a view served at `/x` and `/x/` is documented once."""

    def canonical(path):
        return path.rstrip("/") or "/"

    routes = {
        (canonical(openapi_path(rule.rule)), method)
        for rule in app.url_map.iter_rules()
        if not rule.endpoint.endswith("static")
        for method in rule.methods - IMPLICIT_METHODS
    }
    documented = {(canonical(path), method) for path, method in operations_of(served)}
    assert routes and documented == routes
    assert len(documented) == len(operations_of(served))


def test_an_app_with_an_undescribed_route_gets_no_document(config):
    app = create_app(config)

    @app.get("/v1/billing/invoices")
    def list_invoices():
        """List invoices."""
        return {}

    with pytest.raises(UndocumentedRoute, match="list_invoices"):
        document.build(app)


def test_the_document_is_built_from_the_running_configuration(config):
    spec = document.build(create_app(config.replace(max_batch_events=7)))
    events = spec["components"]["schemas"]["EventBatch"]["properties"]["events"]
    assert (events["minItems"], events["maxItems"]) == (1, 7)
    assert events["items"] == {"$ref": "#/components/schemas/EventIn"}


def test_every_operation_says_who_may_call_it(served):
    for scheme in served["components"]["securitySchemes"].values():
        assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")  # Authorization: Bearer
    for path, item in served["paths"].items():
        for method, operation in item.items():
            scope = operation["security"][0].get("apiKey") if operation["security"] else None
            expected = (
                [{"portalToken": []}]  # issue 16: an end customer's portal token
                if path.startswith("/v1/portal/meters")
                else [{"apiKey": scope}]  # its scope: tests/test_scopes.py
                if path.startswith(
                    ("/v1/billing/", "/v1/webhooks/", "/api/v1/", "/v1/keys", "/v1/portal/")
                )
                else [{"adminToken": []}]
                if path.startswith(("/v1/admin/", "/v1/cron/"))
                else []
            )
            assert operation["security"] == expected, (method, path)
            if expected:
                assert "401" in operation["responses"], (method, path)


def test_every_error_answer_is_the_envelope(served):
    """Under /api/v1 (OpenMeter's API) the same answers are RFC 7807 problems."""
    shared = served["components"]["responses"]
    envelopes = {
        "BadRequest",
        "Unauthorized",
        "Forbidden",
        "NotFound",
        "Conflict",
        "TooManyRequests",
        "PayloadTooLarge",
        "Unavailable",
    }
    assert set(shared) == envelopes | {"Problem" + name for name in envelopes}
    assert "Retry-After" in shared["TooManyRequests"]["headers"]
    assert "Retry-After" in shared["Unavailable"]["headers"]
    for name, answer in shared.items():
        if name in envelopes:
            assert answer["content"] == {
                "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
            }
        else:
            assert answer["content"] == {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            }
            assert answer["headers"] == shared[name[len("Problem") :]]["headers"]
    error = served["components"]["schemas"]["ErrorBody"]
    assert error["required"] == ["message", "type"]
    for path, item in served["paths"].items():
        problems = path.startswith("/api/v1/")
        for operation in item.values():
            for status, answer in operation["responses"].items():
                if status.startswith(("4", "5")):
                    assert answer["$ref"].startswith("#/components/responses/")
                    assert answer["$ref"].startswith("#/components/responses/Problem") == problems
            assert "413" in operation["responses"]
            # The per-org limits apply wherever an org key is the caller, the limit of
            # wrong credentials per address wherever a key or the admin token is.
            assert ("429" in operation["responses"]) == bool(operation["security"])


def test_the_summary_documents_its_repeatable_and_filter_parameters(served):
    parameters = {
        p["name"]: p
        for p in served["paths"]["/v1/billing/meter-events/summary"]["get"]["parameters"]
    }
    assert parameters["meterId"]["required"] is True
    assert parameters["windowSize"]["schema"]["enum"] == ["hour", "day", "month"]
    assert parameters["groupBy"]["schema"]["type"] == "array"
    assert (parameters["groupBy"]["style"], parameters["groupBy"]["explode"]) == ("form", True)
    assert parameters["filter"]["style"] == "deepObject" and parameters["filter"]["explode"]
    assert set(parameters) == {
        "meterId",
        "userId",
        "periodStart",
        "periodEnd",
        "windowSize",
        "timeZone",
        "groupBy",
        "filter",
        "limit",
        "cursor",
        "orderBy",
    }
    limit = parameters["limit"]["schema"]
    assert (limit["type"], limit["minimum"], limit["maximum"]) == ("integer", 1, 1000)
    assert parameters["orderBy"]["schema"]["enum"] == ["value", "-value"]
    assert parameters["cursor"]["schema"]["type"] == "string"
    answer = served["paths"]["/v1/billing/meter-events/summary"]["get"]["responses"]["200"]
    summary = answer["content"]["application/json"]["schema"]
    name = summary["$ref"].rsplit("/", 1)[-1]
    next_cursor = served["components"]["schemas"][name]["properties"]["nextCursor"]
    assert "null" in next_cursor["type"] and "cursor" in next_cursor["description"]


def test_an_answer_the_document_describes_matches_it(api, served):
    """A hand-made check of one answer; the fuzzing tests check every operation."""
    meter = api.create_meter(dimensions=["model"])
    schema = served["components"]["schemas"]["Meter"]
    assert set(meter) <= set(schema["properties"])
    assert set(schema["required"]) <= set(meter)
    missing = api.get("/v1/billing/meters/" + meter["id"] + "x")
    assert missing.status_code == 404 and error_of(missing)["code"] == "meter_not_found"


def test_the_document_needs_no_credentials_and_is_built_once(app, anonymous):
    first = anonymous.get("/openapi.json")
    assert first.status_code == 200 and first.json() == anonymous.get("/openapi.json").json()
    with app.app_context():
        assert document_of(app) is document_of(app)


def test_the_docs_page_shows_every_operation_without_fetching_anything(anonymous, served):
    page = anonymous.get("/docs")
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    html = page.text
    assert "<script" not in html and not re.search(r"(src|href)=\"(https?:)?//", html)
    for item in served["paths"].values():
        for operation in item.values():
            assert f'id="{operation["operationId"]}"' in html
            assert operation["summary"] in html.replace("&#39;", "'")
    for name in served["components"]["schemas"]:
        assert f'id="schema-{name}"' in html
    assert "filter[NAME]" in html and "repeatable" in html


def test_the_docs_page_escapes_what_it_shows():
    from app.openapi import page

    spec = {
        "openapi": "3.0.3",
        "info": {"title": "<b>t</b>", "version": "1", "description": "<script>x</script>"},
        "paths": {},
        "components": {"schemas": {}},
    }
    html = page.render(spec)
    assert "<script>x" not in html and "&lt;script&gt;x" in html
    assert "<b>t</b>" not in html
