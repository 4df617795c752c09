"""`metering keys create ORG --scope ... --expires 90d` and `keys list` (issue 16).

The command runs as a child process against the session's emulator; the key it prints is
then used on the suite's live server, which reads the same Datastore.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.http import Api
from tests.support.processes import cli_env, run_cli_all

pytestmark = pytest.mark.slow


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_keys_are_created_with_scopes_and_expiry_and_listed_with_them(emulator, admin, server, org):
    env = cli_env(
        DATASTORE_EMULATOR_HOST=emulator.host,
        METERING_PROJECT="metering-test",
        METERING_HASHID_SALT="test-salt",
    )
    name = org["name"]
    created, refused_scope, refused_expiry, too_late = run_cli_all(
        [
            (
                [
                    "keys",
                    "create",
                    name,
                    "--scope",
                    "events:write",
                    "--scope",
                    "usage:read",
                    "--expires",
                    "90d",
                    "--name",
                    "servers",
                ],
                env,
            ),
            (["keys", "create", name, "--scope", "meters:everything"], env),
            (["keys", "create", name, "--scope", "usage:read", "--expires", "90 days"], env),
            (["keys", "create", name, "--expires", "2099-01-01T00:00:00Z"], env),
        ]
    )
    assert created.returncode == 0, created.stderr
    issued = json.loads(created.stdout)
    assert issued["scopes"] == ["events:write", "usage:read"]
    lasting = _when(issued["expiresAt"]) - datetime.now(UTC)
    assert timedelta(days=89, hours=23) < lasting <= timedelta(days=90)
    assert refused_scope.returncode == 2 and "--scope" in refused_scope.stderr
    assert "must be one of" in refused_scope.stderr
    assert refused_expiry.returncode == 2 and "not a duration" in refused_expiry.stderr
    assert too_late.returncode == 2 and "within 10 years" in too_late.stderr

    (listed,) = run_cli_all([(["keys", "list", name], env)])
    assert listed.returncode == 0, listed.stderr
    keys = {key["prefix"]: key for key in json.loads(listed.stdout)}
    assert len(keys) == 2  # the refused commands created nothing
    mine = keys[issued["keyPrefix"]]
    assert mine["scopes"] == ["events:write", "usage:read"] and mine["name"] == "servers"
    assert mine["expiresAt"] == issued["expiresAt"] and mine["status"] == "active"
    assert "events:backfill" in keys[org["keyPrefix"]]["scopes"]  # the org's first key

    api = Api(server.url, issued["apiKey"])
    assert api.get("/v1/billing/meter-events/summary").status_code == 400  # usage:read: past
    assert api.get("/v1/billing/meters").status_code == 403
