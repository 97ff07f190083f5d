"""Seconds per epoch: kdq's training loop vs a loop written like the course starter, on CPU.

    .venv/bin/python benchmarks/bench_epoch.py [--per-class 8 --epochs 3 --threads 2]

Both train the same student (torchvision shufflenet_v2_x1_0, 224 px, Hinton KD) on the same
generated data (realistic 300-700 px pictures) against the same stand-in teacher: a randomly
initialised SigLIP vision tower of ViT-B/16 size at 224 (hidden 768, 12 layers, 12 heads).

    starter: PIL decode + resize every epoch (torchvision ImageFolder-style Dataset, CPU DataLoader),
             teacher forward on every batch, random linear head on the teacher (as the starter does)
    kdq:     kdq.train.loop.run: pictures decoded once, teacher embeddings of V views cached once,
             out-of-fold probe logits, on-device augmentation; only the student runs per batch

Prints both epoch times side by side (wall: median and fastest; CPU seconds, which other processes
on a shared machine disturb less), their ratio, the one-off cost of kdq's caches and after how many
epochs that cost is paid back. A benchmark, not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from kdq.grader import MEAN as IMAGENET_MEAN
from kdq.grader import STD as IMAGENET_STD
from kdq.spec import ExperimentSpec
from kdq.synth import synth
from kdq.train import data, students, teacher
from kdq.train.loop import run

STUDENT = {"library": "torchvision", "name": "shufflenet_v2_x1_0"}
TEACHER = "random-b16-224"


# ---------------------------------------------------------------- the starter's way


class Folder(torch.utils.data.Dataset):
    """Like torchvision's ImageFolder: open, decode and resize the file every time it is asked for."""

    def __init__(self, root: Path, files: list[Path], labels: list[int], transform):
        self.root, self.files, self.labels, self.transform = root, files, labels, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        with Image.open(self.root / self.files[i]) as im:
            return self.transform(im.convert("RGB")), self.labels[i]


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (DataLoader workers): unlike wall time,
    it does not grow when other processes compete for the cores."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


def starter_epochs(data_dir: Path, epochs: int, workers: int, batch: int) -> tuple[list[float], list[float]]:
    import torchvision.transforms as T

    ds = data.discover(data_dir)
    split = int(0.85 * len(ds.files))
    order = torch.randperm(len(ds.files), generator=torch.Generator().manual_seed(0)).tolist()
    tr, va = order[:split], order[split:]
    norm = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_tf = T.Compose([T.Resize((224, 224)), T.RandomHorizontalFlip(), T.ToTensor(), norm])
    val_tf = T.Compose([T.Resize((224, 224)), T.ToTensor(), norm])
    pick = lambda idx, tf: Folder(ds.root, [ds.files[i] for i in idx], [ds.labels[i] for i in idx], tf)  # noqa: E731
    train_dl = torch.utils.data.DataLoader(
        pick(tr, train_tf), batch_size=batch, shuffle=True, num_workers=workers
    )
    val_dl = torch.utils.data.DataLoader(pick(va, val_tf), batch_size=batch, num_workers=workers)

    vision = teacher.load(TEACHER, torch.device("cpu")).model.vision_model.eval()
    head = nn.Linear(768, 10)  # the starter's randomly initialised "classifier" on the teacher
    student = students.build(students.StudentSpec(**STUDENT), 10)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
    T_, alpha = 4.0, 0.3
    times, cpu = [], []
    for _ in range(epochs):
        t0, c0 = time.perf_counter(), cpu_seconds()
        student.train()
        for x, y in train_dl:
            with torch.no_grad():
                t_logits = head(vision(pixel_values=x).pooler_output)
            s_logits = student(x)
            kd = F.kl_div(F.log_softmax(s_logits / T_, 1), F.softmax(t_logits / T_, 1), reduction="batchmean")
            loss = alpha * F.cross_entropy(s_logits, y) + (1 - alpha) * T_ * T_ * kd
            opt.zero_grad()
            loss.backward()
            opt.step()
        student.eval()
        with torch.no_grad():
            for x, y in val_dl:
                student(x).argmax(1)
        times.append(time.perf_counter() - t0)
        cpu.append(cpu_seconds() - c0)
        print(f"  starter epoch {len(times)}: {times[-1]:.1f} s ({cpu[-1]:.1f} CPU s)", flush=True)
    return times, cpu


# ---------------------------------------------------------------- kdq's way


