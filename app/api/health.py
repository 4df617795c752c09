"""Liveness and readiness.

`/healthz` says the process serves requests and touches nothing else, so a slow
Datastore never gets instances restarted. `/readyz` also proves the Datastore
answers: one lookup of a key that never exists, without retries and with a short
deadline, so an unreachable Datastore answers 503 within seconds.
"""

from flask import Blueprint
from google.api_core import exceptions as gexc
from google.cloud import ndb

from app.api.declare import operation, response
from app.errors import Unavailable
from app.models import ids
from app.schemas import responses

blueprint = Blueprint("health", __name__)

READY_TIMEOUT_SECONDS = 3.0


@blueprint.get("/healthz")
@operation("health", security=None, datastore=False)
@response(responses.Health, 200, "The process is up.")
def healthz():
    """Say the process is up."""
    return {"status": "ok"}


@blueprint.get("/readyz")
@operation("health", security=None)
@response(responses.Ready, 200, "The process is up and its Datastore answers.")
def readyz():
    """Say the process is up and its Datastore answers."""
    probe = ndb.Key("readiness-probe", "probe", namespace=ids.REGISTRY_NAMESPACE)
    try:
        probe.get(retries=0, timeout=READY_TIMEOUT_SECONDS, use_cache=False, use_global_cache=False)
    except gexc.GoogleAPIError as exc:
        raise Unavailable("the datastore does not answer", code="datastore_unavailable") from exc
    return {"status": "ok", "datastore": "ok"}
