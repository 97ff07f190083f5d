"""Check a model file the way the course server will load it, in a fresh process.

    report = verify_file("model.pt")            # dict, or raises VerifyError("why, and the fix")
    report = verify_file("model.pt", holdout=pictures, expect_f1=0.81)   # also the grader's F1
    python -m kdq.verify model.pt --json        # the child process (also usable by hand)

The child imports nothing of kdq's models: it loads the file with ``torch.jit.load`` on CPU, feeds
ImageNet-normalized ``[B,3,224,224]`` float32 input and checks for ``[B,10]`` finite logits, the
same answer for a batch of 64 (the grader's) as for 4 and for one picture alone, the same on
``cuda:0`` when a GPU is present (the previous homework's grader loaded files there), and the file
size under the limit. Given holdout pictures, it scores the *file* on them rendered exactly as the
grader does (``grader.render``): that is ``grader_f1``, which must match training's ``holdout_f1``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from kdq import grader
from kdq.lifeline import die_with


class VerifyError(Exception):
    pass


F1_TOLERANCE = 0.01  # grader_f1 may differ from holdout_f1 by this much ...
FLIPS_TOLERATED = 2  # ... or by two pictures' worth, on a holdout too small for 0.01 to mean anything


def f1_tolerance(pictures: int) -> float:
    """How far grader_f1 may be from holdout_f1: 0.01, or 2/n on fewer than 200 pictures (one flipped
    prediction among 12 moves macro-F1 by more than 0.01; among the real 800 it cannot)."""
    return max(F1_TOLERANCE, FLIPS_TOLERATED / max(pictures, 1))


def _reason(exc: BaseException) -> str:
    """The line that says what went wrong: TorchScript puts the model's own error last, after a traceback."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return ""
    return (lines[-1] if "TorchScript" in lines[0] else lines[0])[:300]


def check(
    path: Path,
    max_mb: float = grader.MAX_MIB,
    num_classes: int = grader.NUM_CLASSES,
    image_size: int = grader.INPUT_SIZE,
    holdout: dict | None = None,
) -> dict:
    """Run the checks in this process (the child side of ``verify_file``). Raises ``VerifyError``."""
    import torch

    path = Path(path)
    model, mb, dtypes = _load(path, max_mb)
    y, x64, y64 = _forward(path, model, num_classes, image_size)
    cuda = _on_cuda(path, x64, y64)
    scored = _grader_f1(model, holdout, num_classes) if holdout else {}
    return {
        "path": str(path),
        "size_mb": round(mb, 4),
        "max_mb": max_mb,
        "output_shape": list(y.shape),
        "dtypes": dtypes,
        "params": sum(p.numel() for p in model.parameters()),
        "torch_version": torch.__version__,
        "logits_std": float(y.std()),
        "batches": [1, 4, grader.BATCH],
        "cuda": cuda,
        **scored,
    }


def _load(path: Path, max_mb: float):
    """``(model, MiB, dtypes)``: the file is there, under the limit, loads as the grader loads it, calls
    only what the grader's oldest torch has, and holds float32 parameters."""
    import torch

    if not path.is_file():
        raise VerifyError(f"{path}: no such file")
    mb = grader.size_mib(path)
    if not grader.fits(mb, max_mb):
        raise VerifyError(f"{path}: {mb:.2f} MiB, over the {max_mb} MiB limit; choose a smaller student")
    torch.manual_seed(0)
    try:
        model = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 — any failure to load is what the server calls a broken file
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise VerifyError(
            f"{path}: not a loadable TorchScript file ({type(exc).__name__}: {first}); "
            "save it with torch.jit.save(torch.jit.script(model), path)"
        ) from None
    old_torch_check(path)
    # no model.eval(): a file saved in training mode is a risk if the grader does not call it either
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()})
    if any(d != grader.DTYPE for d in dtypes):
        raise VerifyError(
            f"{path}: parameters are {', '.join(dtypes)}; the server needs float32 (call .float())"
        )
    return model, mb, dtypes


