"""The Model mixin on NDB: hooks, bookkeeping, shadow fields and ids, against the emulator."""

from __future__ import annotations

import pytest
from google.cloud import ndb

from app.errors import ValidationFailed
from app.models import Meter, MeterEvent, ids, root_key


@pytest.fixture
def org_context(ndb_context, org):
    """An NDB context in a registered org's namespace."""
    with ndb_context.new(namespace=org["namespace"]).use() as context:
        yield context


@pytest.fixture
def hooked_meter_class():
    """A Meter subclass recording its hook calls; kind `meter` maps back to Meter after."""

    class HookedMeter(Meter):
        """A meter that records the order in which the mixin calls its hooks."""

        calls: list

        def _record(self, name):
            type(self).calls.append(name)

        def defaults(self):
            self._record("defaults")
            super().defaults()

        def validate(self):
            self._record("validate")
            return super().validate()

        def before_create(self):
            self._record("before_create")

        def after_create(self):
            self._record("after_create")

        def before_update(self):
            self._record("before_update")

        def after_update(self):
            self._record("after_update")

        def before_delete(self):
            self._record("before_delete")

        def after_delete(self):
            self._record("after_delete")

    yield HookedMeter
    ndb.Model._kind_map[Meter.KIND] = Meter


def test_the_mixin_runs_defaults_validation_and_hooks_in_order(org_context, hooked_meter_class):
    HookedMeter = hooked_meter_class
    HookedMeter.calls = []
    meter = HookedMeter(parent=root_key(), name="n", event_name="e").create()
    meter.name = "renamed"
    meter.update()
    meter.delete()
    assert HookedMeter.calls == [
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
    assert stored.deleted is True and stored.name == "renamed"


def test_defaults_fill_aggregation_currency_and_timestamp(org_context):
    meter = Meter(parent=root_key(), name="n", event_name="e", currency="EUR").create()
    assert (meter.aggregation_type, meter.currency) == ("sum", "eur")
    event = MeterEvent(parent=root_key(), meter_id=meter.id_, user_id="u", value=1).create()
    assert event.timestamp is not None and event.idempotency == ""


def test_validation_refuses_before_anything_is_stored(org_context):
    with pytest.raises(ValidationFailed) as raised:
        Meter(parent=root_key(), name="", event_name="e").create()
    assert raised.value.param == "name"
    assert Meter.query(ancestor=root_key()).count() == 0


def test_created_at_is_kept_and_updated_at_moves(org_context):
    meter = Meter(parent=root_key(), name="n", event_name="e").create()
    created, updated = meter.created_at, meter.updated_at
    meter.update()
    assert meter.created_at == created and meter.updated_at > updated


def test_id_is_the_hashid_of_the_key_path(org_context, org):
    meter = Meter(parent=root_key(), name="n", event_name="e").create()
    code = ids.namespace_code(org["namespace"])
    assert meter.id_ == ids.encode_numbers(202, meter.key.id(), 59, 1, code)
    assert ids.decode_key(meter.id_, kind="meter", namespace=org["namespace"]) == meter.key
    assert Meter.get_by_public_id(meter.id_) == meter


def test_ids_of_the_default_namespace_end_in_zero(ndb_context):
    key = ndb.Key("synckey", 1, "meter", 77)
    assert ids.encode_key(key) == ids.encode_numbers(202, 77, 59, 1, 0)
    assert ids.decode_key(ids.encode_key(key), kind="meter", namespace="") == key


def test_an_id_never_decodes_into_another_namespace(org_context, org, other_org):
    meter = Meter(parent=root_key(), name="n", event_name="e").create()
    assert ids.decode_key(meter.id_, kind="meter", namespace=other_org["namespace"]) is None
    assert ids.decode_key(meter.id_, kind="meter", namespace="") is None


@pytest.mark.parametrize("text", ["", "x", "0" * 10, "!!!!!!!!!!!!", "ü" * 12])
def test_garbage_ids_decode_to_nothing(org_context, org, text):
    assert ids.decode_key(text, kind="meter", namespace=org["namespace"]) is None


def test_shadow_fields_round_trip_lists_and_dicts(org_context):
    meter = Meter(
        parent=root_key(),
        name="n",
        event_name="e",
        dimensions=["a", "b"],
        metadata={"nested": {"k": [1, 2]}},
    ).create()
    stored = meter.key.get(use_cache=False)
    assert stored.dimensions == ["a", "b"]
    assert stored.metadata == {"nested": {"k": [1, 2]}}


def test_shadow_fields_refuse_the_wrong_container(org_context):
    with pytest.raises(TypeError, match="Dimensions_ holds a list"):
        Meter(parent=root_key(), name="n", event_name="e", dimensions={"a": 1})


def test_memoized_hashids_encode_exactly_as_the_library_does(monkeypatch):
    import random

    import hashids

    memoized = hashids._reorder
    assert hasattr(memoized, "cache_info")  # app.models.ids installed the memo
    codec = hashids.Hashids(salt="any salt", min_length=10)
    rng = random.Random(7)
    cases = [(204, rng.randrange(1, 1 << 63), 59, 1, rng.randrange(0, 1 << 40)) for _ in range(300)]
    fast = [codec.encode(*numbers) for numbers in cases]
    monkeypatch.setattr(hashids, "_reorder", memoized.__wrapped__)
    assert [codec.encode(*numbers) for numbers in cases] == fast
    assert [codec.decode(text) for text in fast] == cases
