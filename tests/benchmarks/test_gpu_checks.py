"""benchmarks/gpu_checks.py --smoke: every check runs on the CPU and prints its JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_smoke_mode_runs_every_check_and_prints_one_json_line_each():
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_checks.py", "--smoke"], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    checks = [line["check"] for line in lines]
    assert checks.count("env") == 1 and checks.count("students") == 4 and checks.count("syncs") == 3
    assert checks.count("teacher") == 2
    assert [line["processes"] for line in lines if line["check"] == "packing"] == [1, 4]
    env = lines[0]
    assert env["torch"].startswith("2.") and "driver" in env and env["attention"]["math"] is True
    [e2e] = [line for line in lines if line["check"] == "e2e"]
    assert e2e["rc"] == 0 and e2e["device"] == "cpu" and e2e["gpu"]["torch"] == env["torch"], e2e
    assert e2e["fixed_s"] > 0 and e2e["epochs_s"] > 0