def _forward(path: Path, model, num_classes: int, image_size: int):
    """``(y, x64, y64)``: finite float32 ``[B, classes]`` logits, the same for one picture, for 4, for the
    grader's batch of 64 and from one call to the next."""
    import torch

    mean = torch.tensor(grader.MEAN).view(1, 3, 1, 1)
    std = torch.tensor(grader.STD).view(1, 3, 1, 1)
    # different-looking pictures (dark to bright), so batch statistics differ from one picture's
    bright = torch.linspace(0.2, 1.0, grader.BATCH).roll(-1).view(-1, 1, 1, 1)
    x64 = (torch.rand(grader.BATCH, 3, image_size, image_size) * bright - mean) / std
    x = x64[[0, 20, 41, 63]]
    try:
        with torch.no_grad():
            y = model(x)
            y1 = model(x[:1])
            again = model(x)
            y64 = model(x64)
    except Exception as exc:  # noqa: BLE001 — whatever the model raises is the reason, shown as such
        raise VerifyError(
            f"{path}: forward on a [4,3,{image_size},{image_size}] float32 batch failed: "
            f"{type(exc).__name__}: {_reason(exc)}"
        ) from None
    if not isinstance(y, torch.Tensor):
        raise VerifyError(f"{path}: forward returned {type(y).__name__}, not a tensor of logits")
    if tuple(y.shape) != (4, num_classes):
        raise VerifyError(
            f"{path}: output shape {list(y.shape)} for a batch of 4; expected [4, {num_classes}]"
        )
    if not torch.isfinite(y).all():
        raise VerifyError(f"{path}: output has NaN or infinite values")
    if y.dtype != torch.float32:
        raise VerifyError(f"{path}: output dtype {y.dtype}; expected float32")
    if tuple(y64.shape) != (grader.BATCH, num_classes):
        raise VerifyError(f"{path}: output shape {list(y64.shape)} for the grader's batch of {grader.BATCH}")
    gap = max(
        float((y[:1] - y1).abs().max()),
        float((y - again).abs().max()),
        float((y64[[0, 20, 41, 63]] - y).abs().max()),
    )
    if gap > 1e-4 * max(1.0, float(y.abs().max())):
        raise VerifyError(
            f"{path}: logits change with the batch or between calls (gap {gap:.3g}); "
            "save the model in eval mode (model.eval() before scripting: BatchNorm/Dropout)"
        )
    return y, x64, y64


def old_torch_check(path: Path) -> None:
    """``VerifyError`` naming each operator of the file's code that the grader's oldest torch lacks: that
    torch compiles the code again when it loads the file and refuses the whole file (kdq.grader_ops)."""
    from kdq import grader_ops

    unknown = grader_ops.unknown_calls(path)
    if unknown:
        raise VerifyError(
            f"{path}: calls what torch {grader_ops.shipped()['torch']} (the oldest torch the grader may "
            f"run) lacks, so it would not load there: {'; '.join(unknown[:3])}"
            f"{f' and {len(unknown) - 3} more' if len(unknown) > 3 else ''}; export it with kdq's exporter "
            "(no F.interpolate inside forward: call the aten op it needs)"
        )


def _on_cuda(path: Path, x, want) -> str | None:
    """Load the file on ``cuda:0`` as the previous homework's grader did; ``None`` without a GPU."""
    import torch

    if not torch.cuda.is_available():
        return None
    try:
        model = torch.jit.load(str(path), map_location="cuda:0")
        with torch.no_grad():
            got = model(x.to("cuda:0")).float().cpu()
    except Exception as exc:  # noqa: BLE001 — any failure on the GPU is the grader's failure too
        raise VerifyError(
            f"{path}: fails on cuda:0, where the grader may load it: {type(exc).__name__}: {_reason(exc)}; "
            "keep every tensor in the model a parameter or buffer (no torch.device('cpu') inside forward)"
        ) from None
    gap = float((got - want).abs().max())
    if gap > 1e-2 * max(1.0, float(want.abs().max())):
        raise VerifyError(f"{path}: logits on cuda:0 differ from the CPU's by {gap:.3g}")
    return torch.cuda.get_device_name(0)


def _grader_f1(model, holdout: dict, num_classes: int) -> dict:
    """Macro-F1 of the file on the holdout pictures, each rendered as the grader does, in its batches."""
    import numpy as np
    import torch

    from kdq.train.losses import macro_f1

    root = Path(holdout["root"])
    pictures, labels, unreadable = [], [], []
    for rel, label in zip(holdout["files"], holdout["labels"], strict=True):
        try:
            pictures.append(grader.render(root / rel))
            labels.append(int(label))
        except (OSError, ValueError):
            unreadable.append(str(rel))
    if not pictures:
        raise VerifyError(f"{root}: none of the {len(holdout['files'])} holdout pictures could be read")
    predicted = []
    with torch.no_grad():
        for start in range(0, len(pictures), grader.BATCH):
            batch = torch.from_numpy(np.stack(pictures[start : start + grader.BATCH]))
            predicted.append(model(batch).argmax(1))
    f1 = macro_f1(torch.cat(predicted), torch.tensor(labels), num_classes)[0]
    return {
        "grader_f1": round(float(f1), 6),
        "grader_pictures": len(pictures),
        "grader_unreadable": unreadable,
    }


