"""Checks made at enqueue time that need more than the spec itself, so that a spec fails now, not after
a GPU hour: the student exists and fits, a local spec's dataset is there, its teacher can be read.

    warnings = check(specs, settings)     a SpecError with every problem (one line each), or warnings
"""

from __future__ import annotations

import json
import subprocess
import sys
from functools import cache
from importlib.metadata import version
from pathlib import Path

from kdq import runfolder
from kdq.search import spec as search
from kdq.specfile import SpecError

ENQUEUE_AGAIN = "enqueue it again"
installed = cache(version)  # each call reads the package metadata from disk: once per library, not per spec


def check(specs: list, settings) -> list[str]:
    """Every check below; all their problems at once in one ``SpecError``, else the warnings to print.
    The students are checked in a process of their own while the others run."""
    from kdq import logins

    asked = logins.start(specs)  # no Modal login, no HF token: warnings, from a process of its own
    try:
        with StudentCheck(specs, settings.student_verdicts) as pending:
            problems = datasets(specs, settings)
            denied, warnings = teachers(specs, settings)
            problems = pending.problems() + problems
        if problems + denied:
            raise SpecError(grouped(problems + denied))
        return warnings + logins.warnings(asked)
    finally:
        logins.stop(asked)


def grouped(problems: list[str], shown: int = 3) -> list[str]:
    """``path: problem`` lines, one per problem: 200 specs without their dataset are one line that names
    the first files and counts the rest, not 200 of the same."""
    files: dict[str, list[str]] = {}
    for line in problems:
        path, _, problem = line.partition(": ")
        if path not in files.setdefault(problem, []):
            files[problem].append(path)
    out = []
    for problem, paths in files.items():
        more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
        out.append(f"{', '.join(paths[:shown])}{more}: {problem}")
    return out


class StudentCheck:
    """timm/torchvision students must exist and fit the size limit: checked now, not after a GPU hour.

    Verdicts are remembered per library version in ``cache_file``, so queueing known
    students again does not even start the check. Unknown ones are checked by ``python -m
    kdq.train.students``, started as this is made: the imports of torch and torchvision (2 s) happen
    there, beside the other checks, and the command itself never imports them.
    """

    def __init__(self, specs: list, cache_file: Path):
        self.cache_file = cache_file
        self.known: dict[str, str | None] = runfolder.read_json(self.cache_file) or {}
        self.asked: list[tuple[str, str]] = []  # (spec file, key), every student of every spec
        self.unknown: dict[str, dict] = {}  # key: the student spec, for those never checked
        # A search may train any student of its space: every one is checked now.
        # Its size is the file's in the spec's export.weights (int8: about a quarter of fp32).
        for path, spec in specs:
            for student in search.students(spec):
                if student.library == "kdq":
                    continue  # the spec itself knows kdq's students
                weights = spec.export.weights
                key = f"{student.library}=={installed(student.library)}:{student.name}:{weights}"
                self.asked.append((str(path), key))
                if key not in self.known:
                    self.unknown[key] = {**student.model_dump(mode="json"), "weights": weights}
        self.proc = None
        if self.unknown:
            cmd = [sys.executable, "-P", "-m", "kdq.train.students"]  # -P: no module from the cwd
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )

    def __enter__(self) -> StudentCheck:
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:  # left early: nothing waits for it
            self.proc.kill()
            self.proc.wait()

    def problems(self) -> list[str]:
        """``path: problem`` for each spec whose student is refused (waits for the check)."""
        verdicts = dict(self.known)
        if self.proc is not None:
            out, err = self.proc.communicate(json.dumps(self.unknown))
            if self.proc.returncode:
                last = (err.strip().splitlines() or [f"exit code {self.proc.returncode}"])[-1]
                return [
                    f"{path}: the student check failed ({last})"
                    for path, k in self.asked
                    if k in self.unknown
                ]
            verdicts.update(json.loads(out))
            runfolder.write_json(self.cache_file, verdicts)
        return [f"{path}: {verdicts[key]}" for path, key in self.asked if verdicts[key]]


def datasets(specs: list, settings) -> list[str]:
    """A local spec's dataset must be the folder its training will read (the local backend's
    ``data_dir``: ``$KDQ_HOME/datasets/<data.dataset>``), with class folders of pictures in it (found as
    the training finds them, without decoding). Modal specs are not checked: their data is on the
    Volume, or uploaded from here at launch."""
    from kdq.backends.local import LocalBackend
    from kdq.train.layout import DataError, find_root

    local = LocalBackend(settings)
    seen: dict[Path, str | None] = {}
    problems = []
    for path, spec in specs:
        if spec.backend.kind != "local":
            continue
        folder = local.data_dir(spec)
        if folder not in seen:
            try:
                _every_class_has_a_picture(find_root(folder))
                seen[folder] = None
            except DataError as exc:
                seen[folder] = (
                    f"no dataset at {folder}" if not folder.is_dir() else str(exc).removeprefix(f"{folder}: ")
                )
        if seen[folder]:
            problems.append(
                f"{path}: data.dataset = {spec.data.dataset!r}: {seen[folder]}: unzip the course's "
                f"train_dataset there, link one there (ln -s), or make one with `kdq data synth {folder}`"
            )
    return problems


def _every_class_has_a_picture(root: Path) -> None:
    """An empty class folder fails the training in seconds: refuse it here (stops at the first picture)."""
    from kdq.train.layout import EXTENSIONS, DataError, _visible

    for d in sorted(root.iterdir()):
        if d.is_dir() and _visible(d) and not any(f.suffix.lower() in EXTENSIONS for f in d.rglob("*")):
            raise DataError(f"class folder {d} has no images; remove it or add images")


def needs_hub(spec) -> bool:
    """A local spec whose teacher comes from the Hugging Face Hub (Modal launches check theirs)."""
    from kdq import hf

    return spec.backend.kind == "local" and hf.on_the_hub(spec.teacher)


def teachers(specs: list, settings) -> tuple[list[str], list[str]]:
    """Can this user read each Hub teacher of the local specs? One call per teacher, whatever the number
    of specs. Returns (problems: denied, or no token; warnings: the Hub unreachable, queued all the same,
    since offline queueing works and the training may find the weights in the local cache)."""
    repos = [spec.teacher.model for _, spec in specs if needs_hub(spec)]
    if not repos:
        return [], []
    from kdq import hf
    from kdq.errors import PermanentError

    found = hf.verdicts(settings, repos, then=ENQUEUE_AGAIN)
    denied = [
        f"{path}: teacher.model = {spec.teacher.model!r}: {found[spec.teacher.model]}"
        for path, spec in specs
        if needs_hub(spec) and isinstance(found[spec.teacher.model], PermanentError)
    ]
    return denied, [
        f"{exc}; queued without the check (the training needs the weights, or access, when it starts)"
        for exc in found.values()
        if exc is not None and not isinstance(exc, PermanentError)
    ]
