"""The docs ship with the repository: no reference leaves it, and every relative link resolves."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Notes that lived beside the repository while it was built; a clone does not have them.
OUTSIDE = re.compile(r"\.\./shared\b|\bshared/(?:reference|DESIGN)|\bDESIGN\.md\b")
# [text](target) and ![alt](target); the target ends at whitespace or the closing parenthesis.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
SKIPPED_DIRS = {".git", "dist", "node_modules", "__pycache__", ".artifacts"}


def _tracked(suffix: str) -> List[Path]:
    """Tracked files ending in `suffix` (every such file when this is not a git checkout)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", f"*{suffix}"], cwd=ROOT, capture_output=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return [p for p in ROOT.rglob(f"*{suffix}")
                if not any(part in SKIPPED_DIRS or part.startswith(".venv") for part in p.relative_to(ROOT).parts)]
    return [ROOT / name for name in out.decode().split("\0") if name]


def _docstrings(path: Path) -> Iterator[Tuple[int, str]]:
    """(line, text) of the module's, each class's and each function's docstring."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            text = ast.get_docstring(node, clean=False)
            if text:
                yield (getattr(node, "lineno", 1), text)


def _doc_pages() -> List[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> List[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return [_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.*?)\s*#*\s*$", text, re.M)]


def test_no_markdown_file_points_outside_the_repository() -> None:
    bad = []
    for page in _tracked(".md"):
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            if OUTSIDE.search(line):
                bad.append(f"{page.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not bad, "references to notes outside the repository (use docs/CONTRACTS.md or docs/ARCHITECTURE.md):\n" \
        + "\n".join(bad)


def test_no_docstring_points_outside_the_repository() -> None:
    sources = [*_tracked(".py"), ROOT / "ui" / "index.cgi"]
    bad = []
    for source in sources:
        for line, text in _docstrings(source):
            found = OUTSIDE.search(text)
            if found:
                bad.append(f"{source.relative_to(ROOT)}:{line}: {found.group(0)}")
    assert not bad, "docstrings that point outside the repository:\n" + "\n".join(bad)


@pytest.mark.parametrize("page", _doc_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    broken = []
    for match in LINK.finditer(text):
        target = match.group(1)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
            continue  # http:, https:, mailto: are not files of this repository
        path_part, _, anchor = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(f"{target}: no heading with that anchor in {linked.relative_to(ROOT)}")
        elif ROOT not in linked.parents and linked != ROOT:
            broken.append(f"{target}: outside the repository")
    assert not broken, f"{page.relative_to(ROOT)}: broken links:\n" + "\n".join(broken)


def test_the_checks_see_what_they_guard() -> None:
    """The patterns catch the kinds of reference this module exists for, and the link parser finds links."""
    assert OUTSIDE.search("see ../shared/DESIGN.md")
    assert OUTSIDE.search('(DESIGN.md "Recipients")')
    assert OUTSIDE.search("Recipe: shared/reference/test-rig.md")
    assert not OUTSIDE.search("docs/CONTRACTS.md, a shared lock")
    found = [m.group(1) for m in LINK.finditer("[a](docs/A.md) ![b](x.png) [`c`](docs/C.md#d \"t\") [e](https://x)")]
    assert found == ["docs/A.md", "x.png", "docs/C.md#d", "https://x"]
    assert _slug("Differences from the original design") == "differences-from-the-original-design"
    assert _slug("`collector/`: Smart POP") == "collector-smart-pop"
