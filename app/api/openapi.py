"""The API's own description: /openapi.json and the /docs page, open to anyone."""

from flask import Blueprint, Response, current_app

from app.openapi import document, page

blueprint = Blueprint("openapi", __name__)


def document_of(app) -> dict:
    """The app's OpenAPI document, built on first use."""
    if "openapi" not in app.extensions:
        app.extensions["openapi"] = document.build(app)
    return app.extensions["openapi"]


@blueprint.get("/openapi.json")
def openapi_json():
    """Get this API's OpenAPI 3 document."""
    return document_of(current_app)


@blueprint.get("/docs")
def docs():
    """Read this API's reference as a web page."""
    return Response(page.render(document_of(current_app)), mimetype="text/html")
