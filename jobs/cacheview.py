"""The training's cache folder on the container's own disk: the Volume's caches seen through links,
and what the training adds there copied to the Volume between two commits.

A packed neighbour's commit (and the reload it ends with) is refused while any file on the mount is
open, and a teacher cache is written for seconds (0.2-2 GB), a decode fallback for longer. So the
training gets ``--cache`` on this container's disk: every file of the Volume's ``decoded/`` and
``teacher/`` as a symbolic link (read where it is; a link costs nothing), and whatever the training
writes lands beside them as a plain file. The container copies each new or changed plain file to the
Volume, under the container's lock, so no neighbour commits while it is open (``jobs/container.py``),
and the commit after it carries it. Nothing here imports modal.
"""

from __future__ import annotations

from pathlib import Path

from jobs.mirror import Mirror

VIEWED = ("decoded", "teacher")  # what the training reads and writes under --cache (data.py, teacher.py)


class CacheView:
    """``local``: the training's ``--cache``, over ``remote`` (the Volume's cache folder)."""

    def __init__(self, remote: Path, local: Path):
        self.remote, self.local = Path(remote), Path(local)
        for folder in VIEWED:
            (self.local / folder).mkdir(parents=True, exist_ok=True)
            for path in sorted((self.remote / folder).glob("*")) if (self.remote / folder).is_dir() else []:
                if path.is_file() and not path.name.startswith("."):  # not another writer's temporary file
                    (self.local / folder / path.name).symlink_to(path)
        self.copy = Mirror(self.local, self.remote)  # the links stay links: only what the training wrote

    def __call__(self) -> None:
        """Copy what the training wrote since the last call to the Volume (each file whole, renamed in)."""
        self.copy()
