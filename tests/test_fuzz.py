"""Schemathesis fuzzes every operation of the served document against the real service.

Each operation is called with examples generated from /openapi.json as the live
service serves it, by three callers: an org with a valid API key, an admin with
the token, and nobody. Every answer must be no 5xx and conform to the document
(status code, content type, headers, body schema). The document and the service
do not depend on the Datastore flavour, so this runs in the Firestore pass only.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, ignored_auth,
                                               response_headers_conformance,
                                               response_schema_conformance,
                                               status_code_conformance)

from app import create_app
from app.config import Config
from app.openapi import document
from tests.conftest import ADMIN_TOKEN

pytestmark = pytest.mark.skipif(
    os.environ.get("METERING_TEST_EMULATOR", "firestore") != "firestore",
    reason="the fuzzing runs once, in the Firestore pass")

#: Examples per operation and caller; bounded so the whole run takes a few minutes.
MAX_EXAMPLES = int(os.environ.get("METERING_FUZZ_EXAMPLES", "40"))
CONFORMANCE = [not_a_server_error, status_code_conformance, content_type_conformance,
               response_headers_conformance, response_schema_conformance]


def _document() -> dict:
    """The document of an app configured like the tests' (no Datastore is reached)."""
    return document.build(create_app(Config(emulator_host="127.0.0.1:1",
                                            admin_token=ADMIN_TOKEN)))


schema = schemathesis.openapi.from_dict(_document())
fuzzing = settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                   suppress_health_check=list(HealthCheck))


def call_and_check(case, base_url: str, token: str | None) -> None:
    """Send the case as the caller with `token`; fail on any answer the document denies."""
    if token is None:
        case.call_and_validate(base_url=base_url, checks=CONFORMANCE)
    else:
        case.call_and_validate(base_url=base_url, headers={"Authorization": f"Bearer {token}"},
                               checks=[*CONFORMANCE, ignored_auth])


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
