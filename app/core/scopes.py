"""What an API key may do: its scopes, one per kind of action.

A route names the one scope it needs (`app.api.declare.scope`); a key holds a set of
them. Keys stored before scopes existed hold them all. The names are the public
contract (the OpenAPI document lists them per operation), so they never change.
"""

from __future__ import annotations

#: scope -> what it allows, in the order the documentation lists them.
SCOPES: dict[str, str] = {
    "events:write": "record usage events",
    "events:backfill": "import events older than the live window (with events:write)",
    "events:cancel": "cancel and correct recorded events",
    "usage:read": "read events, summaries and limit checks",
    "meters:read": "read meters, alert rules and limits",
    "meters:write": "create, change and archive meters, alert rules and limits",
    "webhooks:write": "manage webhook endpoints and read their delivery logs",
    "keys:write": "create, list and revoke the org's API keys",
    "portal:write": "issue and revoke customer portal tokens",
}

ALL_SCOPES: frozenset[str] = frozenset(SCOPES)
