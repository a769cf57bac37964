"""The documentation holds together: the README stays one or two screens, and every relative link of README.md,
config/README.md and docs/*.md points at a file that exists (and at a heading of it, for a `#anchor`)."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import REPO

DOCS = [REPO / "README.md", REPO / "config" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?^```$", re.MULTILINE | re.DOTALL)
CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
README_MAX_BYTES = 12_000


def prose(path: Path) -> str:
    """The file without its code blocks (their `#` lines are no headings, their brackets no links)."""
    return FENCE.sub("", path.read_text())


def anchors(path: Path) -> list[str]:
    """GitHub's anchors for the headings of a Markdown file: lower case, punctuation dropped, spaces as hyphens, a
    repeated heading numbered -1, -2, ..."""
    seen: dict[str, int] = {}
    found = []
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", prose(path), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        seen[slug] = seen.get(slug, -1) + 1
        found.append(slug if seen[slug] == 0 else f"{slug}-{seen[slug]}")
    return found


def links(path: Path) -> list[str]:
    """The relative link targets of a Markdown file (inline code stands for a word: `[a](b)` there is no link)."""
    return [target for target in LINK.findall(CODE.sub("x", prose(path)))
            if not re.match(r"[a-z][a-z0-9+.-]*:", target)]  # http:, https:, mailto: ... are not checked here


def test_readme_is_one_or_two_screens():
    assert (REPO / "README.md").stat().st_size <= README_MAX_BYTES


def test_every_relative_link_points_at_an_existing_file_and_heading():
    broken = []
    for doc in DOCS:
        for target in links(doc):
            file, _, anchor = target.partition("#")
            path = (doc.parent / file).resolve() if file else doc
            if not path.exists():
                broken.append(f"{doc.relative_to(REPO)}: {target}: no such file")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                broken.append(f"{doc.relative_to(REPO)}: {target}: no such heading")
    assert broken == []


def test_the_link_check_sees_links_and_anchors():
    readme = REPO / "README.md"
    assert "docs/training.md" in links(readme) and "config/README.md" in links(readme)
    assert {"two-commands", "poses--codes", "python-api"} <= set(anchors(readme))
