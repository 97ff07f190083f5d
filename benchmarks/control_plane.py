"""Control-plane benchmarks: what the user waits for, measured as the user runs it.

    .venv/bin/python benchmarks/control_plane.py            # prints a table and JSON
    .venv/bin/python benchmarks/control_plane.py --idle 60  # idle worker measured over 60 s

1. `kdq status` (a new process, imports included) with 1,000 experiments in the store;
2. `kdq enqueue` of 200 spec files in one call (first with a new student, then a known one);
3. CPU used by an idle `kdq worker` over a window (fraction of one core).
Targets (issue 8): status < 0.5 s, enqueue of 200 < 5 s, idle worker < 2% of one core.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KDQ = [sys.executable, "-c", "from kdq.cli.main import app; app()"]
# A store after a few weeks of use: almost everything finished, a handful in flight, a queue.
IN_FLIGHT = {"training": 3, "fetching": 1, "ready": 2, "evaluating": 1, "queued": 40}
FINISHED = ["done"] * 6 + ["failed", "cancelled", "skipped"]


def run_kdq(env: dict, *args: str) -> float:
    t = time.perf_counter()
    subprocess.run([*KDQ, *args], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def fill(home: Path, n: int) -> None:
    from kdq.spec import ExperimentSpec
    from kdq.store import Store

    rng = random.Random(0)
    stages = [s for s, k in IN_FLIGHT.items() for _ in range(k)]
    stages = [rng.choice(FINISHED) for _ in range(n - len(stages))] + stages
    with Store(home / "kdq.db") as store:
        ids = store.add([(None, ExperimentSpec(name=f"exp-{i}", train={"seed": i})) for i in range(n)])
        with store.transaction() as db:
            for i, stage in zip(ids, stages):
                db.execute(
                    "update experiments set stage = ?, val_f1 = ?, progress = ? where id = ?",
                    [stage, rng.random(), json.dumps({"epoch": 3, "epochs": 30}), i],
                )


def bench_status(env: dict, home: Path, repeats: int) -> dict:
    fill(home, 1000)
    run_kdq(env, "status")  # warm the page cache
    table = [run_kdq(env, "status") for _ in range(repeats)]
    as_json = [run_kdq(env, "status", "--json") for _ in range(repeats)]
    startup = [run_kdq(env, "--help") for _ in range(repeats)]
    return {
        "status_s": statistics.median(table),
        "status_json_s": statistics.median(as_json),
        "cli_startup_s": statistics.median(startup),
        "target_s": 0.5,
    }


def bench_enqueue(env: dict, tmp: Path) -> dict:
    specs = tmp / "specs"
    specs.mkdir()
    for i in range(200):
        (specs / f"s{i:03d}.toml").write_text(
            f'[train]\nseed = {i}\n[teacher]\nkind = "none"\n[distill]\nloss = "ce"\n'
        )
    cold = run_kdq(env, "enqueue", str(specs / "*.toml"))  # checks the student: imports torch once
    warm = run_kdq(env, "enqueue", str(specs / "*.toml"), "--force")  # the student's verdict is remembered
    return {"enqueue_200_s": cold, "enqueue_200_warm_s": warm, "target_s": 5.0}


def bench_idle_worker(env: dict, seconds: float) -> dict:
    proc = subprocess.Popen(
        [*KDQ, "worker", "--log-json"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        time.sleep(5)  # start-up (imports, first reconcile) is not idleness

        def cpu() -> float:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        c0, t0 = cpu(), time.perf_counter()
        time.sleep(seconds)
        used = cpu() - c0
        wall = time.perf_counter() - t0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    return {"idle_worker_core_fraction": used / wall, "window_s": wall, "target": 0.02}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--idle", type=float, default=60.0, help="seconds to watch the idle worker")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        results = {}
        for name in ("status", "enqueue", "idle"):
            home = tmp / name
            env = {**os.environ, "KDQ_HOME": str(home), "COLUMNS": "160"}
            if name == "status":
                results["status"] = bench_status(env, home, args.repeats)
            elif name == "enqueue":
                results["enqueue"] = bench_enqueue(env, tmp)
            else:
                results["idle"] = bench_idle_worker(env, args.idle)
    s, e, i = results["status"], results["enqueue"], results["idle"]
    print(
        f"kdq status, 1,000 experiments:      {s['status_s']:.3f} s (json {s['status_json_s']:.3f} s; "
        f"bare CLI start-up {s['cli_startup_s']:.3f} s)   target < 0.5 s"
    )
    print(
        f"kdq enqueue, 200 spec files:        {e['enqueue_200_s']:.3f} s first time, "
        f"{e['enqueue_200_warm_s']:.3f} s with the student known   target < 5 s"
    )
    print(
        f"idle worker over {i['window_s']:.0f} s:            {100 * i['idle_worker_core_fraction']:.2f}% of one core   target < 2%"
    )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
