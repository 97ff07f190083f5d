"""Training and teacher throughput on a CUDA machine; prints one JSON object.

    python benchmarks/gpu_throughput.py            # CUDA: three students at 224, so400m teacher at 448
    python benchmarks/gpu_throughput.py --smoke    # anywhere: tiny sizes, proves the script runs
    python benchmarks/gpu_throughput.py --compile  # the students under torch.compile too

students: images/s of kdq's own training step (``kdq.train.step.Step``, what the loop runs): the
          batch's views rendered on the device from uint8 pictures, Hinton KD against teacher logits
          and embedding distillation, backward, clipping, AdamW, the schedule; bf16 autocast and
          channels_last on CUDA; every index already on the device, as the loop has it
teacher:  images/s of SigLIP image embeddings with a randomly initialised so400m vision tower at
          448 (MedSigLIP's size), bf16 + SDPA, the rendering of the views included
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from kdq.spec import DistillSpec, StudentSpec
from kdq.train import augment, students, teacher
from kdq.train.step import Step
from kdq.train.teacher import Targets

STUDENTS = [
    ("torchvision", "shufflenet_v2_x1_0"),
    ("timm", "mobilenetv4_conv_small"),
    ("timm", "efficientnet_b0"),
]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def student_rate(
    library: str, name: str, device: torch.device, batch: int, size: int, steps: int, compile_: bool = False
) -> float:
    n, views, dim = batch * 4, 5, 64
    model = students.build(StudentSpec(library=library, name=name, pretrained=False), 10).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    feats: dict = {}
    head = students.classifier(model)
    head.register_forward_hook(lambda m, inp, out: feats.__setitem__("f", inp[0]))
    proj = torch.nn.Linear(head.in_features, dim).to(device)
    params = list(model.parameters()) + list(proj.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    side = size + size // 7  # pictures decoded a little larger than the input, as data.decode_size is
    images = torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, device=device)
    gen = torch.Generator().manual_seed(0)
    view_params = torch.cat(
        [augment.identity(n).unsqueeze(1), augment.sample(n * views, gen).view(n, views, -1)], 1
    )
    targets = Targets(
        view_params, torch.randn(n, views + 1, dim).half(), torch.randn(n, views + 1, 10), 0.0, views + 1
    )
    targets = targets.to(device)
    labels = torch.randint(0, 10, (n,), device=device)
    dist = DistillSpec(loss="hinton", embed_weight=0.5, fresh_fraction=0.25)
    forward = torch.compile(model) if compile_ else model
    step = Step(
        model, forward, opt, sched, None, proj, feats, params, images, labels, targets, dist, None, size
    )
    order = torch.randint(0, n, (steps + 3, batch), generator=gen).to(device)
    view = torch.randint(views + 1, (steps + 3, batch), generator=gen).to(device)
    fresh = augment.sample((steps + 3) * batch, gen).view(steps + 3, batch, -1).to(device)

    model.train()
    for i in range(3):  # warm-up: cuDNN autotuning, the allocator, compilation
        step(order[i], view[i], fresh[i])
    sync(device)
    t0 = time.perf_counter()
    for i in range(3, steps + 3):
        step(order[i], view[i], fresh[i])
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
    ap.add_argument("--compile", action="store_true", help="also time the students under torch.compile")
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
        for compiled in (False, True) if args.compile else (False,):
            key = f"{library}/{name}" + (" (compiled)" if compiled else "")
            out["students_images_per_s"][key] = round(
                student_rate(library, name, device, batch, size, steps, compiled), 1
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
