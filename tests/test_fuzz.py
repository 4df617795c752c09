"""Schemathesis fuzzes every operation of the API's document against the real service.

Each operation is called over HTTP, on the live service and Google's emulator,
with examples generated from the document (valid and invalid ones, boundary
values, then random ones) by three callers: an org with its API key, an admin
with the token, and nobody. Then sequences of calls follow the document's links
(create a meter, record its events, summarize, cancel; create an org, its keys)
so that the fuzzer also reaches what exists. Every answer must be no 5xx and
conform to the document: status code, content type, headers and body schema.

The document and the service do not depend on the Datastore flavour, so this
runs in the Firestore pass only. Schemathesis needs the document when pytest
collects the tests, before the service runs: it is built from the app's routes
then, and a test checks that the service serves exactly that document.
"""

from __future__ import annotations

import json
import os

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ensure_resource_availability,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app import api, dashboard, portal
from app.config import Config
from app.openapi import document
from tests.conftest import ADMIN_TOKEN
from tests.support.names import unique_org_name

pytestmark = pytest.mark.skipif(
    os.environ.get("METERING_TEST_EMULATOR", "firestore") != "firestore",
    reason="the fuzzing runs once, in the Firestore pass",
)

#: Random examples per operation and caller; bounded so the whole run takes a few minutes.
MAX_EXAMPLES = int(os.environ.get("METERING_FUZZ_EXAMPLES", "40"))
#: Sequences of linked calls per caller, and the most calls in one.
MAX_SEQUENCES, MAX_STEPS = int(os.environ.get("METERING_FUZZ_SEQUENCES", "30")), 6
CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _document() -> dict:
    """The document of the tests' app, built at collection time from its routes alone
    (the whole app would set up a Datastore client before any emulator runs)."""
    routes_only = Flask("metering")
    routes_only.config["METERING"] = Config(admin_token=ADMIN_TOKEN)
    api.init_app(routes_only)
    dashboard.init_app(routes_only)
    portal.init_app(routes_only)  # issue 16: the customer portal's page
    return document.build(routes_only)


@schemathesis.serializer("application/x-ndjson", "application/gzip")
def _import_body(ctx, value) -> bytes:
    """issue 17: the import's body is text (NDJSON, CSV, maybe gzip), sent as its bytes."""
    if isinstance(value, bytes):
        return value
    return (value if isinstance(value, str) else json.dumps(value)).encode()


schema = schemathesis.openapi.from_dict(_document())
fuzzing = settings(
    max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


def call_and_check(case, base_url: str, token: str | None) -> None:
    """Send the case as the caller with `token`; fail on any answer the document denies."""
    if token is None:
        case.call_and_validate(base_url=base_url, checks=CONFORMANCE)
    else:
        case.call_and_validate(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            checks=[*CONFORMANCE, ignored_auth],
        )


@schema.parametrize()
@fuzzing
def test_with_an_org_key_every_answer_is_documented(case, server, org):
    call_and_check(case, server.url, org["apiKey"])


@schema.parametrize()
@fuzzing
def test_with_the_admin_token_every_answer_is_documented(case, server):
    call_and_check(case, server.url, ADMIN_TOKEN)


@schema.parametrize()
@fuzzing
def test_without_credentials_every_answer_is_documented(case, server):
    call_and_check(case, server.url, None)


def linked_schema(path_regex: str):
    """The document's operations under `path_regex`, for valid calls only.

    The per-operation tests above send invalid data; sequences send valid data so
    that they get past validation and reach stored meters, events and keys.
    """
    linked = schemathesis.openapi.from_dict(_document()).include(path_regex=path_regex)
    linked.config.generation.update(modes=[GenerationMode.POSITIVE])
    return linked


def follow_links(operations, base_url: str, fresh_token) -> None:
    """Run sequences of calls along the document's links.

    Each sequence starts from an empty Datastore and a caller whose token
    `fresh_token()` makes, so that the same choices always meet the same
    answers (Hypothesis replays sequences and requires that).
    """

    class LinkedCalls(operations.as_state_machine()):  # type: ignore[misc]
        def setup(self):
            self.token = fresh_token()

        def get_call_kwargs(self, case):
            return {"base_url": base_url, "headers": {"Authorization": f"Bearer {self.token}"}}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(
                response,
                checks=[*CONFORMANCE, ensure_resource_availability],
                transport_kwargs=kwargs,
            )

    LinkedCalls.run(
        settings=settings(
            max_examples=MAX_SEQUENCES,
            stateful_step_count=MAX_STEPS,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )


def test_linked_calls_with_an_org_key_answer_as_documented(server, emulator, admin):
    def fresh_org_key() -> str:
        emulator.reset()
        answer = admin.post("/v1/admin/orgs", json={"name": unique_org_name()})
        assert answer.status_code == 201, answer.text
        return answer.json()["apiKey"]

    follow_links(linked_schema("^/v1/billing/"), server.url, fresh_org_key)


def test_linked_calls_with_the_admin_token_answer_as_documented(server, emulator):
    def empty_datastore() -> str:
        emulator.reset()
        return ADMIN_TOKEN

    follow_links(linked_schema("^/v1/admin/"), server.url, empty_datastore)


def test_the_fuzzed_document_is_the_served_one(anonymous):
    assert anonymous.get("/openapi.json").json() == _document()
