"""``kdq demo``: the whole journey on this machine, with nothing but Python.

Generated data, the local backend, a stand-in of the course server on a loopback port and a real
``kdq worker`` process; the demo specs are queued, the live status table runs until every
experiment has finished, then the leaderboard and the artifacts are shown. Ctrl-C stops the
worker, the server and every training process it started; running it again starts afresh (the
dataset and the caches are kept, so the second run is faster).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from kdq.settings import Settings
from kdq.specfile import load_files
from kdq.stages import LIVE
from kdq.store import Store

DEMO_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "demo"
TEAM = "kdq-demo"
WORKER_STOP_S = 30.0  # after Ctrl-C: the worker's own stop, then it is killed
TRAINING_STOP_S = 15.0  # then each training's SIGTERM (a checkpoint at its next step), then SIGKILL
STATE = (
    "kdq.db",
    "kdq.db-wal",
    "kdq.db-shm",
    "queue.db",
    "queue.db-wal",
    "queue.db-shm",
    "runs",
    "artifacts",
)


@dataclass
class Views:
    """How the caller draws the status table and the leaderboard (the CLI passes its own)."""

    status: Callable[[Store], Any]
    leaderboard: Callable[[Any, str | None], Any]


@dataclass
class DemoOptions:
    home: Path
    configs: list[Path]
    per_class: int = 30
    test_per_class: int = 12
    submit_interval_s: float = 8.0
    status_interval_s: float = 1.0
    timeout_s: float = 600.0
    watch: bool = True


def prepare(home: Path, per_class: int, test_per_class: int) -> tuple[Path, Path]:
    """Fresh state, kept data: the training set under datasets/demo and a hidden test set."""
    from kdq.synth import synth

    for name in STATE:
        path = home / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    train, test = home / "datasets" / "demo", home / "server" / "test_dataset"
    for root, n, seed in ((train, per_class, 0), (test, test_per_class, 1)):
        if not (root / "synth_manifest.json").exists():
            shutil.rmtree(root, ignore_errors=True)
            synth(root, per_class=n, seed=seed, overlays=0.1)
    return train, test


def worker_env(home: Path, server_url: str, token: str, opts: DemoOptions) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("KDQ_")}
    return {
        **keep,
        "KDQ_HOME": str(home),
        "KDQ_SERVER_URL": server_url,
        "KDQ_TOKEN": token,
        "KDQ_TEAM": TEAM,
        "KDQ_SUBMIT_INTERVAL_S": str(opts.submit_interval_s),
        "KDQ_STATUS_INTERVAL_S": str(opts.status_interval_s),
        "KDQ_POLL_INTERVAL_S": "1",
        "KDQ_HEARTBEAT_S": "1",
        "KDQ_WORKER_THREADS": "2",
    }


def remember_settings(home: Path, server_url: str, opts: DemoOptions) -> None:
    """The demo's settings in its home's ``.env``, so that a later `export KDQ_HOME=<home>` talks to the
    stand-in (gone by then: one quick refusal) with the demo's windows, never to the course server. The
    token is not kept: it dies with the stand-in."""
    (home / ".env").write_text(
        "# written by `kdq demo`: this home's course server was the demo's stand-in\n"
        f"KDQ_SERVER_URL={server_url}\nKDQ_TEAM={TEAM}\n"
        f"KDQ_SUBMIT_INTERVAL_S={opts.submit_interval_s}\nKDQ_STATUS_INTERVAL_S={opts.status_interval_s}\n"
    )


def kdq_command() -> str:
    """How to type kdq in this shell: ``kdq`` when it is on the PATH, else this environment's script."""
    if shutil.which("kdq"):
        return "kdq"
    script = Path(sys.executable).with_name("kdq")
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def closing_lines(home: Path, store: Store) -> list[str]:
    """Where the models are (the real folders) and the commands to look around, ready to paste."""
    made = [e for e in store.list() if e.artifacts]
    lines = ["models and metrics (model.pt, metrics.json, history.csv), by experiment:"]
    lines += [f"  {e.id} {e.name}: {e.artifacts}" for e in made] or [f"  none yet under {home / 'artifacts'}"]
    kdq = kdq_command()
    lines += ["look around (the demo's home, for every command in this shell):", f"  export KDQ_HOME={home}"]
    lines.append(f"  {kdq} status --all; {kdq} results; {kdq} show {made[0].id if made else 'ID'}")
    if kdq != "kdq":
        lines.append(f"  (or `source {Path(kdq).parent / 'activate'}` to type plain `kdq`)")
    return lines


