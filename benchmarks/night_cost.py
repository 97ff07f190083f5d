"""What a night of Modal training costs: GPU-hours and dollars of N experiments, today's way and packed.

    python benchmarks/night_cost.py [--experiments 20] [--json]

A model, not a measurement: every input is in ``ASSUMPTIONS`` with where it comes from (docs/modal.md
prints the same table). No GPU was lent while this was written, so the per-phase minutes are
estimates from public throughput numbers, not timings; `benchmarks/gpu_checks.py` measures them on
an H100, and the numbers here should be replaced by its output when one is lent.

Four scenarios, each with the night's billed GPU-minutes and dollars:
  today        one experiment per container, 8 at once; on night one each of the first 8 builds the
               teacher cache itself
  cache once   the same, with each (dataset, teacher, views) cache built once, by one call
  packed       N experiments per container (time-sliced on one GPU), cache built once
  decode off   packed, and the JPEG decode done once in a CPU-only function before the first training
  the GPU      (the GPU's cold cache is then the teacher's part alone)
  worst        every experiment hangs: today's bounds (240 min per attempt, 2 retries, 8 GPU-hours per
               experiment) against the new ones (20 min per attempt, 1 retry, 40 GPU-minutes per
               experiment; a hang with no output is stopped after 10 minutes), and against the limits a
               default spec gets (sized to its recipe's first run: kdq/train/estimate.py), unpacked and
               packed
"""

from __future__ import annotations

import argparse
import json
import math

from kdq.backends.modal_sizing import PACK
from kdq.spec import ExperimentSpec

DEFAULT = ExperimentSpec.model_validate({"name": "default", "backend": {"kind": "modal"}}).backend

ASSUMPTIONS = {
    "h100_usd_per_h": (3.95, "Modal's price list: H100 $0.001097/s"),
    "cpu_core_usd_per_h": (0.047, "Modal's price list: $0.0000131/core/s"),
    "fixed_min": (
        2.0,
        "billed per container besides training: boot, imports, data load, probe, export, holdout",
    ),
    "train_min": (1.4, "one experiment's epochs: ~50 x 1.7 s on an H100 (timm training anchors x 3-3.5)"),
    "cold_min": (5.7, "a cold cache: decode 10k JPEGs, 3.5 GB teacher download, 90k teacher views, commits"),
    "decode_min": (
        1.0,
        "part of cold_min: decode 10k JPEGs at 384 px, hash them, save 4.4 GB, on 8 cores (20-90 s)",
    ),
    "concurrent": (8, "KDQ_MODAL_MAX_RUNNING: experiments training at once"),
    "pack": (PACK, "experiments per container when packed (backend.pack's default)"),
    "pack_speedup": (1.3, "aggregate throughput of N time-sliced processes on one GPU vs one (no MPS)"),
    "pack_tail_min": (0.5, "a packed container waiting on its last experiment"),
    "cpu_cores": (8, "cores reserved per container (cpu=8)"),
    "old_attempt_min": (240, "backend.timeout_min before"),
    "old_retries": (2, "modal.Retries before"),
    "old_cap_min": (480, "backend.max_gpu_hours = 8 before (the worker's poll enforces it)"),
    "new_attempt_min": (20, "the least backend.timeout_min on Modal now (the default recipe gets 45)"),
    "new_retries": (1, "modal.Retries now"),
    "new_cap_min": (40, "the least backend.max_gpu_min now (the default recipe gets 90)"),
    "stall_min": (10, "the container's watchdog: no progress and no log output this long"),
    "default_attempt_min": (DEFAULT.attempt_min, "backend.timeout_min a default Modal spec gets"),
    "default_cap_min": (DEFAULT.max_gpu_min, "backend.max_gpu_min a default Modal spec gets"),
}


def value(name: str) -> float:
    return ASSUMPTIONS[name][0]


def dollars(gpu_min: float, cpu_only_min: float = 0.0) -> float:
    """A night's dollars: ``gpu_min`` of GPU containers (an H100 and ``cpu_cores`` each) and
    ``cpu_only_min`` of CPU-only ones (the decode function, ``cpu_cores`` too)."""
    cpu = (gpu_min + cpu_only_min) * value("cpu_cores")
    return gpu_min / 60 * value("h100_usd_per_h") + cpu / 60 * value("cpu_core_usd_per_h")


def cpu_only_min(scenario: str) -> float:
    """Minutes of CPU-only containers a scenario adds (no GPU): the decode function's."""
    return value("decode_min") if scenario == "decode_off_gpu" else 0.0


def scenarios(n: int) -> dict[str, float]:
    """Billed H100-minutes of a night of ``n`` experiments, by scenario."""
    per_run = value("fixed_min") + value("train_min")
    cold_runs = min(n, value("concurrent"))  # the first wave all miss the cache
    today = n * per_run + cold_runs * value("cold_min")
    cache_once = n * per_run + value("cold_min")
    containers = math.ceil(n / value("pack"))
    per_container = (
        value("fixed_min")
        + value("pack") * value("train_min") / value("pack_speedup")
        + value("pack_tail_min")
    )
    packed = containers * per_container + value("cold_min")
    old_run = min(value("old_attempt_min") * (1 + value("old_retries")), value("old_cap_min"))
    new_run = min(value("new_attempt_min") * (1 + value("new_retries")), value("new_cap_min"))
    default_run = min(value("default_attempt_min") * (1 + value("new_retries")), value("default_cap_min"))
    return {
        "today": today,
        "cache_once": cache_once,
        "packed": packed,
        "decode_off_gpu": packed - value("decode_min"),  # the decode bills CPUs alone (CPU_ONLY_MIN)
        "worst_today": n * old_run,
        "worst_now": n * new_run,
        "worst_now_hang": n * (value("fixed_min") + value("stall_min")),  # hung without output
        "worst_packed": containers * new_run,
        "worst_default": n * default_run,
        "worst_default_packed": containers * default_run,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--experiments", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="one JSON line per scenario")
    args = parser.parse_args(argv)
    minutes = scenarios(args.experiments)
    rows = [
        {
            "scenario": name,
            "gpu_hours": round(m / 60, 2),
            "usd": round(dollars(m, cpu_only_min(name)), 2),
            "vs_today": round(m / minutes["worst_today" if name.startswith("worst") else "today"], 3),
        }
        for name, m in minutes.items()
    ]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    print(f"A night of {args.experiments} experiments on Modal H100s (model: docs/modal.md)\n")
    print(f"{'scenario':<22}{'H100-hours':>11}{'dollars':>10}{'vs today':>10}")
    for row in rows:
        print(f"{row['scenario']:<22}{row['gpu_hours']:>11.2f}{row['usd']:>10.2f}{row['vs_today']:>10.3f}")
    print("\n(worst_* rows are compared with worst_today; the others with today)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
