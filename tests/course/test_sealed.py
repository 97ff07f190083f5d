"""The file an upload sends is the validated one, by hash, from a read-only copy."""

from __future__ import annotations

import pytest

from kdq.course.sealed import Changed, seal, sha256_of


def test_the_copy_is_read_only_and_named_by_its_hash(tmp_path):
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    sha = sha256_of(model)
    copy, got = seal(model, sha, tmp_path / "uploads")
    assert got == sha and copy.name == f"{sha}.pt" and copy.read_bytes() == b"weights"
    assert copy.stat().st_mode & 0o222 == 0
    model.write_bytes(b"replaced")  # the copy made before stays the one sent
    assert seal(model, sha, tmp_path / "uploads") == (copy, sha)


def test_a_model_changed_after_validation_is_refused(tmp_path):
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    sha = sha256_of(model)
    model.write_bytes(b"random bytes")
    with pytest.raises(Changed, match="changed after validation"):
        seal(model, sha, tmp_path / "uploads")
    assert not (tmp_path / "uploads").exists() or not any((tmp_path / "uploads").iterdir())


def test_a_model_validated_before_hashes_were_kept_is_sealed_as_it_is(tmp_path):
    model = tmp_path / "model.pt"
    model.write_bytes(b"old")
    copy, sha = seal(model, None, tmp_path / "uploads")
    assert sha == sha256_of(model) and copy.read_bytes() == b"old"


def test_a_full_disk_while_copying_names_the_path(tmp_path, monkeypatch):
    import builtins
    import errno

    from kdq.course import sealed
    from kdq.course.errors import describe_failure

    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")

    class Full:
        def __init__(self, *args):
            self.fh = builtins.open(*args)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sealed, "open", Full, raising=False)
    with pytest.raises(OSError) as full:
        seal(model, sha256_of(model), tmp_path / "uploads")
    said = describe_failure(full.value)
    assert (
        said.startswith("disk full (ENOSPC): no space left to write ") and str(tmp_path / "uploads") in said
    )
    assert list((tmp_path / "uploads").iterdir()) == []  # nothing half-written left behind
