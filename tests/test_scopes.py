"""Every route of an org's API needs one named scope, and the document says which.

The table test fails when a new route is added without `@scope`: least privilege
cannot be forgotten route by route.
"""

from __future__ import annotations

from app.core.scopes import ALL_SCOPES
from app.openapi.operations import API_KEY, operation_of


def _key_routes(app):
    """(rule, view, operation) of every route an org's API key calls."""
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        described = operation_of(view)
        if described is not None and described.security == API_KEY:
            yield rule, view, described


def test_every_route_an_api_key_calls_names_a_known_scope(app):
    routes = list(_key_routes(app))
    assert len(routes) > 30
    missing = [rule.rule for rule, _view, described in routes if described.scope is None]
    assert missing == []
    assert {described.scope for _rule, _view, described in routes} <= ALL_SCOPES


def test_the_document_states_each_operations_scope(app, anonymous):
    spec = anonymous.get("/openapi.json").json()
    stated = {
        (path, method): operation["security"]
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and "security" in operation
    }
    keyed = [
        requirement[API_KEY]
        for requirements in stated.values()
        for requirement in requirements
        if API_KEY in requirement
    ]
    assert keyed and all(len(scopes) == 1 and scopes[0] in ALL_SCOPES for scopes in keyed)
    summary = spec["paths"]["/v1/billing/meter-events/summary"]["get"]["security"]
    assert summary == [{API_KEY: ["usage:read"]}]