def stop_training(settings) -> int:
    """End every training process the demo started (they run in their own sessions, found by run folder)."""
    from kdq.backends.local import LocalBackend

    return LocalBackend(settings).stop_all(grace_s=TRAINING_STOP_S)


def run(opts: DemoOptions, console: Console, views: Views) -> int:
    """Run the demo; the exit code is 0 when every experiment finished and none failed."""
    from kdq.course.fake_server import FakeServer

    home = opts.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    specs = load_files(opts.configs)  # invalid configs stop the demo before anything starts
    console.print(f"[bold]kdq demo[/bold] in {home}")
    train, test = prepare(home, opts.per_class, opts.test_per_class)
    console.print(f"data: {train} (training), {test} (the stand-in server's hidden test set)")

    token = secrets.token_hex(16)  # made at run time, never stored in the repository
    server = FakeServer(
        teams={TEAM: token},
        data_dir=test,
        submit_interval_s=opts.submit_interval_s,
        status_interval_s=opts.status_interval_s,
    )
    server.start()
    remember_settings(home, server.url, opts)
    env = worker_env(home, server.url, token, opts)
    os.environ.update(
        {k: env[k] for k in env if k.startswith("KDQ_")}
    )  # this process reads the same settings
    log = open(home / "worker.log", "ab")
    worker = subprocess.Popen(
        [sys.executable, "-c", "from kdq.cli.main import app; app()", "worker", "--log-json"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    console.print(
        f"course-server stand-in: {server.url} · worker pid {worker.pid} (log: {home / 'worker.log'})"
    )
    store = Store(home / "kdq.db")
    code = 1
    try:
        from kdq.worker import nudge

        ids = store.add([(str(p), s) for p, s in specs], force=True)
        nudge(ids, Settings())
        console.print(f"queued {len(ids)} experiments from {', '.join(sorted({p.name for p, _ in specs}))}")
        code = _follow(store, worker, opts, console, views.status)
        _finish(home, console, views.leaderboard)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: stopping the worker, the training runs and the server[/yellow]")
        code = 130
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(WORKER_STOP_S)
            except subprocess.TimeoutExpired:
                worker.kill()
        stopped = stop_training(Settings())
        if stopped:
            console.print(f"stopped {stopped} training run(s)")
        store.close()
        server.stop()
        log.close()
    return code


def _follow(store: Store, worker: subprocess.Popen, opts: DemoOptions, console: Console, view) -> int:
    from rich.live import Live

    deadline = time.time() + opts.timeout_s
    interrupted: list[int] = []

    def on_sigint(signum, frame) -> None:  # a KeyboardInterrupt raised inside a finaliser is lost: the flag
        interrupted.append(signum)  # stays, and the loop below raises it again
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)

    def finished() -> bool:
        if interrupted:
            raise KeyboardInterrupt
        return all(e.stage not in LIVE for e in store.list())

    if opts.watch and console.is_terminal:
        with Live(view(store), console=console, refresh_per_second=2) as live:
            while not finished() and time.time() < deadline and worker.poll() is None:
                time.sleep(1)
                live.update(view(store))
    else:
        while not finished() and time.time() < deadline and worker.poll() is None:
            time.sleep(1)
        console.print(view(store))
    if worker.poll() is not None:
        console.print(f"[red]the worker exited with code {worker.returncode}; see worker.log[/red]")
        return 1
    if not finished():
        console.print(f"[red]not finished after {opts.timeout_s:.0f} s[/red]")
        return 1
    for e in store.list():
        if str(e.stage) == "skipped":  # if_better at work: say why, in the scheduler's words
            console.print(
                f"{e.id} {e.name}: {store.events(e.id)[-1]['message']}", markup=False, highlight=False
            )
    failed = [e for e in store.list() if str(e.stage) == "failed"]
    for e in failed:
        console.print(f"[red]{e.id} {e.name} failed:[/red] {e.error}", markup=True, highlight=False)
    return 1 if failed else 0


def _finish(home: Path, console: Console, draw: Callable[[Any, str | None], Any]) -> None:
    from kdq.course import CourseClient

    console.print("[bold]leaderboard[/bold] (the stand-in's, after the grader scored the submissions)")
    with CourseClient.from_settings(Settings()) as client:
        console.print(draw(client.leaderboard(), TEAM))
    with Store(home / "kdq.db") as store:
        for line in closing_lines(home, store):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
