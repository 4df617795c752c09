"""The HTTP layer: one module per resource, views thin (parse, call a service, serialize)."""

from app.api import (
    admin,
    alerts,  # issue 14, alerts
    cron,
    health,
    keys,  # issue 16, keys
    limits,  # issue 16, limits
    meter_events,
    meters,
    openapi,
    openmeter,  # issue 15
    portal,  # issue 16, customer portal
    webhooks,  # issue 14, webhooks
)


def init_app(app) -> None:
    """Register every blueprint of the API."""
    app.register_blueprint(health.blueprint)
    app.register_blueprint(meters.blueprint)
    app.register_blueprint(meter_events.blueprint)
    app.register_blueprint(admin.blueprint)
    app.register_blueprint(cron.blueprint)
    app.register_blueprint(openapi.blueprint)
    app.register_blueprint(alerts.blueprint)  # issue 14, alerts
    app.register_blueprint(webhooks.blueprint)  # issue 14
    app.register_blueprint(openmeter.blueprint)  # issue 15
    app.register_blueprint(keys.blueprint)  # issue 16, keys
    app.register_blueprint(portal.blueprint)  # issue 16, customer portal
    app.register_blueprint(portal.reading)  # issue 16, customer portal
    app.register_blueprint(limits.blueprint)  # issue 16, limits
