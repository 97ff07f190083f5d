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


def test_links_in_the_readme_and_the_user_docs_lead_somewhere():
    import re

    root = DOC.parents[1]
    for page in ("README.md", "docs/getting-started.md", "docs/overnight.md", "docs/troubleshooting.md"):
        text = (root / page).read_text()
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" not in target:
                assert ((root / page).parent / target).exists(), f"{page} links {target}, which is not there"
        assert "honcho start" not in text or "pip install honcho" in text, page
