"""Shapes of API key creation (issue 16): an org's own (/v1/keys) and an operator's.

A new key names its scopes and may expire, given as a time (`expiresAt`) or as seconds
from now (`expiresIn`), not both; either must fall within MAX_KEY_LIFETIME. Loading
turns both into one aware `expires_at` (or None).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from marshmallow import ValidationError, fields, post_load, validate, validates

from app.core.scopes import SCOPES
from app.schemas import BoundedSchema
from app.schemas.fields import BoundedList, Rfc3339

#: The longest a key may be made to last when it expires at all.
MAX_KEY_LIFETIME = timedelta(days=3650)
MAX_KEY_NAME_LENGTH = 100


def _scopes(required: bool) -> fields.List:
    return BoundedList(
        fields.String(validate=validate.OneOf(SCOPES, error="must be one of " + ", ".join(SCOPES))),
        required=required,
        validate=validate.Length(min=1, max=len(SCOPES)),
        metadata={
            "description": "what the key may do: scopes the creating key holds itself"
            + ("" if required else "; absent: every scope but events:backfill")
        },
    )


class _KeyFields(BoundedSchema):
    expiresAt = Rfc3339(
        metadata={
            "type": "string",
            "format": "date-time",
            "description": "when the key stops working (RFC 3339, in the future, within "
            "10 years); absent (and no expiresIn): never",
        }
    )
    expiresIn = fields.Integer(
        strict=True,
        validate=validate.Range(min=1, max=int(MAX_KEY_LIFETIME.total_seconds())),
        metadata={"description": "seconds from now until the key stops working"},
    )
    name = fields.String(
        validate=validate.Length(min=1, max=MAX_KEY_NAME_LENGTH),
        metadata={"description": "a label for people: where the key is used"},
    )

    @validates("expiresAt")
    def _in_the_future(self, value, **_):
        now = datetime.now(UTC)
        if value <= now:
            raise ValidationError("must be in the future")
        if value > now + MAX_KEY_LIFETIME:
            raise ValidationError("must be within 10 years from now")

    @post_load
    def _expiry(self, data, **_):
        if "expiresAt" in data and "expiresIn" in data:
            raise ValidationError("give expiresAt or expiresIn, not both", "expiresIn")
        expires_in = data.pop("expiresIn", None)
        expires_at = data.pop("expiresAt", None)
        if expires_in is not None:
            expires_at = datetime.now(UTC) + timedelta(seconds=expires_in)
        data["expires_at"] = expires_at
        return data

    @validates("scopes")
    def _unique(self, value, **_):
        if len(set(value)) != len(value):
            raise ValidationError("scopes must be unique")


class KeyCreate(_KeyFields):
    """Body of POST /v1/keys."""

    scopes = _scopes(required=True)


class AdminKeyCreate(_KeyFields):
    """Body of POST /v1/admin/orgs/<name>/keys (optional: no body issues a key with the
    default scopes that never expires)."""

    scopes = _scopes(required=False)
