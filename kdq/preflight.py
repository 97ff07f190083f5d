"""Checks made at enqueue time that need more than the spec itself, so that a spec fails now, not after
a GPU hour: the student exists and fits, a local spec's dataset is there, its teacher can be read.

    warnings = check(specs, settings)     a SpecError with every problem (one line each), or warnings
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import version
from pathlib import Path

from kdq import runfolder
from kdq.search import spec as search
from kdq.specfile import SpecError

ENQUEUE_AGAIN = "enqueue it again"
installed = cache(version)  # each call reads the package metadata from disk: once per library, not per spec


def check(specs: list, settings) -> list[str]:
    """Every check below; all their problems at once in one ``SpecError``, else the warnings to print."""
    problems = students(specs, settings.cache_dir) + datasets(specs, settings)
    denied, warnings = teachers(specs, settings)
    if problems + denied:
        raise SpecError(grouped(problems + denied))
    return warnings


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


def students(specs: list, cache_dir: Path) -> list[str]:
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
        key = f"{lib}=={installed(lib)}:{student.name}"
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
    return problems


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
                find_root(folder)
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
