"""Production (App Engine) is detected from the runtime's variables, and then the
service refuses to start with default secrets. (test_deploy.py shows gunicorn
refusing to boot; these pin the rule itself.)"""

from __future__ import annotations

import pytest

from app.config import DEV_HASHID_SALT, Config

SECRETS = {"METERING_HASHID_SALT": "prod-salt", "METERING_ADMIN_TOKEN": "prod-token"}


@pytest.mark.parametrize(
    "runtime", [{"GAE_ENV": "standard"}, {"GAE_APPLICATION": "s~metering-prod"}]
)
def test_app_engine_is_production(runtime):
    config = Config.from_env({**runtime, **SECRETS})
    assert config.production
    assert (config.hashid_salt, config.admin_token) == ("prod-salt", "prod-token")


def test_elsewhere_the_development_defaults_apply():
    config = Config.from_env({"GAE_ENV": "localdev"})
    assert not config.production and config.hashid_salt == DEV_HASHID_SALT


@pytest.mark.parametrize("missing", ["METERING_HASHID_SALT", "METERING_ADMIN_TOKEN"])
def test_production_refuses_a_missing_secret(missing):
    env = {"GAE_ENV": "standard", **SECRETS}
    del env[missing]
    with pytest.raises(ValueError, match=f"without {missing}"):
        Config.from_env(env)


def test_production_refuses_both_missing_secrets_at_once():
    with pytest.raises(ValueError, match="without METERING_HASHID_SALT and METERING_ADMIN_TOKEN"):
        Config.from_env({"GAE_ENV": "standard"})


def test_production_refuses_the_development_salt_set_explicitly():
    with pytest.raises(ValueError, match="METERING_HASHID_SALT"):
        Config.from_env({"GAE_ENV": "standard", **SECRETS, "METERING_HASHID_SALT": DEV_HASHID_SALT})


def test_a_production_config_cannot_be_built_without_secrets_either():
    with pytest.raises(ValueError, match="METERING_ADMIN_TOKEN"):
        Config(production=True, hashid_salt="prod-salt")


def test_operating_settings_are_read_from_the_environment():
    config = Config.from_env(
        {
            "METERING_RATE_LIMIT_PER_MINUTE": "120",
            "REDIS_CACHE_URL": "redis://10.0.0.3:6379/0",
            "METERING_CRON_COMPACT_BUDGET": "50",
        }
    )
    assert (config.rate_limit_per_minute, config.redis_url, config.cron_compact_budget) == (
        120,
        "redis://10.0.0.3:6379/0",
        50,
    )
    assert Config.from_env({}).rate_limit_per_minute == 0  # off by default
