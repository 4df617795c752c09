"""Orgs that have webhook endpoints or alert rules: the delivery loop's list to visit.

Stub of the interface (docs: /work/briefs/contract14.md); the webhooks work replaces it.
"""

from __future__ import annotations


def register_org() -> None:
    """Remember that the current org has endpoints or alert rules."""


def orgs() -> list[str]:
    """Namespaces of the registered orgs."""
    return []
