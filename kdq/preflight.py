"""Checks made at enqueue time that need more than the spec itself: the student exists and fits."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

from kdq import runfolder
from kdq.search import spec as search
from kdq.specfile import SpecError


def check_students(specs: list, cache_dir: Path) -> None:
    """timm/torchvision students must exist and fit the size limit: checked now, not after a GPU hour.

    Verdicts are remembered per library version in ``cache_dir/students.json``, so queueing
    known students again does not even import torch.
    """
    cache_file = cache_dir / "students.json"
    known: dict = runfolder.read_json(cache_file) or {}
    verdicts: dict[str, str | None] = {}
    problems = []
    # A search may train any student of its space: every one is checked now.
    for path, student in ((path, student) for path, spec in specs for student in search.students(spec)):
        lib = student.library
        if lib == "kdq":
            continue  # the spec itself knows kdq's students
        key = f"{lib}=={version(lib)}:{student.name}"
        if key not in verdicts:
            if key in known:
                verdicts[key] = known[key]
            else:
                from kdq.train.students import StudentError, preflight

                try:
                    preflight(student)
                    verdicts[key] = None
                except StudentError as exc:
                    verdicts[key] = str(exc)
        if verdicts[key]:
            problems.append(f"{path}: {verdicts[key]}")
    if verdicts.keys() - known.keys():
        runfolder.write_json(cache_file, {**known, **verdicts})
    if problems:
        raise SpecError(sorted(set(problems), key=problems.index))
