import pytest
import torch
from torch import nn

from kdq.verify import VerifyError, check, f1_tolerance, verify_file


class Net(nn.Module):
    def __init__(self, out: int = 10, width: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, stride=4)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))


class Big(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(6_500_000))  # 24.8 MiB in fp32
        self.fc = nn.Linear(3, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean((2, 3))) + self.w[:1]


class Nan(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3)).repeat(1, 4)[:, :10] * float("nan")


def save(model: nn.Module, path, eval: bool = True) -> str:
    torch.jit.save(torch.jit.script(model.eval() if eval else model.train()), str(path))
    return str(path)


def test_a_good_model_passes_in_a_fresh_process(tmp_path):
    report = verify_file(save(Net(), tmp_path / "m.pt"))
    assert report["output_shape"] == [4, 10] and report["dtypes"] == ["float32"]
    assert 0 < report["size_mb"] < 1


def test_a_broken_model_fails_in_a_fresh_process_with_the_reason(tmp_path):
    with pytest.raises(VerifyError, match=r"output shape \[4, 5\].*expected \[4, 10\]"):
        verify_file(save(Net(out=5), tmp_path / "m.pt"))


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: save(Net(out=7), p), r"output shape \[4, 7\]"),
        (lambda p: save(Big(), p), r"over the 23.0 MiB limit"),
        (lambda p: (torch.save(Net().state_dict(), p), str(p))[1], r"not a loadable TorchScript"),
        (lambda p: (p.write_bytes(b"not a model at all"), str(p))[1], r"not a loadable TorchScript"),
        (lambda p: save(Net().half(), p), r"float16.*float32"),
        (lambda p: save(Nan(), p), r"NaN"),
        (lambda p: save(Net(), p, eval=False), r"eval mode"),
        (lambda p: save(nn.Sequential(Net(), nn.Dropout(0.5)), p, eval=False), r"eval mode"),
    ],
)
def test_each_failure_names_its_reason(tmp_path, make, reason):
    path = make(tmp_path / "m.pt")
    with pytest.raises(VerifyError, match=reason):
        check(path)


def test_missing_file(tmp_path):
    with pytest.raises(VerifyError, match="no such file"):
        check(tmp_path / "absent.pt")


class Colour(nn.Module):
    """Class 0 for a reddish picture, 1 for a bluish one (two classes): its answer depends on the picture."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean((2, 3))
        return torch.cat([m[:, :1] - m[:, 2:3], m[:, 2:3] - m[:, :1]], 1)


class BreaksAt64(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 32:
            raise RuntimeError("batch too large for this model")
        return x.mean((2, 3)).repeat(1, 4)[:, :10]


def pictures(folder, n=6):
    """Half red, half blue, of odd sizes and formats, as files the grader would open."""
    from PIL import Image

    files, labels = [], []
    for i in range(n):
        label = i % 2
        rel = f"{label}/p{i}.{'png' if i % 3 else 'jpg'}"
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        colour = (200, 40, 30) if label == 0 else (30, 40, 200)
        Image.new("RGB", (300 + 17 * i, 200 + 11 * i), colour).save(folder / rel)
        files.append(rel)
        labels.append(label)
    return {"root": str(folder), "files": files, "labels": labels}


def test_grader_f1_scores_the_file_on_the_holdout_pictures_rendered_like_the_grader(tmp_path):
    holdout = pictures(tmp_path / "data")
    report = verify_file(save(Colour(), tmp_path / "m.pt"), holdout=holdout, expect_f1=1.0, num_classes=2)
    assert report["grader_f1"] == 1.0 and report["grader_pictures"] == 6 and report["batches"] == [1, 4, 64]


def test_a_grader_f1_far_from_holdout_f1_fails_with_both_numbers(tmp_path):
    holdout = pictures(tmp_path / "data")
    holdout["labels"] = [1 - y for y in holdout["labels"]]  # the file now gets every one wrong
    with pytest.raises(VerifyError, match=r"grader_f1 0\.0000 .* differs from holdout_f1 0\.9000 by 0\.9000"):
        verify_file(save(Colour(), tmp_path / "m.pt"), holdout=holdout, expect_f1=0.9, num_classes=2)


def test_a_model_that_breaks_at_the_graders_batch_of_64_fails(tmp_path):
    with pytest.raises(VerifyError, match="batch too large for this model"):
        check(save(BreaksAt64(), tmp_path / "m.pt"))


def test_on_a_tiny_holdout_one_flipped_picture_is_not_a_mismatch(tmp_path):
    holdout = pictures(tmp_path / "data")  # 6 pictures: one flip moves macro-F1 by far more than 0.01
    report = verify_file(save(Colour(), tmp_path / "m.pt"), holdout=holdout, expect_f1=0.83, num_classes=2)
    assert report["grader_f1"] == 1.0
    assert f1_tolerance(6) == pytest.approx(2 / 6) and f1_tolerance(800) == 0.01  # the real holdout: 0.01


class Resizes(nn.Module):
    """Resizes with F.interpolate inside forward: the scripted file carries every mode of this torch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != 48:
            x = torch.nn.functional.interpolate(x, size=[48, 48], mode="bilinear", antialias=True)
        return x.mean((2, 3)).repeat(1, 4)[:, :10]


