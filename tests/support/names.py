"""Unique org names (and so namespaces) per test run, as Google's system tests make them.

`test_utils.prefixer.Prefixer` (google-cloud-testutils) names a resource after its
project and folder, the UTC time it was made and a random tag, so that a run's
resources never meet another run's and a stale one can be recognised
(`Prefixer.should_cleanup`) in a Datastore that outlives the run. A counter per
process makes two names taken in the same second by this process differ for sure.
"""

from __future__ import annotations

import itertools
import re

from test_utils.prefixer import Prefixer

#: What the service accepts as an org name (app/services/orgs.py): it becomes a namespace.
VALID_ORG_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")

_taken = itertools.count(1)


def unique_org_name(label: str = "org") -> str:
    """e.g. `org-tests-20261206112514-3fa9c1-7`: label, when, random tag, counter."""
    prefix = Prefixer(label, "tests", separator="-").create_prefix()
    name = f"{prefix}-{next(_taken)}"
    assert VALID_ORG_NAME.fullmatch(name), name
    return name
