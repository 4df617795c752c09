"""requirements.txt, the lock App Engine installs, still matches pyproject.toml.

Checked offline, from the two files alone: a new upstream release never fails it, only
an edit of pyproject.toml without `make lock` (or a hand edit of the lock) does.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import ROOT

_HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


def lock_entries(text: str) -> list[tuple[Requirement, list[str]]]:
    """Each requirement of a pip requirements file with its --hash options (continuation
    lines joined, comments dropped)."""
    logical = re.sub(r"\\\n", " ", text)
    entries = []
    for line in logical.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        options = line.split()
        spec = " ".join(part for part in options if not part.startswith("--hash="))
        hashes = [part for part in options if part.startswith("--hash=")]
        entries.append((Requirement(spec), hashes))
    return entries


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@pytest.fixture(scope="module")
def lock() -> dict[str, tuple[Requirement, list[str]]]:
    entries = lock_entries((ROOT / "requirements.txt").read_text())
    by_name = {canonicalize_name(req.name): (req, hashes) for req, hashes in entries}
    assert len(by_name) == len(entries), "a package is pinned twice"
    return by_name  # type: ignore[return-value]


def _pin(requirement: Requirement) -> Version | None:
    [*specifiers] = requirement.specifier
    if len(specifiers) == 1 and specifiers[0].operator == "==":
        return Version(specifiers[0].version)
    return None


def test_every_line_is_an_exact_pin_with_hashes(lock):
    assert lock, "requirements.txt pins nothing"
    for name, (requirement, hashes) in lock.items():
        assert requirement.url is None and not requirement.extras, name
        assert _pin(requirement) is not None, f"{name} is not pinned with =="
        assert hashes and all(_HASH.fullmatch(h) for h in hashes), f"{name} has no hash"


def test_the_lock_installs_no_project_source_and_names_no_index():
    text = (ROOT / "requirements.txt").read_text()
    for line in text.splitlines():
        stripped = line.strip()
        assert not stripped.startswith(
            (
                "-e",
                "--editable",
                "-r",
                "-c",
                ".",
                "/",
                "--index",
                "--extra-index",
                "-i ",
                "--find-links",
            )
        ), line


def test_every_runtime_dependency_is_pinned_within_its_range(pyproject, lock):
    for spec in pyproject["dependencies"]:
        wanted = Requirement(spec)
        name = canonicalize_name(wanted.name)
        assert name in lock, f"{wanted.name} of pyproject.toml is not in requirements.txt"
        pinned = _pin(lock[name][0])
        assert wanted.specifier.contains(pinned, prereleases=True), (
            f"requirements.txt pins {wanted.name}=={pinned}, outside {wanted.specifier}: "
            "run `make lock`"
        )


def test_what_locked_packages_need_is_locked_too(lock):
    """Closure, checked offline against the installed copy of each locked package where it
    is the locked version (a newer release installed for development is not judged)."""
    checked = 0
    for name, (requirement, _) in lock.items():
        try:
            installed = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if Version(installed.version) != _pin(requirement):
            continue
        checked += 1
        for spec in installed.requires or []:
            needed = Requirement(spec)
            if needed.marker and not needed.marker.evaluate({"extra": ""}):
                continue
            assert canonicalize_name(needed.name) in lock, (
                f"{name} needs {needed.name}, which requirements.txt lacks: run `make lock`"
            )
    assert checked, "no locked package is installed at its locked version"


def test_the_lock_holds_no_test_only_tool(pyproject, lock):
    runtime = {canonicalize_name(Requirement(s).name) for s in pyproject["dependencies"]}
    test_only = {
        canonicalize_name(Requirement(s).name) for s in pyproject["optional-dependencies"]["test"]
    } - runtime
    # Runtime libraries need these two as well (google-api-core, gunicorn); no test tool.
    assert test_only - {"requests", "packaging"}
    assert not (test_only - {"requests", "packaging"}) & set(lock)


def test_lock_entries_read_continuations_markers_and_comments():
    text = (
        "# header\nflask==3.1.3 ; python_version >= '3.11' \\\n"
        f"    --hash=sha256:{'a' * 64} \\\n    --hash=sha256:{'b' * 64}\n"
        "    # via metering (pyproject.toml)\nclick==8.5.1\n"
    )
    [(flask, hashes), (click, none)] = lock_entries(text)
    assert (flask.name, str(flask.specifier), str(flask.marker)) == (
        "flask",
        "==3.1.3",
        'python_version >= "3.11"',
    )
    assert hashes == [f"--hash=sha256:{'a' * 64}", f"--hash=sha256:{'b' * 64}"]
    assert (click.name, none) == ("click", [])
