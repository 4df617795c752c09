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


def content_security_policy(frame_ancestors: str) -> str:
    """Everything from this origin; data: only for the empty favicon; who may frame it."""
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; "
        "img-src 'self' data:; connect-src 'self'; object-src 'none'; "
        f"base-uri 'none'; form-action 'none'; frame-ancestors {frame_ancestors}"
    )


#: The dashboard may be framed by nobody (a click could be tricked into an action).
CONTENT_SECURITY_POLICY = content_security_policy("'none'")


def page_blueprint(
    name: str, url_prefix: str, static: Path, policy: str, tag: str, described: str
) -> Blueprint:
    """A blueprint serving one static page (`static/index.html` at `url_prefix`) and its
    files, every answer with `policy` as its Content-Security-Policy: the dashboard's,
    and the customer portal's (app/portal)."""
    blueprint = Blueprint(
        name, __name__, url_prefix=url_prefix, static_folder=static, static_url_path="/static"
    )

    @blueprint.get("")
    @blueprint.get("/")
    @operation(tag, security=None, datastore=False)
    @response("text/html", 200, described)
    def page():
        return send_from_directory(static, "index.html", max_age=0)

    page.__doc__ = described

    @blueprint.after_request
    def _protect(answer):
        answer.headers["Content-Security-Policy"] = policy
        answer.headers["X-Content-Type-Options"] = "nosniff"
        answer.headers["Referrer-Policy"] = "no-referrer"
        return answer

    return blueprint


blueprint = page_blueprint(
    "dashboard",
    "/dashboard",
    STATIC,
    CONTENT_SECURITY_POLICY,
    "dashboard",
    "The dashboard's single page.",
)


def init_app(app) -> None:
    """Serve the dashboard at /dashboard."""
    app.register_blueprint(blueprint)
