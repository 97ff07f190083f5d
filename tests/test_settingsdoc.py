"""docs/settings.md is every KDQ_* setting, generated from the code; the docs name no other."""

import re
from pathlib import Path

from kdq.settings import Settings
from kdq.settingsdoc import render

ROOT = Path(__file__).parents[1]
DOC = ROOT / "docs" / "settings.md"
# code names, the overnight tests' hooks, and what the Modal container sets for a packed run
NOT_SETTINGS = {"KDQ_MODELS", "KDQ_STUDENTS", "KDQ_SECRET", "KDQ_TEST_DISK_FULL_S", "KDQ_TEST_CLOCK"}
NOT_SETTINGS |= {"KDQ_CUDA_MEMORY_FRACTION"}


def test_the_settings_page_matches_the_code():
    assert DOC.read_text() == render(), (
        "docs/settings.md is stale: python -m kdq.settingsdoc > docs/settings.md"
    )


def test_every_setting_says_what_it_does_and_the_docs_name_only_real_ones():
    assert not [n for n, f in Settings.model_fields.items() if not f.description]
    known = {f"KDQ_{n.upper()}" for n in Settings.model_fields}
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    named = {v for p in pages for v in re.findall(r"\bKDQ_[A-Z_]+[A-Z]\b", p.read_text())}
    assert not named - known - NOT_SETTINGS, f"the docs name settings that do not exist: {named - known}"
    assert "docs/settings.md" in (ROOT / "README.md").read_text()  # linked from the index
