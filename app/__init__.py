"""Usage metering service: Flask app factory.

`create_app()` wires the pieces, each through its own `init_app`: configuration,
the NDB client and per-request context, the error envelope, logs, security headers,
and the API.
"""

from __future__ import annotations

from flask import Flask

from app.config import Config


def create_app(config: Config | None = None) -> Flask:
    """Build the WSGI app for a configuration (read from the environment by default)."""
    # Lazy: `import app.<anything>` runs this file first; only building the app needs
    # Flask's views and the Datastore client (the CLI and gunicorn's config import less).
    from app import api, background, datastore, deadline, errors, headers, logs, ratelimit, timeline
    from app.models import ids

    config = config or Config.from_env()
    app = Flask(__name__)
    app.config["METERING"] = config
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]  # the default provider has it
    ids.configure(config.hashid_salt)
    timeline.enable(config.timeline)
    deadline.init_app(app)  # first: the deadline counts from the request's arrival
    errors.init_app(app)
    logs.init_app(app)
    headers.init_app(app)
    ratelimit.init_app(app)
    datastore.init_app(app)
    api.init_app(app)
    from app import dashboard  # lazy, as above

    dashboard.init_app(app)
    from app import portal  # issue 16, customer portal; lazy, as above

    portal.init_app(app)
    background.init_app(app)
    return app
