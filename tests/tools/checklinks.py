"""Docs that do not rot: `python -m tests.tools.checklinks` (run by `make lint`).

Fails (exit 1, one ``path:line: problem`` per line) when:

- a relative Markdown link in README.md or docs/ names a file that does not
  exist, or an ``#anchor`` that no heading of the target page produces;
- code or docs mention a decision (``docs/decisions/NNNN-name.md``, a bare
  ``NNNN-name.md``, ``decisions/NNNN`` or "decision NNNN") that has no file;
- a decision file lacks its Context, Decision or Consequences section, or
  README.md does not link it;
- anything mentions the external spec folder or the machine's work folder:
  the repository stands alone.

Standard library only; it reads the working tree, so it also sees files that
are not committed yet.
"""

from __future__ import annotations

import argparse
import re
import sys
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

#: Files read for mentions: source, docs, build files.
TEXT_SUFFIXES = frozenset({".py", ".md", ".toml", ".txt", ".cfg", ".ini", ".sh", ".yml", ".yaml"})
TEXT_NAMES = frozenset({"Makefile"})
#: Directories never read (tools' caches, the virtualenv, build output).
SKIP_DIRS = frozenset({"__pycache__", "node_modules", "build", "dist"})
DECISIONS = Path("docs/decisions")
SECTIONS = ("Context", "Decision", "Consequences")

# Spelled in pieces so that this file does not trip its own check.
FORBIDDEN = ("../" + "shared", "/" + "work/")

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)"
)
REFERENCE_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)", re.MULTILINE)
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.IGNORECASE)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:|^//")
#: ``0003-ttls-staging-and-grace.md``, with or without its folder.
DECISION_FILE = re.compile(r"(?<![\w-])(\d{4})-[a-z0-9][a-z0-9-]*\.md\b")
#: ``decision 0009``, ``decisions 0004 and 0008``, ``decisions/0006``.
DECISION_NUMBER = re.compile(
    r"\bdecisions?(?:/|\s+)(\d{4})\b((?:\s*(?:,|and|or)\s*\d{4}\b)*)", re.IGNORECASE
)


@dataclass(frozen=True, slots=True)
class Problem:
    path: Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def text_files(root: Path) -> Iterator[Path]:
    """Every file worth reading under ``root``, hidden folders and caches skipped."""
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        if any(p.startswith(".") or p in SKIP_DIRS or p.endswith(".egg-info") for p in parts):
            continue
        if path.is_file() and (path.suffix in TEXT_SUFFIXES or path.name in TEXT_NAMES):
            yield path


def markdown_pages(root: Path) -> list[Path]:
    """README.md and every page under docs/: the pages whose links are checked."""
    pages = [root / "README.md"] if (root / "README.md").is_file() else []
    return pages + sorted((root / "docs").rglob("*.md"))


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def without_code(text: str) -> str:
    """``text`` with fenced blocks and code spans blanked; offsets and lines kept."""
    out: list[str] = []
    fence: str | None = None
    for line in text.splitlines(keepends=True):
        match = FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)[0] * 3
            out.append(_blank(line))
        elif fence is not None:
            if line.lstrip().startswith(fence):
                fence = None
            out.append(_blank(line))
        else:
            out.append(line)
    return CODE_SPAN.sub(lambda m: _blank(m.group(0)), "".join(out))


