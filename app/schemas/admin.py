"""Shapes of the admin endpoints."""

from marshmallow import Schema, fields


class OrgCreate(Schema):
    """Body of POST /v1/admin/orgs; the name's rules are checked by the org service."""

    name = fields.Raw(required=True)
