"""tests/tools/checklinks.py on small trees: what `make lint` prints and returns."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tools.checklinks import main

# Built from pieces, so that the checker, run on this repository, does not
# take this file's own examples for real mentions.
DECISION = "decision"
SHARED = "../" + "shared"
WORK = "/" + "work/"
FIRST = "0001" + "-first.md"
RENAMED = "0001" + "-renamed.md"
SECOND = "0002" + "-second.md"
SECTIONS = "## Context\nWhy.\n\n## Decision\nWhat.\n\n## Consequences\nThen.\n"


def write(root: Path, name: str, text: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A repository whose links and mentions are all sound."""
    write(
        tmp_path,
        "README.md",
        "# Demo\n\n"
        "See [the guide](docs/guide.md), its [second part](docs/guide.md#part-two-the-end)\n"
        f"and [a decision](docs/decisions/{FIRST}); [the web](https://example.org/x).\n",
    )
    write(
        tmp_path,
        "docs/guide.md",
        "# Guide\n\n## Part two: the end\n\nBack to [the top](#guide) or [home](../README.md).\n"
        "## The `PUT` request\n\nSee [it](#the-put-request).\n"
        "```\n[inside a fence](nowhere.md)\n```\n"
        "Inline code is not a link: `[x](nowhere.md)`.\n",
    )
    write(tmp_path, f"docs/decisions/{FIRST}", "# 0001: First\n\n" + SECTIONS)
    write(tmp_path, "app.py", f'"""Why: see {DECISION} 0001 and decisions/{FIRST}."""\n')
    # Hidden folders (.venv, .git) are never read.
    write(tmp_path, ".venv/lib/junk.py", f"# {SHARED} {DECISION} 0099\n")
    return tmp_path


def run(root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    status = main(["--root", str(root)])
    return status, capsys.readouterr().out.splitlines()


def test_a_sound_tree_passes(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out = run(tree, capsys)
    assert status == 0
    assert out == ["checklinks: 3 pages, links and mentions ok"]


def test_a_link_to_a_missing_file_fails_with_its_line(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tree, "docs/more.md", "# More\n\nGood: [guide](guide.md).\nBad: [gone](gone.md).\n")
    status, out = run(tree, capsys)
    assert status == 1
    assert out == ["docs/more.md:4: link to a missing file: gone.md"]


def test_a_link_to_a_missing_anchor_fails(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tree, "docs/more.md", "# More\n\n[x](guide.md#part-three) and [y](#more) [z](#less)\n")
    status, out = run(tree, capsys)
    assert status == 1
    assert out == [
        "docs/more.md:3: link to a missing anchor: guide.md#part-three",
        "docs/more.md:3: link to a missing anchor: #less",
    ]


def test_a_mention_of_a_missing_decision_fails(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(
        tree,
        "service/thing.py",
        f"# {DECISION}s 0001 and 0042 say why\n# (docs/decisions/{RENAMED})\n",
    )
    status, out = run(tree, capsys)
    assert status == 1
    assert out == [
        f"service/thing.py:1: no {DECISION} 0042",
        f"service/thing.py:2: no {DECISION} file docs/decisions/{RENAMED}",
    ]


def test_a_mention_outside_the_repository_fails(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tree, "docs/spec.md", f"# Spec\n\nThe spec is in `{SHARED}/SPEC.md`.\n")
    write(tree, "Makefile", f"lint:\n\tcat {WORK}notes\n")
    status, out = run(tree, capsys)
    assert status == 1
    assert out == [
        f"Makefile:2: mentions {WORK!r}: the repository stands alone",
        f"docs/spec.md:3: mentions {SHARED!r}: the repository stands alone",
    ]


def test_a_decision_without_its_sections_or_readme_link_fails(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tree, f"docs/decisions/{SECOND}", "# 0002: Second\n\n## Context\nWhy.\n")
    status, out = run(tree, capsys)
    assert status == 1
    assert out == [
        f"docs/decisions/{SECOND}:1: no '## Decision' section",
        f"docs/decisions/{SECOND}:1: no '## Consequences' section",
        f"docs/decisions/{SECOND}:1: not linked from README.md",
    ]
