"""Tests that do not depend on the Datastore flavour run once, with the Firestore-mode
suite: a module opts in with `pytestmark = pytest.mark.usefixtures("firestore_only")`
after importing this fixture."""

from __future__ import annotations

import pytest


@pytest.fixture
def firestore_only(emulator_kind):
    if emulator_kind != "firestore":
        pytest.skip("independent of the Datastore flavour: runs with the firestore suite")
