"""The customer portal's limits (issue 16), shared by its schemas and services."""

from __future__ import annotations

#: A portal token's longest and default life, in seconds.
MAX_LIFE_SECONDS = 24 * 3600
DEFAULT_LIFE_SECONDS = 3600
#: Most meters one token may name.
MAX_METERS = 50
#: Most browser origins an org may allow.
MAX_ORIGINS = 20
