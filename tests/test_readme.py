"""The README's commands are the ones that work, and the ones CI runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def readme_commands() -> list[str]:
    """The commands the README tells a new user to type: its `sh` block, and the fast-suite command."""
    text = (ROOT / "README.md").read_text()
    block = text.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    return commands + re.findall(r"`(\.venv/bin/pytest)` runs the fast suite", text)


def test_ci_runs_the_readmes_exact_commands():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    commands = readme_commands()
    assert "make test" in commands and ".venv/bin/pytest" in commands, commands
    missing = [c for c in commands if not any(line.strip().startswith(c) for line in ci)]
    assert not missing, f".ci/run does not run the README's {missing}"


def test_the_pytest_script_collects_the_tests_that_import_the_checkout(tmp_path):
    # `.venv/bin/pytest`, unlike `python -m pytest`, does not put the working directory on sys.path:
    # `from tests.course import ...` and Modal's look for jobs/modal_app.py need the checkout there.
    script = Path(sys.executable).with_name("pytest")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run(
        [str(script), "--collect-only", "-q", "-p", "no:cacheprovider"]
        + ["tests/course/test_scoring.py", "tests/backends/test_modal.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
