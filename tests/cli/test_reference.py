"""docs/cli-reference.md is every command's --help; the exit codes it lists are the ones the code uses."""

from pathlib import Path

import typer

from kdq.cli import common
from kdq.cli.main import app
from kdq.cli.reference import EXIT_CODES, render

DOC = Path(__file__).parents[2] / "docs" / "cli-reference.md"


def test_the_reference_matches_the_commands():
    assert DOC.read_text() == render(), (
        "docs/cli-reference.md is stale: python -m kdq.cli.reference > docs/cli-reference.md"
    )


def test_every_command_is_in_it_with_examples():
    text = render()
    root = typer.main.get_command(app)
    for name in root.list_commands(None):
        assert f"## kdq {name}\n" in text
    for name in ("enqueue", "status", "cancel", "retry", "submit", "results", "show", "doctor", "worker"):
        section = text.split(f"## kdq {name}\n", 1)[1].split("\n## ", 1)[0]
        assert "Examples:" in section and section.count(f"kdq {name}") >= 2, name
    assert "<bool>" not in text  # flags show no type tags


def test_the_exit_code_table_is_the_one_in_the_code():
    assert (
        [code for code, _ in EXIT_CODES]
        == [
            common.OK,
            common.ERROR,
            common.USAGE,
            common.RATE_LIMITED,
            common.UNREACHABLE,
        ]
        == [0, 1, 2, 3, 4]
    )
    assert "| 4 | the course server is unreachable" in DOC.read_text()


def _anchors(page: Path) -> set[str]:
    """GitHub's ids of a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    import re

    return {
        re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        for title in re.findall(r"^#+ (.+)$", page.read_text(), flags=re.M)
    }


def test_every_relative_link_in_the_readme_and_the_docs_leads_somewhere():
    import re

    root = DOC.parents[1]
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    assert len(pages) > 5
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code blocks hold no links
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", text):
            if "://" in target or target.startswith("mailto:"):
                continue
            linked = (page.parent / target) if target else page
            assert linked.exists(), f"{page.relative_to(root)} links {target}, which is not there"
            if anchor and linked.suffix == ".md":
                assert anchor in _anchors(linked), (
                    f"{page.relative_to(root)} links {target}#{anchor}: no such heading"
                )
        assert "honcho start" not in text or "pip install honcho" in text, page
