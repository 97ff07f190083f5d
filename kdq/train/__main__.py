"""The training entry point every backend runs: ``python -m kdq.train RUN_DIR --data DIR --cache DIR``.

It reads ``RUN_DIR/spec.json``, holds an exclusive lock on ``RUN_DIR/train.lock`` while it runs
(so a second launch of the same run exits at once and a watcher can tell it is alive), and ends
with ``done.json`` or ``error.json``. The training itself is ``kdq.train.loop.run``.

``--teacher-cache-only`` builds the teacher cache the spec needs and trains nothing (the Modal backend
has each cache built once, for every run: kdq/backends/modal_cache.py).

A SIGTERM stops it at the next training step, after a checkpoint of that step: it exits with
``EXIT_STOPPED`` and no verdict, so the run is resumed (a preemption), not failed. ``--checkpoint``
puts the checkpoint on a local disk (the Modal container's; it copies the file to the Volume).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from kdq import runfolder
from kdq.errors import cannot_write, disk_full
from kdq.spec import ExperimentSpec

EXIT_ALREADY_RUNNING = 3
EXIT_DISK_FULL = runfolder.EXIT_DISK_FULL  # not even error.json could be written
EXIT_STOPPED = runfolder.EXIT_STOPPED  # a SIGTERM: the checkpoint is saved, resume the run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdq.train")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--data", type=Path, required=True, help="dataset folder")
    parser.add_argument("--cache", type=Path, required=True, help="shared cache folder")
    parser.add_argument("--lock", type=Path, help="the lock file (default RUN_DIR/train.lock)")
    parser.add_argument(
        "--resume-from", type=Path, help="an earlier run folder whose checkpoint to start from"
    )
    parser.add_argument("--checkpoint", type=Path, help="the checkpoint file (default RUN_DIR/checkpoint.pt)")
    parser.add_argument("--supervise", action="store_true", help="a parent process names a killing signal")
    parser.add_argument(
        "--device", choices=["cuda", "cpu"], help="override train.device (a GPU container passes cuda)"
    )
    parser.add_argument(
        "--teacher-cache-only",
        action="store_true",
        help="build the teacher cache the spec needs, train nothing",
    )
    args = parser.parse_args(argv)
    run_dir: Path = args.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)

    lock = runfolder.hold_lock(run_dir, args.lock)  # Modal: on the container's disk, not the Volume
    if lock is None:
        print(f"{run_dir} is already being trained by another process", file=sys.stderr)
        return EXIT_ALREADY_RUNNING
    if runfolder.outcome(run_dir) == "done":
        return 0
    (run_dir / runfolder.ERROR).unlink(missing_ok=True)
    if args.supervise and (code := runfolder.supervise(run_dir)) is not None:
        return code  # the parent: it waited, and named the signal if the training was killed
    if args.resume_from:
        print(runfolder.take_checkpoint(args.resume_from, run_dir, args.checkpoint), flush=True)
    try:
        from kdq.train import gpu
        from kdq.train.checkpoint import Saver, Stopped
        from kdq.train.loop import run

        spec = ExperimentSpec.model_validate_json((run_dir / runfolder.SPEC).read_text())
        if args.device:  # on a paid GPU, train.device = "auto" must not mean "the CPU when CUDA fails"
            spec = spec.model_copy(update={"train": spec.train.model_copy(update={"device": args.device})})
        machine = gpu.describe()
        runfolder.write_progress(run_dir, phase="start", gpu=machine)  # later writes keep it
        if args.device == "cuda":
            gpu.require_cuda(machine)
            gpu.limit_memory(dict(os.environ))  # packed on one GPU: its share of the memory
        started = time.time()
        saver = Saver(args.checkpoint or run_dir / runfolder.CHECKPOINT, spec.train.checkpoint_every_s)
        signal.signal(signal.SIGTERM, saver.request_stop)
        try:
            if args.teacher_cache_only:
                summary = teacher_cache(spec, run_dir, args.data, args.cache)
            else:
                summary = run(spec, run_dir, data_dir=args.data, cache_dir=args.cache, saver=saver) or {}
        except Stopped as stop:
            print(stop, flush=True)
            return EXIT_STOPPED
        if metrics := runfolder.read_json(run_dir / runfolder.METRICS):
            runfolder.write_json(run_dir / runfolder.METRICS, {**metrics, "gpu": machine})
        runfolder.write_json(run_dir / runfolder.DONE, {**summary, "seconds": time.time() - started})
        return 0
    except BaseException as exc:  # noqa: BLE001 — every failure must leave error.json behind
        full = cannot_write(exc, run_dir)  # a full or read-only disk
        error = {"error": full or f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        try:
            runfolder.write_json(run_dir / runfolder.ERROR, error)
        except OSError as write_error:
            if not (line := cannot_write(write_error, run_dir)):
                raise
            print(line, file=sys.stderr)
            return EXIT_DISK_FULL if disk_full(write_error, run_dir) else runfolder.EXIT_READ_ONLY
        if full:
            print(full, file=sys.stderr)  # one line: the traceback of a full disk tells nothing more
        else:
            traceback.print_exc()
        return 130 if isinstance(exc, KeyboardInterrupt) else 1
    finally:
        lock.close()


def teacher_cache(spec: ExperimentSpec, run_dir: Path, data_dir: Path, cache_dir: Path) -> dict:
    """The pictures and the teacher's embeddings of every view of them, into ``cache_dir``, for every run
    of this dataset and teacher (the Modal backend's build of a teacher cache); trains no student."""
    from kdq.train.loop import load, pick_device, progress, teacher_targets

    progress(run_dir, spec, None, "data")
    split = load(spec, data_dir, cache_dir, pick_device(spec.train.device))
    targets = teacher_targets(spec, split, run_dir, data_dir, cache_dir)
    progress(run_dir, spec, None, "done")
    return {"teacher_val_f1": None if targets is None else targets.val_f1}


if __name__ == "__main__":
    sys.exit(main())
