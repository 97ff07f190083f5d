"""The enqueue-time checks: the students in a process of their own, their verdicts remembered."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kdq import preflight
from kdq.spec import ExperimentSpec

GOOD = {"library": "torchvision", "name": "shufflenet_v2_x1_0"}
UNKNOWN = {"library": "timm", "name": "mobilenet_v99"}


def specs(*students: dict) -> list:
    return [(f"s{i}.toml", ExperimentSpec(name=f"s{i}", student=st)) for i, st in enumerate(students)]


def test_new_students_are_checked_once_in_their_own_process_then_remembered(tmp_path, monkeypatch):
    cache = tmp_path / "cache" / "students.json"  # made as the verdicts are written
    with preflight.StudentCheck(specs(GOOD, UNKNOWN, UNKNOWN), cache) as check:
        assert check.proc is not None  # started: torch is imported there, not here
        problems = check.problems()
    assert problems[0].startswith("s1.toml: student.name = 'mobilenet_v99' is not a timm model")
    assert [p.split(":")[0] for p in problems] == ["s1.toml", "s2.toml"]  # one check, each spec named

    def no_process(*a, **kw):
        raise AssertionError("a known student started a check")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    with preflight.StudentCheck(specs(UNKNOWN, GOOD), cache) as check:
        assert check.proc is None and [p.split(":")[0] for p in check.problems()] == ["s0.toml"]


def test_a_check_process_that_fails_says_why_for_each_spec_and_remembers_nothing(tmp_path, monkeypatch):
    broken = tmp_path / "python"
    broken.write_text(
        "#!/bin/sh\ncat > /dev/null\necho 'ModuleNotFoundError: No module named torch' >&2\nexit 1\n"
    )
    broken.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(broken))
    with preflight.StudentCheck(specs(GOOD, GOOD), tmp_path / "cache" / "students.json") as check:
        problems = check.problems()
    assert problems == [
        f"s{i}.toml: the student check failed (ModuleNotFoundError: No module named torch)" for i in (0, 1)
    ]
    assert not (tmp_path / "cache" / "students.json").exists()


def test_leaving_early_stops_the_check(tmp_path):
    with pytest.raises(RuntimeError), preflight.StudentCheck(specs(GOOD), tmp_path / "s.json") as check:
        raise RuntimeError("another check failed first")
    assert check.proc.returncode is not None  # not left running behind the command


def test_problems_of_many_files_are_grouped():
    lines = [f"s{i}.toml: no dataset at /x" for i in range(5)] + ["t.toml: other"]
    assert preflight.grouped(lines) == [
        "s0.toml, s1.toml, s2.toml and 2 more: no dataset at /x",
        "t.toml: other",
    ]


def test_enqueue_keeps_the_verdicts_where_KDQ_STUDENT_CACHE_says(settings, tmp_path, monkeypatch):
    from kdq.settings import Settings

    shared = tmp_path / "shared" / "students.json"
    monkeypatch.setenv("KDQ_STUDENT_CACHE", str(shared))
    monkeypatch.setattr(preflight, "datasets", lambda specs, s: [])
    monkeypatch.setattr(preflight, "teachers", lambda specs, s: ([], []))
    assert preflight.check(specs(GOOD), Settings()) == []
    assert "torchvision==" in shared.read_text() and not (settings.cache_dir / "students.json").exists()
    monkeypatch.delenv("KDQ_STUDENT_CACHE")
    assert Settings().student_verdicts == settings.cache_dir / "students.json"  # the default: the home's


def test_an_empty_class_folder_is_refused_at_enqueue_in_one_line(settings, synth_dataset):
    """The training would fail in seconds with a traceback; enqueue names the folder and the fix."""
    import shutil

    data = settings.datasets_dir / "hw3"
    from kdq.train.layout import find_root

    shutil.copytree(synth_dataset, data)
    empty = find_root(data) / "99. Empty Class"
    empty.mkdir()
    [problem] = preflight.datasets([("a.toml", ExperimentSpec(name="a"))], settings)
    assert problem.startswith("a.toml: data.dataset = 'hw3': ") and str(empty) in problem
    assert "has no images" in problem and "\n" not in problem
    empty.rmdir()
    assert preflight.datasets([("a.toml", ExperimentSpec(name="a"))], settings) == []
