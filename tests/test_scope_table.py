"""Every org route against every scope (issue 16): a key holding one scope gets exactly the
routes of that scope, and 403 naming the scope a route needs everywhere else.

The routes come from the app's URL map, so a route added later is in the table without
anyone writing it here (and a route without `@scope` fails: no key may reach it). Cheap
by design: one org and one key per scope, made once for the module; requests carry
placeholder ids and empty bodies, as the scope is checked before either is read, so a
400 or 404 from a key holding the scope still proves the scope let it through. Nothing
is changed by any request (no id exists, no body is valid).
"""

from __future__ import annotations

import re

import pytest

from app.core.scopes import ALL_SCOPES, SCOPES
from app.openapi.operations import API_KEY, operation_of
from tests.support.http import Api
from tests.support.names import unique_org_name

IGNORED_METHODS = {"HEAD", "OPTIONS"}
#: A value for each path converter that names nothing stored (a key prefix of 12
#: characters, so the keys route gets past its length check to a 404).
PLACEHOLDERS = {"int": "0", "float": "0.0", "uuid": "00000000-0000-0000-0000-000000000000"}
DEFAULT_PLACEHOLDER = "mk_nosuchid0"
_ARGUMENT = re.compile(r"<(?:(?P<converter>[a-zA-Z_]+)(?:\([^)]*\))?:)?(?P<name>\w+)>")


@pytest.fixture(autouse=True)
def _reset_emulator():
    """Overrides conftest's per-test reset: the module shares one org and its keys."""
    yield


def org_routes(app) -> list[tuple[str, str, str | None]]:
    """(method, path with placeholders, scope) of every route an org's API key calls."""
    found = []
    for rule in app.url_map.iter_rules():
        described = operation_of(app.view_functions[rule.endpoint])
        if described is None or described.security != API_KEY:
            continue
        path = _ARGUMENT.sub(
            lambda m: PLACEHOLDERS.get(m.group("converter") or "", DEFAULT_PLACEHOLDER),
            rule.rule,
        )
        for method in sorted(rule.methods - IGNORED_METHODS):
            found.append((method, path, described.scope))
    return found


@pytest.fixture(scope="module")
def keys_by_scope(server, config, emulator) -> dict[str, Api]:
    emulator.reset()
    admin = Api(server.url, config.admin_token)
    org = admin.post("/v1/admin/orgs", json={"name": unique_org_name("scopes")})
    assert org.status_code == 201, org.text
    keys = {}
    for scope in SCOPES:
        issued = admin.post(f"/v1/admin/orgs/{org.json()['name']}/keys", json={"scopes": [scope]})
        assert issued.status_code == 201, issued.text
        assert issued.json()["scopes"] == [scope]
        keys[scope] = Api(server.url, issued.json()["apiKey"])
    return keys


def _call(api: Api, method: str, path: str):
    sends_body = method in ("POST", "PUT", "PATCH")
    return api.request(method, path, json={} if sends_body else None)


def _names_scope(answer, scope: str) -> bool:
    """Whether a 403 names the scope: the envelope's message (`missing_scope`, param
    `scope`), or, under /api/v1 (OpenMeter's API, RFC 7807 problems), the problem's detail."""
    body = answer.json()
    if "error" in body:
        error = body["error"]
        return (error.get("code"), error.get("param")) == ("missing_scope", "scope") and (
            f"'{scope}'" in error["message"]
        )
    return f"'{scope}'" in body.get("detail", "")


def test_the_table_covers_every_org_route_and_each_names_a_scope(app):
    routes = org_routes(app)
    assert len(routes) >= 39  # on the day this was written
    assert [route for route in routes if route[2] not in ALL_SCOPES] == []
    assert ("GET", "/v1/keys", "keys:write") in routes
    assert ("POST", "/v1/billing/meter-events", "events:write") in routes


@pytest.mark.parametrize("scope", list(SCOPES))
def test_a_key_with_one_scope_reaches_exactly_that_scopes_routes(app, keys_by_scope, scope):
    api = keys_by_scope[scope]
    wrong = []
    for method, path, needed in org_routes(app):
        answer = _call(api, method, path)
        if needed == scope:
            if answer.status_code in (401, 403) or answer.status_code >= 500:
                wrong.append((method, path, answer.status_code, answer.text[:200]))
        elif answer.status_code != 403 or not _names_scope(answer, needed or "?"):
            wrong.append((method, path, answer.status_code, answer.text[:200]))
    assert wrong == [], f"{scope}: {wrong}"
