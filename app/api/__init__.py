"""The HTTP layer: one module per resource, views thin (parse, call a service, serialize)."""

from app.api import admin, cron, health, meter_events, meters, openapi, openmeter


def init_app(app) -> None:
    """Register every blueprint of the API."""
    app.register_blueprint(health.blueprint)
    app.register_blueprint(meters.blueprint)
    app.register_blueprint(meter_events.blueprint)
    app.register_blueprint(admin.blueprint)
    app.register_blueprint(cron.blueprint)
    app.register_blueprint(openapi.blueprint)
    app.register_blueprint(openmeter.blueprint)
