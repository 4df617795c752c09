"""What an API key may do: its scopes, one per kind of action.

A route names the one scope it needs (`app.api.declare.scope`); a key holds a set of
them. Keys stored before scopes existed hold them all. The names are the public
contract (the OpenAPI document lists them per operation), so they never change.
"""

from __future__ import annotations

from collections.abc import Iterable

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

# -- issue 16, keys: what a key holds ---------------------------------------------------
#: What a key holds when it names no scopes: every key stored before scopes existed, and
#: a key an operator issues without choosing. Every scope but `events:backfill`: writing
#: usage into periods that may already be billed is a deliberate grant, never a default,
#: and no key held it before it existed, so leaving it out takes nothing away. (A new
#: org's first key is issued with every scope, backfill included: `orgs.create_org`.)
DEFAULT_SCOPES: frozenset[str] = ALL_SCOPES - {"events:backfill"}


def held(stored: list[str] | None) -> frozenset[str]:
    """The scopes a stored key holds: its list, or DEFAULT_SCOPES when it has none (a key
    stored before scopes existed). A name this release does not know grants nothing."""
    if not stored:
        return DEFAULT_SCOPES
    return frozenset(stored) & ALL_SCOPES


def ordered(scopes: Iterable[str]) -> list[str]:
    """Scope names in the documentation's order (how keys list and store them)."""
    return [name for name in SCOPES if name in scopes]
