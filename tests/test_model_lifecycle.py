"""Every model written through NDB goes through the mixin's lifecycle on its real write path.

Meters, orgs (`namespace`) and API keys are written by their services; each test drives
those services against the emulator, records which hooks ran (spies that call through to
the real hooks), and checks what the hooks are for: timestamps set, bad state refused
before anything is stored.
"""

from __future__ import annotations

import pytest

from app.errors import ValidationFailed
from app.models import ApiKey, Meter, Namespace
from app.models.base import Lifecycle
from app.models.ids import REGISTRY_NAMESPACE
from app.services import meters as meter_service
from app.services import orgs as org_service
from tests.support.names import unique_org_name

HOOKS = (
    "defaults",
    "validate",
    "before_create",
    "after_create",
    "before_update",
    "after_update",
    "before_delete",
    "after_delete",
)


@pytest.fixture
def hooks(monkeypatch):
    """`spy(Model)` records (model, hook) for every hook call on that class, then runs it."""
    calls: list[tuple[str, str]] = []

    def spy(cls: type[Lifecycle]) -> list[tuple[str, str]]:
        for name in HOOKS:
            original = getattr(cls, name, None)
            if original is None:
                continue

            def recorded(self, _name=name, _original=original):
                calls.append((type(self).__name__, _name))
                return _original(self)

            monkeypatch.setattr(cls, name, recorded)
        return calls

    return spy


@pytest.fixture
def org_context(ndb_context, org):
    with ndb_context.new(namespace=org["namespace"]).use() as context:
        yield context


def _only(calls, model: str) -> list[str]:
    return [hook for name, hook in calls if name == model]


def test_the_meter_service_writes_through_the_hooks(org_context, hooks):
    calls = hooks(Meter)
    meter = meter_service.create_meter({"name": "Calls", "eventName": "calls"})
    meter_service.update_meter(meter.id_, {"name": "API calls"})
    meter_service.archive_meter(meter.id_)
    assert _only(calls, "Meter") == [
        "defaults",
        "validate",
        "before_create",
        "after_create",
        "defaults",
        "validate",
        "before_update",
        "after_update",
        "before_delete",
        "after_delete",
    ]
    stored = meter.key.get(use_cache=False)
    assert (stored.name, stored.deleted, stored.currency) == ("API calls", True, "usd")
    assert stored.created_at is not None and stored.updated_at >= stored.created_at
    with pytest.raises(ValidationFailed) as refused:  # past the schema: the model refuses
        meter_service.create_meter({"name": "x", "eventName": "y", "aggregationType": "median"})
    assert refused.value.param == "aggregationType"
    assert [m.event_name for m in meter_service.all_meters()] == ["calls"]


def test_the_org_service_writes_orgs_through_the_hooks(ndb_context, app, hooks):
    calls = hooks(Namespace)
    name = unique_org_name()
    org_service.create_org(name)
    org_service.archive_org(name)
    org_service.purge_org(name)
    assert _only(calls, "Namespace") == [
        "defaults",
        "validate",
        "before_create",
        "after_create",
        "before_delete",
        "after_delete",
        "defaults",
        "validate",
        "before_update",
        "after_update",
    ]
    stored = Namespace.key_for(name).get(use_cache=False, use_global_cache=False)
    assert stored.deleted and stored.purged_at and stored.int_id > 0
    assert stored.created_at is not None and stored.updated_at > stored.created_at


def test_an_org_entity_in_a_bad_state_is_refused(ndb_context, app):
    name = unique_org_name()
    with pytest.raises(ValidationFailed):
        Namespace(key=Namespace.key_for(name), name=name, int_id=0).create()
    live = Namespace(key=Namespace.key_for(name), name=name, int_id=7).create()
    live.purged_at = "2026-01-01T00:00:00+00:00"
    with pytest.raises(ValidationFailed, match="archived"):
        live.update()
    stored = Namespace.key_for(name).get(use_cache=False, use_global_cache=False)
    assert stored.int_id == 7 and not stored.purged_at


def test_the_org_service_writes_api_keys_through_the_hooks(ndb_context, app, hooks):
    calls = hooks(ApiKey)
    name = unique_org_name()
    first = org_service.create_org(name)
    second = org_service.issue_key(name)
    assert org_service.revoke_key(name, first.prefix) == 1
    assert org_service.archive_org(name).revoked_keys == 1  # the second key
    assert _only(calls, "ApiKey") == (
        ["defaults", "validate", "before_create", "after_create"] * 2
        + ["defaults", "validate", "before_update", "after_update"] * 2
    )
    keys = {
        k.prefix: k for k in ApiKey.query(ApiKey.org == name, namespace=REGISTRY_NAMESPACE).fetch()
    }
    for issued in (first, second):
        stored = keys[issued.prefix]
        assert stored.created_at is not None
        assert stored.revoked and stored.revoked_at >= stored.created_at


def test_an_api_key_in_a_bad_state_is_refused(ndb_context, app):
    with pytest.raises(ValidationFailed) as refused:
        ApiKey(key=ApiKey.key_for("f" * 64), org="", prefix="mk_abcdefghi").create()
    assert refused.value.param == "org"
    assert ApiKey.key_for("f" * 64).get(use_cache=False, use_global_cache=False) is None
