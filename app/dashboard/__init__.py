"""The usage dashboard: a static page at /dashboard that calls the public API.

The page is plain HTML, CSS and ES modules under `static/`, with one pinned chart
library vendored beside them (`static/README.md`), so serving it needs no build
step and nothing from another host. It signs in with an org API key kept in the
browser's session storage and sends it as a bearer token, like any API client;
the server holds no dashboard session. A strict Content-Security-Policy allows
only this origin's scripts, styles and API.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, send_from_directory

from app.api.declare import operation, response

STATIC = Path(__file__).resolve().parent / "static"

#: Everything comes from this origin; data: only for the empty favicon.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

blueprint = Blueprint(
    "dashboard",
    __name__,
    url_prefix="/dashboard",
    static_folder="static",
    static_url_path="/static",
)


@blueprint.get("")
@blueprint.get("/")
@operation("dashboard", security=None, datastore=False)
@response("text/html", 200, "The dashboard's page.")
def page():
    """The dashboard's single page."""
    return send_from_directory(STATIC, "index.html", max_age=0)


@blueprint.after_request
def _protect(response):
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def init_app(app) -> None:
    """Serve the dashboard at /dashboard."""
    app.register_blueprint(blueprint)