def kdq_epochs(
    data_dir: Path, epochs: int, views: int, batch: int, work: Path
) -> tuple[list[float], list[float], dict]:
    cache = work / "cache"
    t0 = time.perf_counter()
    ds = data.load(data_dir, cache, decode_size=256)
    decode_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    t = teacher.load(TEACHER, torch.device("cpu"))
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    teacher.embeddings(t, ds.images, ds.fingerprint, views, cache)
    embed_s = time.perf_counter() - t0
    spec = ExperimentSpec.model_validate(
        {
            "name": "bench",
            "student": STUDENT,
            "teacher": {"model": TEACHER, "views": views},
            "distill": {"loss": "hinton", "temperature": 4.0, "alpha": 0.3},
            "train": {
                "epochs": epochs,
                "batch_size": batch,
                "image_size": 224,
                "device": "cpu",
                "patience": None,
            },
            "data": {"decode_size": 256},
        }
    )
    marks = []  # CPU time at the end of every epoch (the first epoch's start is not observable)
    run(spec, work / "run", data_dir, cache, on_epoch=lambda e: marks.append(cpu_seconds()))
    with open(work / "run" / "history.csv") as f:
        times = [float(r["seconds"]) for r in csv.DictReader(f)]
    cpu = [b - a for a, b in zip(marks, marks[1:])]  # epochs 2..n, checkpoint writing included
    return times, cpu, {"decode_s": decode_s, "teacher_load_s": load_s, "teacher_embed_s": embed_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=8, help="mean images per class (real imbalance kept)")
    ap.add_argument(
        "--epochs", type=int, default=3, help="starter epochs (kdq runs twice as many: they are cheap)"
    )
    ap.add_argument("--views", type=int, default=2, help="teacher views per image in kdq's cache")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the starter loop")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="kdq-bench-") as tmp:
        work = Path(tmp)
        man = synth(work / "data", per_class=args.per_class, seed=0, size_range=(300, 700))
        n = len(man.images)
        print(
            f"{n} images (300-700 px), student {STUDENT['name']} at 224, teacher {TEACHER}, "
            f"{args.threads} threads",
            flush=True,
        )
        print("kdq loop:", flush=True)
        kdq, kdq_cpu, once = kdq_epochs(work / "data", 2 * args.epochs, args.views, args.batch, work)
        print("starter loop:", flush=True)
        start, start_cpu = starter_epochs(work / "data", args.epochs, args.workers, args.batch)
    # The first epoch of either loop carries warm-up (allocations, worker start): use the rest. On a
    # shared machine other processes stretch some epochs: the fastest epoch is the least disturbed.
    s_med, k_med = statistics.median(start[1:]), statistics.median(kdq[1:])
    s_min, k_min = min(start[1:]), min(kdq[1:])
    s_cpu, k_cpu = statistics.median(start_cpu[1:]), statistics.median(kdq_cpu)
    one_off = sum(once.values())
    payoff = one_off / (s_med - k_med) if s_med > k_med else float("inf")
    print()
    print(f"{'seconds per epoch':34}{'starter':>10}{'kdq':>10}{'ratio':>8}")
    print(f"{'  median (epochs after the first)':34}{s_med:10.2f}{k_med:10.2f}{s_med / k_med:7.1f}x")
    print(f"{'  fastest':34}{s_min:10.2f}{k_min:10.2f}{s_min / k_min:7.1f}x")
    print(f"{'CPU seconds per epoch (median)':34}{s_cpu:10.2f}{k_cpu:10.2f}{s_cpu / k_cpu:7.1f}x")
    print(f"{'images per second (median)':34}{n / s_med:10.1f}{n / k_med:10.1f}")
    print(
        f"one-off kdq cost: decode {once['decode_s']:.1f} s + teacher load {once['teacher_load_s']:.1f} s + "
        f"teacher embeddings ({args.views} views + plain) {once['teacher_embed_s']:.1f} s = {one_off:.1f} s; "
        f"paid back after {payoff:.1f} epochs (median times), and shared by every later experiment"
    )
    print(
        json.dumps(
            {
                "images": n,
                "threads": args.threads,
                "starter_epochs_s": [round(x, 2) for x in start],
                "kdq_epochs_s": kdq,
                "starter_cpu_s": [round(x, 2) for x in start_cpu],
                "kdq_cpu_s": [round(x, 2) for x in kdq_cpu],
                "speedup_median": s_med / k_med,
                "speedup_fastest": s_min / k_min,
                "speedup_cpu": s_cpu / k_cpu,
                **once,
                "payoff_epochs": payoff,
            }
        )
    )


if __name__ == "__main__":
    main()