def test_a_file_calling_an_operator_the_graders_old_torch_lacks_fails_naming_it(tmp_path):
    import inspect

    if "lanczos" not in inspect.getsource(torch.nn.functional.interpolate):
        pytest.skip(f"torch {torch.__version__}'s F.interpolate has no lanczos mode (new in 2.12)")
    with pytest.raises(VerifyError, match=r"torch 2\.4\.1 .* lacks.*aten::_upsample_lanczos2d_aa"):
        check(save(Resizes(), tmp_path / "m.pt"))


def test_a_file_of_exactly_the_limit_is_refused_by_verify_and_by_the_upload_alike(tmp_path):
    from kdq import grader
    from kdq.course.client import CourseClient
    from kdq.course.errors import Rejected

    path = save(Net(), tmp_path / "m.pt")
    limit = grader.size_mib(path)  # the file is exactly at the limit
    assert not grader.fits(limit, limit) and grader.fits(limit, limit + 1e-6)
    with pytest.raises(VerifyError, match="over the"):
        check(path, max_mb=limit)
    client = CourseClient("http://127.0.0.1:9", token="t", max_upload_mb=limit)
    with pytest.raises(Rejected, match="over the"):
        client.check_upload(path)
    assert check(path, max_mb=limit + 1e-3)["size_mb"] == pytest.approx(limit, abs=1e-4)


def test_the_validating_step_asks_for_the_grader_f1_when_the_pictures_are_here(tmp_path):
    from kdq.verify import holdout_check

    holdout = pictures(tmp_path / "data")
    metrics = {"holdout_files": holdout["files"], "holdout_labels": holdout["labels"], "holdout_f1": 0.75}
    asked = holdout_check(tmp_path / "data", metrics)
    assert asked == {"holdout": holdout, "expect_f1": 0.75}
    assert holdout_check(tmp_path / "elsewhere", metrics) == {}  # the pictures are not on this machine


def test_the_run_scores_its_file_where_its_pictures_are_and_says_so(tmp_path):
    from kdq.verify import recorded, score_in_run

    holdout = pictures(tmp_path / "data")
    path = save(Colour(), tmp_path / "m.pt")
    metrics = {"holdout_files": holdout["files"], "holdout_labels": holdout["labels"], "holdout_f1": 1.0}
    metrics["classes"] = ["0", "1"]
    scored = score_in_run(path, tmp_path / "data", {**metrics})
    assert scored == {"grader_f1": 1.0, "grader_scored": "in the run"}
    wrong = {**metrics, "holdout_labels": [1 - y for y in holdout["labels"]]}  # the file disagrees
    failed = score_in_run(path, tmp_path / "data", wrong)
    assert failed["grader_f1"] is None and "differs from holdout_f1" in failed["grader_error"]
    assert score_in_run(path, tmp_path / "data", {}) == {}  # no holdout pictures: nothing to score
    # the validating step: its own score when the pictures are here, else the run's, else none
    assert recorded({"grader_f1": 0.9}, {**scored}) == {"grader_f1": 0.9, "grader_scored": "here"}
    assert recorded({}, {**metrics, **scored}) == scored
    assert recorded({}, metrics) == {"grader_f1": None, "grader_scored": None}


class Slow(nn.Module):
    """A forward that takes minutes: the verifier child is still busy when its parent dies."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.mean((2, 3)).repeat(1, 4)[:, :10]
        for _ in range(200_000_000):
            y = y * 1.0
        return y


def _children_named(pid: int, word: str) -> list[int]:
    from pathlib import Path

    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and word in cmd:
            found.append(int(stat.parent.name))
    return found


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for init to reap it)."""
    from pathlib import Path

    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self"), reason="reads /proc")
def test_the_verifier_child_dies_with_the_worker_that_started_it(tmp_path):
    """A worker killed (SIGKILL) while it validates must not leave its ``kdq.verify`` child running,
    reparented to init: a restart validates again, and a kill loop piled the orphans up."""
    import os
    import signal
    import subprocess
    import sys
    import time

    path = save(Slow(), tmp_path / "slow.pt")
    parent = subprocess.Popen(
        [sys.executable, "-c", f"from kdq.verify import verify_file; verify_file({path!r})"]
    )
    orphans: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while not (orphans := _children_named(parent.pid, "kdq.verify")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert orphans, "the verifier child never started"
        time.sleep(8)  # well into its checks (torch imported, the slow forward running)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 20
        while any(_running(p) for p in orphans) and time.monotonic() < deadline:
            time.sleep(0.2)
        alive = [p for p in orphans if _running(p)]
        assert not alive, f"the verifier child {alive} outlived its parent"
    finally:
        for pid in orphans:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        parent.kill()
