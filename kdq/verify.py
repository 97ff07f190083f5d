"""Check a model file the way the course server will load it, in a fresh process.

    report = verify_file("model.pt")            # dict, or raises VerifyError("why, and the fix")
    python -m kdq.verify model.pt --json        # the child process (also usable by hand)

The child imports nothing of kdq's models: it loads the file with ``torch.jit.load`` on CPU, feeds
ImageNet-normalized ``[B,3,224,224]`` float32 input and checks for ``[B,10]`` finite logits, the
same answer for a batch as for its images one by one, and the file size under the limit.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from kdq import grader


class VerifyError(Exception):
    pass


def _reason(exc: BaseException) -> str:
    """The line that says what went wrong: TorchScript puts the model's own error last, after its traceback."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return ""
    return (lines[-1] if "TorchScript" in lines[0] else lines[0])[:300]


def check(
    path: Path,
    max_mb: float = grader.MAX_MIB,
    num_classes: int = grader.NUM_CLASSES,
    image_size: int = grader.INPUT_SIZE,
) -> dict:
    """Run the checks in this process (the child side of ``verify_file``). Raises ``VerifyError``."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise VerifyError(f"{path}: no such file")
    mb = path.stat().st_size / 2**20
    if mb >= max_mb:
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
    # no model.eval(): a file saved in training mode is a risk if the grader does not call it either
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()})
    if any(d != "float32" for d in dtypes):
        raise VerifyError(
            f"{path}: parameters are {', '.join(dtypes)}; the server needs float32 (call .float())"
        )
    mean = torch.tensor(grader.MEAN).view(1, 3, 1, 1)
    std = torch.tensor(grader.STD).view(1, 3, 1, 1)
    # four different-looking pictures (dark to bright), so batch statistics differ from one picture's
    x = (
        torch.rand(4, 3, image_size, image_size) * torch.tensor([0.2, 0.5, 0.8, 1.0]).view(4, 1, 1, 1) - mean
    ) / std
    try:
        with torch.no_grad():
            y = model(x)
            y1 = model(x[:1])
            again = model(x)
    except Exception as exc:  # noqa: BLE001
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
    gap = max(float((y[:1] - y1).abs().max()), float((y - again).abs().max()))
    if gap > 1e-4 * max(1.0, float(y.abs().max())):
        raise VerifyError(
            f"{path}: logits change with the batch or between calls (gap {gap:.3g}); "
            "save the model in eval mode (model.eval() before scripting: BatchNorm/Dropout)"
        )
    return {
        "path": str(path),
        "size_mb": round(mb, 4),
        "max_mb": max_mb,
        "output_shape": list(y.shape),
        "dtypes": dtypes,
        "params": sum(p.numel() for p in model.parameters()),
        "torch_version": torch.__version__,
        "logits_std": float(y.std()),
    }


def verify_file(
    path: str | Path,
    *,
    max_mb: float = grader.MAX_MIB,
    num_classes: int = grader.NUM_CLASSES,
    image_size: int = grader.INPUT_SIZE,
    timeout_s: float = 300.0,
) -> dict:
    """Verify ``path`` in a fresh Python process, like the grader. Returns the report or raises ``VerifyError``."""
    cmd = [
        sys.executable,
        "-m",
        "kdq.verify",
        str(path),
        "--json",
        "--max-mb",
        str(max_mb),
        "--num-classes",
        str(num_classes),
        "--image-size",
        str(image_size),
    ]
    env = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
    }
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdq.verify", description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--json", action="store_true", help="print one JSON line {ok, report|error}")
    parser.add_argument("--max-mb", type=float, default=grader.MAX_MIB)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args(argv)
    try:
        out = {"ok": True, "report": check(args.path, args.max_mb, args.num_classes, args.image_size)}
    except VerifyError as exc:
        out = {"ok": False, "error": str(exc)}
    if args.json:
        print(json.dumps(out))
    else:
        print(json.dumps(out["report"], indent=2) if out["ok"] else f"FAILED: {out['error']}")
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
