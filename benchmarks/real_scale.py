"""Training's data side at the course's real size: 10,000 pictures, bounded memory, decode time.

    .venv/bin/python -W ignore benchmarks/real_scale.py [--work .kdq/bench/real_scale] [--threads 2]

Generates once (cached under --work, ignored by git) 10,000 pictures with the course's class counts,
sizes of 300-1000 x 200-940 px (about 650 x 570 on average) and formats: mostly JPEG, a few of every
other kind, plus 16-bit grey PNG, float TIFF, CMYK and grey JPEG, RGBA PNG and EXIF-rotated .jfif.
Then, in this one process, the way a training run meets them:

    decode    every picture at 256, cold (kdq.train.data.load), the cache file written
    groups    duplicate groups over all of them, the train / val / holdout split
    teacher   the teacher-cache path at full scale with a tiny random SigLIP that takes 448 input
              (the decode at the teacher's size is the real one, streamed), plain view + --views
    vit-b16   a ViT-B/16-size random SigLIP at 224 on a --subset picture subset (plain view)

Prints per phase: seconds, peak RSS, the size of each cache on disk, peak RSS over the uint8 tensors'
size; then the targets, and last one JSON object (peak_rss_gb, uint8_tensors_gb, decode_s, ...).
A benchmark, not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import threading
import time
from pathlib import Path

import torch

from kdq.spec import TeacherSpec
from kdq.synth import MANIFEST, synth
from kdq.train import data, teacher

PAGE = resource.getpagesize()
GB = 1e9


def rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE


class Peak:
    """Peak RSS while the block runs (sampled every 20 ms, and the process's own high-water mark)."""

    def __enter__(self):
        self.peak, self._stop = rss(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self.t0 = time.perf_counter()
        return self

    def _sample(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss())

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())


def size_on_disk(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) if Path(path).exists() else 0


def generate(out: Path, workers: int, per_class: int) -> float:
    if (out / MANIFEST).exists():
        return 0.0
    t0 = time.perf_counter()
    shutil.rmtree(out, ignore_errors=True)
    man = synth(
        out,
        per_class=per_class,
        seed=0,
        size_range=(300, 1000),
        height_range=(200, 940),
        quirks=5,
        workers=workers,
    )
    print(f"generated {len(man.images)} pictures under {out}", flush=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path(".kdq/bench/real_scale"), help="pictures and caches")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--views", type=int, default=1, help="augmented teacher views at full scale")
    ap.add_argument("--subset", type=int, default=500, help="pictures for the ViT-B/16-size teacher")
    ap.add_argument("--per-class", type=int, default=1000, help="mean per class (1000: the course's counts)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pictures, cache = args.work / "data", args.work / "cache"
    gen_s = generate(pictures, args.threads, args.per_class)
    shutil.rmtree(cache, ignore_errors=True)  # every phase below starts cold
    rows = []

    with Peak() as p:
        ds = data.load(pictures, cache, 256, workers=args.threads)
    decode_s = p.seconds
    rows.append(("decode at 256", p, size_on_disk(cache / "decoded")))
    n = len(ds.files)
    uint8 = n * 3 * (256**2 + 448**2)  # the decoded tensor and the same pictures at the teacher's size

    with Peak() as p:
        gid = data.groups(ds.digests, ds.hashes, ds.thumbs)
        train, val, hold = data.three_way(ds.labels, gid, 0.15, 0.08, 0)
    rows.append(("groups + split", p, 0))

    with Peak() as p:
        targets = teacher.prepare(
            TeacherSpec(model="tiny-448", views=args.views),
            ds,
            train,
            val,
            cache,
            torch.device("cpu"),
            decode=lambda size: data.stream(ds.root, ds.files, size, workers=args.threads),
            groups=gid,
        )
    rows.append((f"teacher tiny-448, plain + {args.views} views", p, size_on_disk(cache / "teacher")))
    del targets

    sub = ds.files[:: max(1, n // args.subset)][: args.subset]
    with Peak() as p:
        vit = teacher.load("random-b16-224", torch.device("cpu"))
        chunks = data.stream(ds.root, sub, vit.image_size, workers=args.threads)
        emb = teacher.embed_stream(vit, chunks, len(sub), ds.fingerprint, 0)
    vit_rate = len(sub) / p.seconds
    rows.append((f"teacher ViT-B/16 at 224, {len(sub)} pictures", p, emb["plain"].numel() * 2))

    whole = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"\n{n} pictures ({len(ds.skipped)} skipped), {args.threads} threads; generation {gen_s:.0f} s")
    print(f"{'phase':42}{'seconds':>9}{'peak RSS GB':>13}{'cache GB':>10}{'peak / uint8':>14}")
    for name, ph, disk in rows:
        print(f"{name:42}{ph.seconds:9.1f}{ph.peak / GB:13.2f}{disk / GB:10.3f}{ph.peak / uint8:14.2f}")
    limit = 1.5 * uint8 + 1.5 * GB
    print(f"uint8 tensors at 256 and 448: {uint8 / GB:.2f} GB; ViT-B/16 stand-in: {vit_rate:.1f} pictures/s")
    print(
        f"targets: peak RSS {whole / GB:.2f} GB <= 1.5 x {uint8 / GB:.2f} + 1.5 = {limit / GB:.2f} GB: "
        f"{'met' if whole <= limit else 'MISSED'}; decode {decode_s:.1f} s <= 120 s: "
        f"{'met' if decode_s <= 120 else 'MISSED'}"
    )
    print(
        json.dumps(
            {
                "pictures": n,
                "threads": args.threads,
                "peak_rss_gb": round(whole / GB, 3),
                "uint8_tensors_gb": round(uint8 / GB, 3),
                "decode_s": round(decode_s, 1),
                "phases": {
                    name: {"s": round(ph.seconds, 1), "peak_rss_gb": round(ph.peak / GB, 3)}
                    for name, ph, _ in rows
                },
                "decoded_cache_gb": round(rows[0][2] / GB, 3),
                "teacher_cache_gb": round(rows[2][2] / GB, 4),
                "vit_b16_pictures_per_s": round(vit_rate, 2),
                "targets_met": whole <= limit and decode_s <= 120,
            }
        )
    )


if __name__ == "__main__":
    main()