def _blank(text: str) -> str:
    return re.sub(r"[^\n]", " ", text)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = unicodedata.normalize("NFC", text).lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every ``#anchor`` a page offers: its headings (duplicates numbered) and HTML anchors."""
    text = page.read_text(encoding="utf-8")
    found: set[str] = set(HTML_ANCHOR.findall(text))
    seen: dict[str, int] = {}
    # Headings are found where code is blanked, but named from the raw line:
    # GitHub keeps the words of a code span in the anchor.
    for raw, masked in zip(text.split("\n"), without_code(text).split("\n"), strict=True):
        match = HEADING.match(raw)
        if not match or not HEADING.match(masked):
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def check_links(root: Path, page: Path) -> Iterator[Problem]:
    """Relative links of one Markdown page: the file exists, the anchor too."""
    text = without_code(page.read_text(encoding="utf-8"))
    shown = page.relative_to(root)
    targets = [(m.group(1), m.start()) for m in INLINE_LINK.finditer(text)]
    targets += [(m.group(1), m.start()) for m in REFERENCE_LINK.finditer(text)]
    for raw, offset in sorted(targets, key=lambda t: t[1]):
        target = raw.strip("<>")
        if SCHEME.match(target):
            continue  # http:, mailto: and the like: not ours to check offline
        path_part, _, anchor = target.partition("#")
        line = line_of(text, offset)
        if path_part:
            base = root if path_part.startswith("/") else page.parent
            dest = (base / unquote(path_part).lstrip("/")).resolve()
            if not dest.exists():
                yield Problem(shown, line, f"link to a missing file: {target}")
                continue
        else:
            dest = page
        if anchor and dest.suffix == ".md" and dest.is_file() and anchor not in anchors(dest):
            yield Problem(shown, line, f"link to a missing anchor: {target}")


def check_mentions(root: Path, path: Path, decisions: dict[str, Path]) -> Iterator[Problem]:
    """Decision names and numbers that exist; no path outside the repository."""
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return
    shown = path.relative_to(root)
    names = {p.name for p in decisions.values()}
    for match in DECISION_FILE.finditer(text):
        if match.group(0) not in names:
            line = line_of(text, match.start())
            yield Problem(shown, line, f"no decision file {DECISIONS / match.group(0)}")
    for match in DECISION_NUMBER.finditer(text):
        numbers = [match.group(1), *re.findall(r"\d{4}", match.group(2))]
        for number in numbers:
            if number not in decisions:
                yield Problem(shown, line_of(text, match.start()), f"no decision {number}")
    for needle in FORBIDDEN:
        at = text.find(needle)
        while at != -1:
            where = line_of(text, at)
            yield Problem(shown, where, f"mentions {needle!r}: the repository stands alone")
            at = text.find(needle, at + 1)


def check_decisions(root: Path, decisions: dict[str, Path]) -> Iterator[Problem]:
    """Each decision has its three sections and is linked from README.md."""
    readme = root / "README.md"
    linked = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    for path in decisions.values():
        shown = path.relative_to(root)
        headings = {
            m.group(1).strip()
            for m in re.finditer(r"^##\s+(.+)$", path.read_text(encoding="utf-8"), re.MULTILINE)
        }
        for section in SECTIONS:
            if section not in headings:
                yield Problem(shown, 1, f"no '## {section}' section")
        if f"({shown.as_posix()})" not in linked:
            yield Problem(shown, 1, "not linked from README.md")


def find_decisions(root: Path) -> dict[str, Path]:
    """Decision number -> its file, for every ``docs/decisions/NNNN-*.md``."""
    folder = root / DECISIONS
    if not folder.is_dir():
        return {}
    return {p.name[:4]: p for p in sorted(folder.glob("[0-9][0-9][0-9][0-9]-*.md"))}


def check(root: Path) -> list[Problem]:
    """Every problem under ``root``, by file and line."""
    decisions = find_decisions(root)
    problems: list[Problem] = []
    for page in markdown_pages(root):
        problems += check_links(root, page)
    for path in text_files(root):
        problems += check_mentions(root, path, decisions)
    problems += check_decisions(root, decisions)
    return sorted(problems, key=lambda p: (p.path.as_posix(), p.line))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="checklinks", description="Check docs links and mentions."
    )
    default_root = Path(__file__).resolve().parents[2]
    parser.add_argument("--root", type=Path, default=default_root, help="repository root")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    problems = check(root)
    for problem in problems:
        print(problem)
    if problems:
        print(f"checklinks: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"checklinks: {len(markdown_pages(root))} pages, links and mentions ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
