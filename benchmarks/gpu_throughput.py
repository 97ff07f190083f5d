"""Training and teacher throughput on a CUDA machine; prints one JSON object.

    python benchmarks/gpu_throughput.py            # CUDA: three students at 224, so400m teacher at 448
    python benchmarks/gpu_throughput.py --smoke    # anywhere: tiny sizes, proves the script runs

students: images/s of kdq's training step (on-device augmentation from uint8 pictures already in
          memory, bf16 autocast, channels_last, AdamW, Hinton KD against cached teacher logits)
teacher:  images/s of SigLIP image embeddings with a randomly initialised so400m vision tower at
          448 (MedSigLIP's size), bf16 + SDPA, the rendering of the views included
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from kdq.spec import StudentSpec
from kdq.train import augment, losses, students, teacher

STUDENTS = [
    ("torchvision", "shufflenet_v2_x1_0"),
    ("timm", "mobilenetv4_conv_small"),
    ("timm", "efficientnet_b0"),
]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def student_rate(library: str, name: str, device: torch.device, batch: int, size: int, steps: int) -> float:
    model = students.build(StudentSpec(library=library, name=name), 10).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images = torch.randint(
        0, 256, (batch * 4, 3, size + size // 7, size + size // 7), dtype=torch.uint8, device=device
    )
    labels = torch.randint(0, 10, (batch * 4,), device=device)
    t_logits = torch.randn(batch * 4, 10, device=device)
    gen = torch.Generator().manual_seed(0)

    def step() -> None:
        idx = torch.randint(0, len(images), (batch,), generator=gen).to(device)
        x = augment.render(images[idx], augment.sample(batch, gen), size)
        x = x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            loss = losses.hinton(model(x).float(), t_logits[idx], labels[idx], 4.0, 0.3)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    for _ in range(3):  # warm-up: cuDNN autotuning, allocator
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return batch * steps / (time.perf_counter() - t0)


def teacher_rate(name: str, device: torch.device, batch: int, steps: int) -> tuple[float, int]:
    t = teacher.load(name, device)
    images = torch.randint(0, 256, (batch, 3, t.image_size, t.image_size), dtype=torch.uint8, device=device)
    params = augment.sample(batch, torch.Generator().manual_seed(0))
    for _ in range(2):
        t.embed(images, params)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        emb = t.embed(images, params)
    sync(device)
    return batch * steps / (time.perf_counter() - t0), int(emb.shape[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (CPU is fine): check that it runs")
    ap.add_argument("--batch", type=int, default=256, help="student batch")
    ap.add_argument("--teacher-batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.smoke:
        batch, tbatch, steps, size, tname = 4, 4, 2, 64, "tiny"
    else:
        if device.type != "cuda":
            raise SystemExit("no CUDA device: run with --smoke on a CPU")
        batch, tbatch, steps, size, tname = (
            args.batch,
            args.teacher_batch,
            args.steps,
            224,
            "random-so400m-448",
        )
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
    out = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "smoke": args.smoke,
        "student_batch": batch,
        "image_size": size,
        "students_images_per_s": {},
    }
    for library, name in STUDENTS:
        out["students_images_per_s"][f"{library}/{name}"] = round(
            student_rate(library, name, device, batch, size, steps), 1
        )
        if device.type == "cuda":
            torch.cuda.empty_cache()
    rate, dim = teacher_rate(tname, device, tbatch, steps)
    out["teacher"] = {"model": tname, "batch": tbatch, "embed_dim": dim, "images_per_s": round(rate, 1)}
    if device.type == "cuda":
        out["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
