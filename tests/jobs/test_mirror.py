"""The training's run folder on the container's disk, mirrored onto the Volume between commits."""

from jobs.mirror import Mirror
from kdq import runfolder


def test_the_run_folder_is_pulled_from_the_volume_and_copied_back_only_where_it_changed(tmp_path):
    local, remote = tmp_path / "local" / "r-1", tmp_path / "vol" / "runs" / "r-1"
    remote.mkdir(parents=True)
    (remote / runfolder.CHECKPOINT).write_bytes(b"epoch 3")
    (remote / runfolder.SPEC).write_text("{}")
    (remote / "owner.json").write_text("{}")
    copy = Mirror(local, remote, skip=("owner.json",))
    copy.pull()
    assert (local / runfolder.CHECKPOINT).read_bytes() == b"epoch 3"  # the run resumes from it
    assert not (local / "owner.json").exists()  # the container's own: not the training's
    (remote / runfolder.CHECKPOINT).unlink()
    copy()
    assert not (remote / runfolder.CHECKPOINT).exists()  # unchanged: 60-100 MB not written again
    (local / runfolder.CHECKPOINT).write_bytes(b"epoch 9, longer")
    (local / runfolder.ERROR).write_text('{"error": "x"}')
    (local / ".progress.json.tmp").write_text("half")  # a file still being written
    copy()
    assert (remote / runfolder.CHECKPOINT).read_bytes() == b"epoch 9, longer"
    assert (remote / runfolder.ERROR).exists() and not (remote / ".progress.json.tmp").exists()
    (local / runfolder.ERROR).unlink()  # a retried training removes the last attempt's error
    copy()
    assert not (remote / runfolder.ERROR).exists() and (remote / "owner.json").exists()
