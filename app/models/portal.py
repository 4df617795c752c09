"""Kind `portal-policy`: one entity per org holding what decides who may use the
customer portal (issue 16): the allowed browser origins, and the revocations of portal
tokens (one org-wide, and per user for the last day).

Unindexed JSON and integers, read by key only, never through NDB's global cache: a
revocation written from another process must be seen within the stated bound, not
whenever a cached copy expires.
"""

from __future__ import annotations

from google.cloud import ndb

KIND = "portal-policy"
NAME = "policy"


class PortalPolicy(ndb.Model):
    """The org's portal policy; absent means: no origins allowed, nothing revoked."""

    _use_global_cache = False

    #: JSON list of exact origins (scheme://host[:port]) allowed to call the portal API.
    allowed_origins = ndb.TextProperty("AllowedOrigins")
    #: Tokens of the org issued before this moment (ms since the epoch) are refused.
    revoked_before_ms = ndb.IntegerProperty("RevokedBeforeMs", indexed=False)
    #: JSON {user digest: ms}: one user's tokens issued before that moment are refused.
    #: Entries older than a token's longest life are pruned on every write.
    user_revocations = ndb.TextProperty("UserRevocations")

    @classmethod
    def _get_kind(cls) -> str:
        return KIND

    @classmethod
    def key_for(cls, namespace: str) -> ndb.Key:
        return ndb.Key(KIND, NAME, namespace=namespace)
