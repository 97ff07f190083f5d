"""A folder the training writes on the container's own disk, mirrored onto the Volume between commits.

A Volume commit (and the reload it ends with) is refused while any file on the mount is open, a
packed neighbour's included. So the training reads and writes its run folder on the container's
disk, and the container copies it onto the Volume under the lock its inputs commit under
(jobs/packing.py), before each commit: every file new or changed since the last copy, whole (renamed
in, never half), and a file the training removed (a stale error.json) removed there too. At the start
``pull`` brings the Volume's copy down: the spec, the checkpoint a restarted input resumes from.
Nothing here imports modal.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from kdq import runfolder


class Mirror:
    """``local`` (the training's) onto ``remote`` (on the Volume); ``skip``: names another copy owns."""

    def __init__(self, local: Path, remote: Path, skip: tuple[str, ...] = ()):
        self.local, self.remote, self.skip = Path(local), Path(remote), set(skip)
        self.copied: dict[str, tuple[int, int]] = {}  # relative path → (mtime, size) when copied

    def _files(self, root: Path) -> dict[str, Path]:
        """Plain files under ``root``, by relative path: no links (a cache read where it is), no
        temporary files (their names start with a dot), nothing in ``skip``."""
        if not root.is_dir():
            return {}
        return {
            str(p.relative_to(root)): p
            for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink() and not p.name.startswith(".") and p.name not in self.skip
        }

    @staticmethod
    def _state(path: Path) -> tuple[int, int]:
        st = os.stat(path)
        return st.st_mtime_ns, st.st_size

    def pull(self) -> None:
        """The Volume's files onto the container's disk, as the start of the local copy."""
        for rel, path in self._files(self.remote).items():
            dest = self.local / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
            self.copied[rel] = self._state(dest)

    def __call__(self) -> None:
        """Copy what changed since the last call onto the Volume; remove what the training removed."""
        now = self._files(self.local)
        for rel, path in now.items():
            state = self._state(path)
            if self.copied.get(rel) == state:
                continue
            with runfolder.atomic_path(self.remote / rel) as tmp:
                shutil.copyfile(path, tmp)
            self.copied[rel] = state
        for rel in set(self.copied) - set(now):
            (self.remote / rel).unlink(missing_ok=True)
            del self.copied[rel]
