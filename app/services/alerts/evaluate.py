"""Evaluating alert rules from the usage feed.

Stub of the interface (docs: /work/briefs/contract14.md); the alerts work replaces it.
"""

from __future__ import annotations


def evaluate_org(budget: int) -> int:
    """Apply up to `budget` pending feeds of the current org; how many were applied."""
    return 0
