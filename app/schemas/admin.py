"""Shapes of the admin endpoints."""

from marshmallow import fields

from app.core.names import ORG_NAME_PATTERN
from app.schemas import BoundedSchema


class OrgCreate(BoundedSchema):
    """Body of POST /v1/admin/orgs; the name's rules are checked by the org service."""

    name = fields.Raw(
        required=True,
        metadata={
            "type": "string",
            "pattern": ORG_NAME_PATTERN,
            "description": "1 to 63 lower-case letters, digits or '-'; becomes the org's "
            "Datastore namespace",
        },
    )


class OrgDeleteQuery(BoundedSchema):
    """Query string of DELETE /v1/admin/orgs/<name>."""

    purge = fields.Boolean(
        load_default=False,
        metadata={
            "description": "also delete the org's data, a bounded amount per call: repeat "
            "until purgeComplete is true"
        },
    )
