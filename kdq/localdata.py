"""A dataset into the home (``kdq data add``): copied, linked or unzipped to ``$KDQ_HOME/datasets/<name>``,
where local training and the validating step's holdout check read it. Accepts the course's zip and its
nested ``training_dataset/train_dataset/<class>/`` layout; all or nothing (a half-copied folder never
appears under the name)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

from kdq.train.layout import DataError, Dataset, discover, find_root


@contextlib.contextmanager
def unzipped(source: Path) -> Iterator[Path]:
    """``source`` itself, or, for a .zip (the course's file as downloaded), a folder it is unpacked in for
    the duration."""
    source = Path(source).expanduser()
    if not (source.is_file() and zipfile.is_zipfile(source)):
        yield source
        return
    with tempfile.TemporaryDirectory(prefix="kdq-unzipped-") as tmp:
        with zipfile.ZipFile(source) as z:
            z.extractall(tmp)
        yield Path(tmp)


def add(source: Path, dest: Path, link: bool = False) -> Dataset:
    """Put ``source`` (a dataset folder, however nested, or a .zip of one) at ``dest``; its dataset."""
    source = Path(source).expanduser()
    if dest.exists() or dest.is_symlink():
        raise DataError(f"{dest} exists already: pick another --name, or remove it first")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}-") as tmp:
        if zipfile.is_zipfile(source):
            if link:
                raise DataError(f"{source} is a zip: it is unpacked into the home, not linked (drop --link)")
            with zipfile.ZipFile(source) as z:
                z.extractall(tmp)
            found = find_root(Path(tmp))
            found.rename(dest)
        elif link:
            dest.symlink_to(find_root(source).resolve(), target_is_directory=True)
        else:
            staged = Path(tmp) / "copy"
            shutil.copytree(find_root(source), staged)
            staged.rename(dest)
    return discover(dest)
