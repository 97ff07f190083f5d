"""What quick commands import: never torch, matplotlib or scipy; --help not the store or pydantic-settings.

Measured with python -X importtime while making them quick (benchmarks/control_plane.py has the times).
"""

import os
import subprocess
import sys

import pytest

PROBE = """
import sys
from kdq.cli.main import app
try:
    app(sys.argv[1:])
except SystemExit:
    pass
sys.stdout = sys.__stdout__
print("MODULES " + " ".join(sorted(m for m in sys.modules if "." not in m)))
"""
HEAVY = {
    "torch",
    "torchvision",
    "timm",
    "matplotlib",
    "scipy",
    "jinja2",
    "modal",
    "huggingface_hub",
    "optuna",
}


def imported(home, *args) -> set[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("KDQ_")}, "KDQ_HOME": str(home)}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *args], env=env, capture_output=True, text=True, timeout=120
    )
    line = next(x for x in out.stdout.splitlines() if x.startswith("MODULES "))
    return set(line.split()[1:])


def test_help_imports_only_typer(tmp_path):
    mods = imported(tmp_path, "--help")
    assert not mods & (
        HEAVY | {"numpy", "sqlite_utils", "pydantic_settings", "httpx", "structlog", "rich", "huey"}
    )


@pytest.mark.parametrize("args", [["status"], ["status", "--json"], ["results"], ["show", "1"]])
def test_looking_imports_nothing_heavy(settings, store, args):
    from kdq.spec import ExperimentSpec

    store.add([(None, ExperimentSpec(name="x"))])
    mods = imported(settings.root, *args)
    assert not mods & HEAVY, sorted(mods & HEAVY)
    assert "structlog" not in mods  # a look logs nothing


def test_the_probe_sees_what_it_should(settings, store):
    assert {"sqlite3", "kdq", "pydantic"} <= imported(settings.root, "status")


@pytest.mark.parametrize("args", [["status"], ["status", "--json"], ["results"], ["show", "1"]])
def test_looking_reads_the_store_without_sqlite_utils_or_numpy(settings, store, args):
    """Reads go through sqlite3 and the scores through the standard library: sqlite-utils imports
    numpy, together ~90 ms of a 0.25 s budget for `kdq status`."""
    from kdq.spec import ExperimentSpec

    store.add([(None, ExperimentSpec(name="x"))])
    mods = imported(settings.root, *args)
    assert not mods & {"numpy", "sqlite_utils", "sklearn"}, sorted(
        mods & {"numpy", "sqlite_utils", "sklearn"}
    )


def test_enqueue_of_a_new_student_leaves_torch_to_the_check_process(settings, tmp_path):
    """The student check imports torch and torchvision (2 s) in a process of its own, which ends without
    their teardown (0.75 s more at a normal exit): the command itself never imports them."""
    spec = tmp_path / "s.toml"
    student = '[student]\nlibrary = "torchvision"\nname = "mobilenet_v3_small"'
    spec.write_text(f'name = "s"\n{student}\n[backend]\nkind = "modal"\n')
    mods = imported(settings.root, "enqueue", str(spec))
    assert "pydantic" in mods and not mods & HEAVY, sorted(mods & HEAVY)
    assert "torchvision==" in (settings.cache_dir / "students.json").read_text()  # it was checked
