"""Security headers on every answer: the transport and browser rules of the service.

The API answers JSON to programs, so its policy forbids a browser everything
(`default-src 'none'`) and any framing. Pages that must render set their own
policy first and keep it: the dashboard's blueprint sets a strict same-origin one
(`app/dashboard`); the `/docs` page, rendered on the server with one inline
`<style>` element and no script, gets a policy that allows exactly that style by
its hash. Answers to a request that carries credentials (an org key or the admin
token) are never stored by a cache. In production, where App Engine serves only
HTTPS (`secure: always` in app.yaml), every answer also tells browsers to use
nothing else (HSTS).
"""

from __future__ import annotations

import base64
import hashlib
import re

from flask import current_app, g, request

#: Browsers may load, run or frame nothing from a JSON answer.
API_POLICY = "default-src 'none'; frame-ancestors 'none'"
#: Two years, subdomains included: the value the HSTS preload list asks for.
STRICT_TRANSPORT_SECURITY = "max-age=63072000; includeSubDomains"
NOTHING = "'none'"
#: Endpoints whose HTML may style itself with its own inline <style> elements.
STYLED_PAGES = frozenset({"openapi.docs"})
_STYLE_ELEMENT = re.compile(r"<style>(.*?)</style>", re.DOTALL)


def styled_page_policy(html: str) -> str:
    """A policy for a server-rendered page: its own inline styles (by hash), nothing
    else, in particular no script."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(css.encode()).digest()).decode() + "'"
        for css in _STYLE_ELEMENT.findall(html)
    )
    return (
        f"default-src 'none'; style-src {hashes or NOTHING}; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def _carries_credentials() -> bool:
    return bool(request.headers.get("Authorization")) or g.get("org") is not None


def _protect(response):
    headers = response.headers
    if "Content-Security-Policy" not in headers:
        if request.endpoint in STYLED_PAGES and response.mimetype == "text/html":
            headers["Content-Security-Policy"] = styled_page_policy(response.get_data(as_text=True))
        else:
            headers["Content-Security-Policy"] = API_POLICY
    headers["X-Content-Type-Options"] = "nosniff"
    if _carries_credentials():
        headers["Cache-Control"] = "no-store"
    if current_app.config["METERING"].production:
        headers["Strict-Transport-Security"] = STRICT_TRANSPORT_SECURITY
    return response


def init_app(app) -> None:
    """Add the security headers to every answer, errors included."""
    app.after_request(_protect)