def verify_file(
    path: str | Path,
    *,
    max_mb: float = grader.MAX_MIB,
    num_classes: int = grader.NUM_CLASSES,
    image_size: int = grader.INPUT_SIZE,
    timeout_s: float = 300.0,
    holdout: dict | None = None,
    expect_f1: float | None = None,
) -> dict:
    """Verify ``path`` in a fresh Python process, like the grader: the report, or ``VerifyError``.

    ``holdout``: ``{"root", "files", "labels"}``, pictures to score the file on (``grader_f1``);
    ``expect_f1``: training's ``holdout_f1``, which ``grader_f1`` must match within ``f1_tolerance``.
    """
    with tempfile.TemporaryDirectory(prefix="kdq-verify-") as tmp:
        listing = None
        if holdout:
            listing = Path(tmp) / "holdout.json"
            listing.write_text(json.dumps(holdout))
        report = _run_child(path, max_mb, num_classes, image_size, timeout_s, listing)
    got = report.get("grader_f1")
    tolerance = f1_tolerance(report.get("grader_pictures", 0))
    if expect_f1 is not None and got is not None and abs(got - expect_f1) > tolerance:
        raise VerifyError(
            f"{path}: grader_f1 {got:.4f} (the file on {report['grader_pictures']} holdout pictures rendered "
            f"as the grader does) differs from holdout_f1 {expect_f1:.4f} by {abs(got - expect_f1):.4f}, "
            f"more than {tolerance:.4g}: the grader would not see what training saw"
        )
    return report


def _run_child(path, max_mb, num_classes, image_size, timeout_s, listing: Path | None) -> dict:
    cmd = [sys.executable, "-m", "kdq.verify", str(path), "--json", "--max-mb", str(max_mb)]
    cmd += ["--num-classes", str(num_classes), "--image-size", str(image_size)]
    cmd += ["--holdout", str(listing)] if listing else []
    cmd += ["--parent", str(os.getpid())]  # it dies with this process: a killed worker leaves no orphan
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        raise VerifyError(f"{path}: verification took longer than {timeout_s:.0f} s") from None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise VerifyError(f"{path}: the verifier process exited with {proc.returncode}: {' | '.join(tail)}")
    result = json.loads(lines[-1])
    if not result.get("ok"):
        raise VerifyError(result["error"])
    return result["report"]


def holdout_check(data_dir: Path, metrics: dict) -> dict:
    """``verify_file``'s ``holdout`` and ``expect_f1`` for a run whose metrics list its holdout pictures
    (``holdout_files``, ``holdout_labels``, relative to the dataset's class folders); ``{}`` when the run
    has none or the dataset is not on this machine."""
    from kdq.train.layout import DataError, find_root

    if not metrics.get("holdout_files"):
        return {}
    try:
        root = find_root(data_dir)
    except DataError:
        return {}
    listing = {"root": str(root), "files": metrics["holdout_files"], "labels": metrics["holdout_labels"]}
    return {"holdout": listing, "expect_f1": metrics.get("holdout_f1")}


def score_in_run(path: Path, data_dir: Path, metrics: dict) -> dict:
    """The training run's own check, where its pictures are (in the Modal container too): the file alone,
    in a fresh process, scored on the holdout pictures as the grader renders them and held against
    ``holdout_f1``. ``{"grader_f1", "grader_scored": "in the run"}``, ``{"grader_error": why}`` when the
    file fails, or ``{}`` when the run has no holdout pictures."""
    asked = holdout_check(data_dir, metrics)
    if not asked:
        return {}
    try:
        report = verify_file(
            path, num_classes=len(metrics.get("classes") or range(grader.NUM_CLASSES)), **asked
        )
    except VerifyError as exc:
        return {"grader_f1": None, "grader_error": str(exc)}
    return {"grader_f1": report["grader_f1"], "grader_scored": "in the run"}


def recorded(report: dict, metrics: dict) -> dict:
    """What the validating step records: ``grader_f1`` scored here when the pictures are here, else the
    run's own; ``grader_scored`` says where ("here", "in the run"), None when the file was never scored
    on the holdout pictures (then the ``if_better`` policy waits for ``kdq submit``)."""
    if report.get("grader_f1") is not None:
        return {"grader_f1": report["grader_f1"], "grader_scored": "here"}
    if metrics.get("grader_f1") is not None:
        return {
            "grader_f1": metrics["grader_f1"],
            "grader_scored": metrics.get("grader_scored", "in the run"),
        }
    return {"grader_f1": None, "grader_scored": None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdq.verify", description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--json", action="store_true", help="print one JSON line {ok, report|error}")
    parser.add_argument("--max-mb", type=float, default=grader.MAX_MIB)
    parser.add_argument("--num-classes", type=int, default=grader.NUM_CLASSES)
    parser.add_argument("--image-size", type=int, default=grader.INPUT_SIZE)
    parser.add_argument(
        "--holdout", type=Path, help='JSON {"root", "files", "labels"}: score the file on them'
    )
    parser.add_argument("--parent", type=int, help="die when this process (the one that started it) dies")
    args = parser.parse_args(argv)
    if args.parent:
        die_with(args.parent)
    holdout = json.loads(args.holdout.read_text()) if args.holdout else None
    try:
        report = check(args.path, args.max_mb, args.num_classes, args.image_size, holdout)
        out = {"ok": True, "report": report}
    except VerifyError as exc:
        out = {"ok": False, "error": str(exc)}
    if args.json:
        print(json.dumps(out))
    else:
        print(json.dumps(out["report"], indent=2) if out["ok"] else f"FAILED: {out['error']}")
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
