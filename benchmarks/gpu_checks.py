"""The five things to measure on a GPU before trusting a night on Modal; one JSON line per check.

    python benchmarks/gpu_checks.py            # on one H100: under 10 minutes
    python benchmarks/gpu_checks.py --smoke    # on a CPU, tiny shapes: proves the script runs

1 env       GPU, driver, torch, its CUDA build, bf16, and which attention kernels (flash, cuDNN,
            memory-efficient) run at MedSigLIP's shape (16 heads x 72, 1,025 tokens, bf16). When CUDA
            is unusable it stops there: nothing else matters until that is fixed (docs/modal.md).
2 students  training images/s of four students (Hinton loss, AdamW, bf16, channels_last), and the host
            synchronisations per step of the Hinton and DKD losses and of the EMA update
3 teacher   images/s of a so400m-shaped SigLIP vision tower (random weights) at batch 64 and 256
4 packing   total training images/s of 1 and of 4 training processes sharing the GPU: sets backend.pack
5 e2e       one short `python -m kdq.train --device cuda` on generated pictures: wall time, the sum of
            its epochs, and the fixed overhead per run (the rest), which packing amortizes
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STUDENTS = [
    ("torchvision", "shufflenet_v2_x1_0"),
    ("timm", "mobilenetv3_large_100"),
    ("timm", "efficientnet_b0"),
    ("torchvision", "resnet18"),
]


def emit(check: str, **fields) -> None:
    print(json.dumps({"check": check, **fields}, default=str), flush=True)


def sizes(smoke: bool) -> dict:
    if smoke:
        return dict(batch=2, image=32, steps=1, tokens=17, heads=2, teacher=(28, 1, 64), classes=10, secs=1)
    return dict(
        batch=128, image=224, steps=30, tokens=1025, heads=16, teacher=(448, 27, 1152), classes=10, secs=30
    )


# ---------------------------------------------------------------- 1 env


def check_env(device: torch.device, s: dict) -> bool:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from kdq.train import gpu

    info = gpu.describe()
    kernels = {}
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    q = torch.randn(2, s["heads"], s["tokens"], 72, device=device, dtype=dtype)
    for name, backend in [
        ("flash", SDPBackend.FLASH_ATTENTION),
        ("cudnn", SDPBackend.CUDNN_ATTENTION),
        ("efficient", SDPBackend.EFFICIENT_ATTENTION),
        ("math", SDPBackend.MATH),
    ]:
        try:
            with sdpa_kernel([backend]), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.nn.functional.scaled_dot_product_attention(q, q, q)
            kernels[name] = True
        except RuntimeError:
            kernels[name] = False
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    emit("env", **info, bf16=bf16, attention=kernels, problem=gpu.unusable(info))
    return bool(info["cuda_usable"])


# ---------------------------------------------------------------- 2 students


def _student(library: str, name: str, device: torch.device, classes: int) -> torch.nn.Module:
    from kdq.spec import StudentSpec
    from kdq.train import students

    model = students.build(StudentSpec(library=library, name=name, pretrained=False), classes).to(device)
    return model.to(memory_format=torch.channels_last) if device.type == "cuda" else model


def train_rate(model, device: torch.device, s: dict, loss: str = "hinton", ema: bool = False) -> dict:
    """Images/s of ``s["steps"]`` training steps, and the host synchronisations they made (CUDA only)."""
    from kdq.train import losses

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=device.type == "cuda")
    avg = torch.optim.swa_utils.AveragedModel(model) if ema else None
    x = torch.randn(s["batch"], 3, s["image"], s["image"], device=device)
    y = torch.randint(s["classes"], (s["batch"],), device=device)
    teacher = torch.randn(s["batch"], s["classes"], device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(x).float()
        if loss == "dkd":
            parts = losses.dkd(out, teacher, y, T=4.0, alpha=1.0, beta=8.0)
        else:
            parts = losses.hinton(out, teacher, y, T=4.0, alpha=0.5)
        opt.zero_grad(set_to_none=True)
        parts["loss"].backward()
        opt.step()
        if avg is not None:
            avg.update_parameters(model)

    step()  # warm-up: cuDNN autotune, allocator
    syncs = None
    if device.type == "cuda":
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            step()
            torch.cuda.set_sync_debug_mode(0)
        syncs = sum("synchroniz" in str(w.message) for w in seen)
    started = time.perf_counter()
    for _ in range(s["steps"]):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {
        "images_per_s": round(s["batch"] * s["steps"] / (time.perf_counter() - started), 1),
        "syncs": syncs,
    }


def check_students(device: torch.device, s: dict) -> None:
    for library, name in STUDENTS:
        emit(
            "students",
            student=name,
            batch=s["batch"],
            **train_rate(_student(library, name, device, 10), device, s),
        )
    for loss, ema in [("hinton", False), ("dkd", False), ("hinton", True)]:
        rate = train_rate(_student("timm", "mobilenetv3_large_100", device, 10), device, s, loss, ema)
        emit("syncs", loss=loss, ema=ema, **rate)


# ---------------------------------------------------------------- 3 teacher


def check_teacher(device: torch.device, s: dict) -> None:
    from transformers import SiglipVisionConfig, SiglipVisionModel

    size, layers, width = s["teacher"]
    config = SiglipVisionConfig(
        hidden_size=width, intermediate_size=width * 4 - 304 if width > 64 else width * 2,
        num_hidden_layers=layers, num_attention_heads=16 if width > 64 else 2, image_size=size,
        patch_size=14, attn_implementation="sdpa",
    )  # fmt: skip
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = SiglipVisionModel(config).to(device, dtype).eval()
    for batch in (64, 256) if device.type == "cuda" else (2, 4):
        x = torch.randn(batch, 3, size, size, device=device, dtype=dtype)
        with torch.inference_mode():
            model(pixel_values=x)
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            started, n = time.perf_counter(), 0
            while time.perf_counter() - started < s["secs"] / 3:
                model(pixel_values=x)
                n += batch
            if device.type == "cuda":
                torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
        emit(
            "teacher", batch=batch, images_per_s=round(n / (time.perf_counter() - started), 1), peak_gib=peak
        )


# ---------------------------------------------------------------- 4 packing


def check_packing(device: torch.device, s: dict, smoke: bool) -> None:
    for procs in (1, 4):
        cmd = [sys.executable, __file__, "--worker", "--seconds", str(s["secs"])] + (
            ["--smoke"] if smoke else []
        )
        children = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(procs)]
        rates = [json.loads(c.communicate()[0].strip().splitlines()[-1])["images_per_s"] for c in children]
        emit("packing", processes=procs, total_images_per_s=round(sum(rates), 1), each=rates)


def worker(device: torch.device, s: dict, seconds: float) -> None:
    """One training process of the packing check: mobilenetv3 steps for ``seconds``; prints its rate."""
    model = _student("timm", "mobilenetv3_large_100", device, 10)
    train_rate(model, device, s)  # warm-up
    started, images = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        train_rate(model, device, s)
        images += s["batch"] * s["steps"]
    print(json.dumps({"images_per_s": images / (time.perf_counter() - started)}))


# ---------------------------------------------------------------- 5 e2e


def check_e2e(device: torch.device, smoke: bool) -> None:
    from kdq.synth import synth

    with tempfile.TemporaryDirectory() as tmp:
        data, run = Path(tmp) / "data", Path(tmp) / "run"
        synth(data, per_class=12 if smoke else 100, seed=0, size_range=(48, 64) if smoke else (300, 1000))
        library, name = ("kdq", "tiny_cnn") if smoke else ("timm", "mobilenetv3_large_100")
        spec = {
            "name": "gpu-check",
            "student": {"library": library, "name": name, "pretrained": False},  # offline
            # the smoke run has no teacher (CPU time); on the GPU a stand-in of MedSigLIP's shape
            "teacher": {"kind": "none"} if smoke else {"model": "random-so400m-448", "views": 1},
            "distill": {"loss": "ce" if smoke else "hinton"},
            "train": {"epochs": 2 if smoke else 5, "batch_size": 16 if smoke else 128,
                      "image_size": 32 if smoke else 224, "patience": None},
            "data": {"dataset": "gpu-check", "decode_size": 40 if smoke else 256},
            "submit": {"policy": "never"},
        }  # fmt: skip
        run.mkdir()
        (run / "spec.json").write_text(json.dumps(spec))
        cmd = [sys.executable, "-m", "kdq.train", str(run), "--data", str(data), "--cache", f"{tmp}/cache"]
        started = time.perf_counter()
        done = subprocess.run([*cmd, "--device", device.type], capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - started
        metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").exists() else {}
        lines = (run / "history.csv").read_text().splitlines() if (run / "history.csv").exists() else []
        epochs = [float(r.split(",")[-1]) for r in lines[1:]]
        emit(
            "e2e", rc=done.returncode, device=metrics.get("device"), gpu=metrics.get("gpu"),
            wall_s=round(wall, 1), epochs_s=round(sum(epochs), 1), fixed_s=round(wall - sum(epochs), 1),
            log_tail=(done.stdout + done.stderr).strip().splitlines()[-3:],
        )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU: the script runs")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=30.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the stand-in teacher and students need no download
    s = sizes(args.smoke)
    device = torch.device("cpu" if args.smoke else "cuda")
    if args.smoke:
        torch.set_num_threads(1)  # four processes share the CPU in the packing check
    if args.worker:
        worker(device, s, args.seconds)
        return 0
    if not check_env(device, s) and not args.smoke:
        return 2  # CUDA unusable: the env line says why
    check_students(device, s)
    check_teacher(device, s)
    check_packing(device, s, args.smoke)
    check_e2e(device, args.smoke)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
