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

from app.dashboard import content_security_policy, page_blueprint

STATIC = Path(__file__).resolve().parent / "static"

#: This origin only, like the dashboard; any site may frame it (`frame-ancestors *`).
CONTENT_SECURITY_POLICY = content_security_policy("*")

blueprint = page_blueprint(
    "portal_page",
    "/portal",
    STATIC,
    CONTENT_SECURITY_POLICY,
    "portal",
    "The customer portal's page: one end customer's usage this period (token in the URL fragment).",
)


def init_app(app) -> None:
    """Serve the customer portal page at /portal."""
    app.register_blueprint(blueprint)
