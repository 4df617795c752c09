"""The customer portal page (issue 16): /portal, a static page an org embeds (an iframe)
or links to, showing one end customer their usage this period.

It reads the portal token from the URL's fragment (`/portal#token=pt_...`), which a
browser never sends to a server nor writes in a Referer, so no log holds it; the page
then drops it from the address bar and keeps it in the tab's session storage. It calls
the portal API (`/v1/portal/...`) with the token as a bearer token, like any client.
Served as static files with the dashboard's vendored chart library: no build step,
nothing from another host. Unlike the dashboard it may be framed by any site: it shows
only what its token allows, and has no action a click could be tricked into.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, send_from_directory

from app.api.declare import operation, response

STATIC = Path(__file__).resolve().parent / "static"

#: This origin only, like the dashboard; any site may frame it (`frame-ancestors *`).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors *"
)

blueprint = Blueprint(
    "portal_page",
    __name__,
    url_prefix="/portal",
    static_folder="static",
    static_url_path="/static",
)


@blueprint.get("")
@blueprint.get("/")
@operation("portal", security=None, datastore=False)
@response("text/html", 200, "The customer portal's page (token in the URL fragment).")
def page():
    """The customer portal's page: one end customer's usage this period."""
    return send_from_directory(STATIC, "index.html", max_age=0)


@blueprint.after_request
def _protect(response):
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def init_app(app) -> None:
    """Serve the customer portal page at /portal."""
    app.register_blueprint(blueprint)
