"""The documentation stands on its own: every relative link resolves inside the repository.

A reader of the published project has the repository and nothing else, so a link to a
missing file, to a heading that is not there, or to anything outside the repository
(the port's working notes in `../shared` were such a place) is a broken promise. These
checks read the Markdown files alone: no emulator, no network.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.conftest import ROOT

#: Folders whose Markdown is not the project's own documentation.
_SKIPPED_FOLDERS = {".venv", ".git", "node_modules", "artifacts", "build", "dist"}

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
_INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]"  # [text], one level of [..] inside
    r"\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)"
)  # (target "title")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def markdown_files() -> list[Path]:
    """README.md, docs/*.md and every other Markdown file the repository ships."""
    found = []
    for path in sorted(ROOT.rglob("*.md")):
        parts = path.relative_to(ROOT).parts[:-1]
        if any(
            part in _SKIPPED_FOLDERS or part.startswith(".") or part.endswith(".egg-info")
            for part in parts
        ):
            continue
        found.append(path)
    return found


def _prose(text: str) -> str:
    """The text without fenced code blocks and code spans, where brackets are not links."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def links(text: str) -> list[str]:
    """Targets of inline links, images and reference definitions."""
    prose = _prose(text)
    return _INLINE_LINK.findall(prose) + _REFERENCE.findall(prose)


def anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to `-`."""
    plain = _CODE_SPAN.sub(lambda m: m.group(0).strip("`"), heading)
    plain = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", plain)  # a link's text only
    plain = re.sub(r"[^\w\- ]", "", plain.strip().lower())
    return plain.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    return {anchor(heading) for heading in _HEADING.findall(text)}


def problems(path: Path) -> list[str]:
    """Every broken relative link of one Markdown file, described."""
    found = []
    for target in links(path.read_text(encoding="utf-8")):
        if _SCHEME.match(target) or target.startswith("//"):
            continue  # another site: not this test's business
        file_part, _, fragment = unquote(target).partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.is_relative_to(ROOT):
            found.append(f"{target}: outside the repository")
        elif not resolved.exists():
            found.append(f"{target}: no such file")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            found.append(f"{target}: no heading #{fragment} in {resolved.name}")
    return found


def test_the_documentation_is_found():
    names = {path.relative_to(ROOT).as_posix() for path in markdown_files()}
    assert {"README.md", "docs/design.md", "docs/compatibility.md", "docs/benchmarks.md"} <= names


@pytest.mark.parametrize(
    "path", markdown_files(), ids=lambda path: path.relative_to(ROOT).as_posix()
)
def test_relative_links_resolve(path):
    assert problems(path) == []


@pytest.mark.parametrize(
    "path", markdown_files(), ids=lambda path: path.relative_to(ROOT).as_posix()
)
def test_nothing_points_outside_the_repository(path):
    text = path.read_text(encoding="utf-8")
    assert "../shared" not in text and "shared/ORIGINAL" not in text


def test_the_checks_catch_what_they_are_for(tmp_path, monkeypatch):
    """A broken file link, a missing heading and a link out of the repository are caught,
    while links to other sites, code samples and good links are not."""
    monkeypatch.setattr("tests.test_docs.ROOT", tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# A `code` heading, with commas\n")
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "[good](other.md) [good anchor](other.md#a-code-heading-with-commas) [self](#title)\n"
        "# Title\n[site](https://example.org/x) `[not](a-link.md)`\n"
        "```\n[nor](this.md)\n```\n"
        "[gone](missing.md) [no heading](other.md#nowhere) [out](../../shared/ORIGINAL.md)\n"
        "[ref]: ../missing-too.md\n"
    )
    assert problems(page) == [
        "missing.md: no such file",
        "other.md#nowhere: no heading #nowhere in other.md",
        "../../shared/ORIGINAL.md: outside the repository",
        "../missing-too.md: no such file",
    ]
