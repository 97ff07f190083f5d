"""model.pt's size in fp32 and int8 for each student family kdq names, and how far int8's logits move.

    .venv/bin/python -W ignore benchmarks/export_sizes.py [--students timm:efficientnet_b0 ...]

Each student (random weights, BatchNorm statistics calibrated on 2 random batches so the logits are not
degenerate) is exported both ways with kdq.train.export.export on the same 64 random 224-px inputs:
the file's MiB, the ratio int8 / fp32, the share of equal top-1 and the largest logit difference.
A benchmark, not a test: with trained weights the agreement is what the run itself records.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from kdq.spec import StudentSpec
from kdq.train import export, students

STUDENTS = [
    "kdq:tiny_cnn",
    "torchvision:shufflenet_v2_x1_0",
    "torchvision:mobilenet_v3_small",
    "timm:mobilenetv4_conv_small",
    "timm:convnext_atto",
    "timm:efficientnet_b0",
    "timm:mobilenetv3_large_100",
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--students", nargs="*", default=STUDENTS, help="library:name ...")
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(64, 3, 224, 224)
    print(f"{'student':34} {'fp32 MiB':>9} {'int8 MiB':>9} {'ratio':>6} {'top-1':>7} {'max err':>8}")
    for item in args.students:
        library, name = item.split(":")
        model = students.build(StudentSpec(library=library, name=name, pretrained=False), 10).train()
        with torch.no_grad():
            for _ in range(2):
                model(torch.randn(8, 3, 224, 224) * 2 + 0.5)
        model.eval()
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = export.export(model, Path(tmp) / "a.pt", weights="fp32", example=x)
            int8 = export.export(model, Path(tmp) / "b.pt", weights="int8", example=x)
        a, b = fp32["model_mb"], int8["model_mb"]
        err = int8["max_logit_error"]
        print(f"{item:34} {a:9.2f} {b:9.2f} {b / a:6.3f} {int8['agreement']:7.3f} {err:8.3g}", flush=True)


if __name__ == "__main__":
    main()
