"""The org name rule, which the admin schema shows and the org service enforces."""

from __future__ import annotations

import re

#: 1 to 63 lower-case letters, digits or '-', starting and ending with a letter or digit:
#: a DNS label, so a name can never address the registry or a reserved namespace.
#: Matched whole with `fullmatch` (a `$` would also accept a trailing newline, which
#: Datastore refuses in a namespace).
ORG_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
#: The same rule for JSON Schema (ECMA-262, where `$` is the end of the input).
ORG_NAME_PATTERN = f"^{ORG_NAME.pattern}$"
