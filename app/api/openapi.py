"""The API's own description: /openapi.json and the /docs page, open to anyone."""

from flask import Blueprint, Response, current_app

from app.api.declare import operation, response
from app.openapi import document, page

blueprint = Blueprint("openapi", __name__)


def document_of(app) -> dict:
    """The app's OpenAPI document, built on first use."""
    if "openapi" not in app.extensions:
        app.extensions["openapi"] = document.build(app)
    return app.extensions["openapi"]


@blueprint.get("/openapi.json")
@operation("documentation", security=None, datastore=False)
@response("application/json", 200, "This document.")
def openapi_json():
    """Get this API's OpenAPI 3 document."""
    return document_of(current_app)


@blueprint.get("/docs")
@operation("documentation", security=None, datastore=False)
@response("text/html", 200, "The reference page.")
def docs():
    """Read this API's reference as a web page."""
    return Response(page.render(document_of(current_app)), mimetype="text/html")
