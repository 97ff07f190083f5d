"""Control-plane benchmarks: what the user waits for, measured as the user runs it, beside two yardsticks.

    .venv/bin/python benchmarks/control_plane.py             # the table, then JSON
    .venv/bin/python benchmarks/control_plane.py --idle 60   # also an idle worker's CPU over 60 s

Every command runs in a new process, imports included, in interleaved rounds, so a busy machine slows
each the same; the medians are printed next to ``python -c pass`` and ``sqlite-utils --help`` measured
in the same rounds, and as a ratio to the latter. The targets (issue 15, on the 2-core dev machine):

    kdq --help                       <= 0.30 s
    kdq status, 1,000 experiments    <= 0.25 s  (piped, and in an 80x24 pseudo-terminal)
    TAB completion (kdq st<TAB>)     <= 0.20 s
    kdq enqueue, 200 specs, a student never checked before   <= 3 s
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
KDQ = [str(BIN / "kdq")]  # the console script, as the user runs it
TARGETS = {
    "kdq --help": 0.30,
    "kdq status (1,000)": 0.25,
    "kdq status (1,000, terminal)": 0.25,
    "TAB completion": 0.20,
    "kdq enqueue (200, new student)": 3.0,
}
# A store after a few weeks of use: almost everything finished, a handful in flight, a queue.
IN_FLIGHT = {"training": 3, "fetching": 1, "ready": 2, "evaluating": 1, "queued": 40}
FINISHED = ["done"] * 6 + ["failed", "cancelled", "skipped"]


def timed(cmd: list[str], env: dict) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def timed_tty(cmd: list[str], env: dict) -> float:
    """As ``timed``, with stdin, stdout and stderr on an 80x24 pseudo-terminal, read as it is written."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")} | {"TERM": "xterm-256color"}
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    try:
        while os.read(master, 65536):
            pass
    except OSError:  # EIO: the command closed its end
        pass
    proc.wait()
    elapsed = time.perf_counter() - t
    os.close(master)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    return elapsed


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


def side_by_side(env: dict, repeats: int) -> dict[str, float]:
    """Medians over ``repeats`` interleaved rounds of every quick command."""
    complete = {**env, "_KDQ_COMPLETE": "complete_bash", "COMP_WORDS": "kdq st", "COMP_CWORD": "1"}
    commands = {
        "python -c pass": ([sys.executable, "-c", "pass"], env),
        "sqlite-utils --help": ([str(BIN / "sqlite-utils"), "--help"], env),
        "kdq --help": ([*KDQ, "--help"], env),
        "kdq status (1,000)": ([*KDQ, "status"], env),
        "kdq status (1,000, terminal)": ([*KDQ, "status"], env),
        "kdq status --json (1,000)": ([*KDQ, "status", "--json"], env),
        "TAB completion": ([*KDQ], complete),
    }

    def run(name: str, cmd: list[str], e: dict) -> float:
        return (timed_tty if "terminal" in name else timed)(cmd, e)

    for name, (cmd, e) in commands.items():  # warm the page cache
        run(name, cmd, e)
    runs: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, (cmd, e) in commands.items():
            runs[name].append(run(name, cmd, e))
    return {name: statistics.median(times) for name, times in runs.items()}


def enqueue_200(env: dict, tmp: Path) -> dict[str, float]:
    specs = tmp / "specs"
    specs.mkdir()
    from kdq.synth import synth

    synth(Path(env["KDQ_HOME"]) / "datasets" / "hw3", per_class=1, seed=0)  # enqueue checks the dataset
    for i in range(200):
        (specs / f"s{i:03d}.toml").write_text(
            f'name = "s{i}"\n[train]\nseed = {i}\n[teacher]\nkind = "none"\n[distill]\nloss = "ce"\n'
        )
    cold = timed([*KDQ, "enqueue", str(specs / "*.toml")], env)  # a new home: the student is checked once
    warm = timed([*KDQ, "enqueue", str(specs / "*.toml"), "--force"], env)  # its verdict is remembered
    return {"kdq enqueue (200, new student)": cold, "kdq enqueue (200, known student)": warm}


def idle_worker(env: dict, seconds: float) -> dict[str, float]:
    proc = subprocess.Popen([*KDQ, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(5)  # start-up (imports, first reconcile) is not idleness

        def cpu() -> float:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        c0, t0 = cpu(), time.perf_counter()
        time.sleep(seconds)
        used, wall = cpu() - c0, time.perf_counter() - t0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    return {"idle worker (share of one core)": used / wall}


def report(results: dict[str, float]) -> list[str]:
    base, tool = results["python -c pass"], results["sqlite-utils --help"]
    lines = [f"{'':34} {'median':>8} {'target':>8}  {'vs sqlite-utils --help':>22}"]
    for name, value in results.items():
        if "share" in name:
            lines.append(f"{name:34} {100 * value:7.2f}% {'2%':>8}")
            continue
        target = TARGETS.get(name)
        verdict = "" if target is None else ("  ok" if value <= target else "  MISSED")
        shown = "" if target is None else f"{target:.2f}s"
        lines.append(f"{name:34} {value:7.3f}s {shown:>8}  {value / tool:20.2f}x{verdict}")
    lines.append(f"(same rounds: python -c pass {base:.3f} s, sqlite-utils --help {tool:.3f} s)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--idle", type=float, default=0.0, help="seconds to watch an idle worker (0: skip)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # As on a user's machine, Python caches compiled modules: a PYTHONDONTWRITEBYTECODE left in the
        # environment would compile each of kdq's modules again in every timed run.
        clean = {k: v for k, v in os.environ.items() if not k.startswith("KDQ_")}
        clean.pop("PYTHONDONTWRITEBYTECODE", None)
        env = {**clean, "KDQ_HOME": str(tmp / "status"), "COLUMNS": "160"}
        fill(tmp / "status", 1000)
        results = side_by_side(env, args.repeats)
        results.update(enqueue_200({**clean, "KDQ_HOME": str(tmp / "enqueue")}, tmp))
        if args.idle:
            results.update(idle_worker({**clean, "KDQ_HOME": str(tmp / "idle")}, args.idle))
        shutil.rmtree(tmp / "status", ignore_errors=True)
    print("\n".join(report(results)))
    print(json.dumps({k: round(v, 4) for k, v in results.items()}, indent=2))


if __name__ == "__main__":
    main()
