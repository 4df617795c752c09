"""Liveness."""

from flask import Blueprint

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz():
    """Say the process is up."""
    return {"status": "ok"}
