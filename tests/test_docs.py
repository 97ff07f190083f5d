"""What the docs promise exists: every config they name ships, worked examples are the shipped files,
every page is linked from the README, and no page claims an exit code the CLI does not use."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_config_the_docs_name_ships():
    named = {m for p in PAGES for m in re.findall(r"\bconfigs/[\w./-]+\.toml\b", p.read_text())}
    assert named and not {n for n in named if not (ROOT / n).is_file()}, sorted(
        n for n in named if not (ROOT / n).is_file()
    )


def test_the_search_example_is_the_shipped_config():
    text = (ROOT / "docs" / "search.md").read_text()
    block = text.split("`configs/hinton-search.toml`:\n\n```toml\n", 1)[1].split("```", 1)[0]
    assert (ROOT / "configs" / "hinton-search.toml").read_text() == block


def test_every_page_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    unlinked = [p.name for p in PAGES[1:] if f"(docs/{p.name})" not in readme]
    assert not unlinked, f"docs the README's index does not link: {unlinked}"


def test_the_worker_lines_in_overnight_md_are_what_the_worker_prints(capsys):
    from kdq import log

    log.configure(json=False)
    log.stage_changed(7, "long-d", "queued", "launching", "queued → launching")
    log.stage_changed(7, "long-d", "launching", "training", "launched run 1f2e-e7-a1")
    progress = {"epoch": 60, "epochs": 60, "best_f1": 0.81}
    log.stage_changed(7, "long-d", "training", "fetching", "training finished", progress)
    log.stage_changed(7, "long-d", "validating", "ready", "verified: val macro-F1 0.8123")
    printed = re.sub(r"^\d\d:\d\d:\d\d", "23:41:07", capsys.readouterr().err, flags=re.M)
    text = (ROOT / "docs" / "overnight.md").read_text()
    block = text.split("## What the worker prints", 1)[1].split("```\n", 2)[1]
    assert block == printed
