"""Every citation in the code resolves inside the repository (issue 15): a `docs/...md#anchor`
names a page that exists and an anchor on it, and no file names the research notes or a
path outside the repository. `mkdocs build --strict` (make docs) checks the links between
pages; this checks the code's side."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SCANNED = ("relay", "service", "workers", "schemas", "emulators", "bench", "tests", "docs")
SUFFIXES = {".py", ".toml", ".md", ".yml", ".yaml", ".txt", ".ini", ".mjs", ".html"}
# Not inside a URL (vendors publish docs/... paths too).
CITATION = re.compile(r"(?<![\w/.-])docs/((?:[\w.-]+/)*[\w.-]+\.md)(?:#([\w-]+))?")
ANCHOR = re.compile(r"\{#([\w-]+)\}")
HEADING = re.compile(r"^#+\s+(.*?)\s*(?:\{#[\w-]+\})?\s*$", re.M)
# A section citation of a bare Markdown file (`notes.md §1.4`): the research notes the code
# cited before issue 15 live outside the repository; every citation is a docs/ path now.
BARE_SECTION_CITATION = re.compile(r"(?<![\w/.-])[\w-]+\.md ?§")


def _outside() -> re.Pattern[str]:
    """Bare-note citations, and the absolute path of the folder around the repository (where
    a checkout sits beside other material): a file naming it points outside the repository."""
    around = re.escape(str(ROOT.parent).rstrip("/") + "/")
    return re.compile(f"{BARE_SECTION_CITATION.pattern}|{around}")


def _files() -> list[Path]:
    found = []
    for top in SCANNED:
        for path in (ROOT / top).rglob("*"):
            if path.suffix in SUFFIXES and path.is_file() and "results" not in path.parts:
                found.append(path)
    return [*found, ROOT / "README.md", ROOT / "Makefile", ROOT / "pyproject.toml"]


def _slug(heading: str) -> str:
    # MkDocs' default (Python-Markdown toc): lower case, punctuation dropped, spaces to '-'.
    text = re.sub(r"[^\w\s-]", "", heading.strip().lower())
    return re.sub(r"[-\s]+", "-", text).strip("-")


def _anchors(page: Path) -> set[str]:
    text = page.read_text()
    return set(ANCHOR.findall(text)) | {_slug(h) for h in HEADING.findall(text)}


def _citations() -> list[tuple[str, str, str | None]]:
    cited = []
    for path in _files():
        for match in CITATION.finditer(path.read_text(errors="replace")):
            if path != Path(__file__).resolve():
                cited.append((str(path.relative_to(ROOT)), match.group(1), match.group(2)))
    return cited


def test_the_code_cites_the_vendor_reference_in_the_repository() -> None:
    cited = [c for c in _citations() if c[1].startswith("reference/")]
    assert len(cited) > 200  # about 280 after issue 15: the scan itself works


def test_every_cited_page_and_anchor_exists() -> None:
    broken = []
    for source, page, anchor in _citations():
        target = ROOT / "docs" / page
        if not target.is_file():
            broken.append(f"{source}: docs/{page} does not exist")
        elif anchor and anchor not in _anchors(target):
            broken.append(f"{source}: docs/{page} has no #{anchor}")
    assert broken == []


def test_no_file_names_the_research_notes_or_a_path_outside_the_repository() -> None:
    here, outside = Path(__file__).resolve(), _outside()
    named = [
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for path in _files()
        if path != here
        for match in outside.finditer(path.read_text(errors="replace"))
    ]
    assert named == []
