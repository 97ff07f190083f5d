"""`kdq demo`, as a new user runs it: interrupted once with Ctrl-C, then run again to the end."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kdq.runfolder import is_running
from kdq.stages import LIVE, Stage
from kdq.store import Store

KDQ = [sys.executable, "-c", "from kdq.cli.main import app; app()"]


def demo(home: Path, **kw) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KDQ_")}
    return subprocess.Popen(
        [*KDQ, "demo", "--home", str(home), "--no-watch", "--per-class", "20"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


def stopped(proc: subprocess.Popen, home: Path) -> str:
    """The demo's output once it has stopped, within its own bounds for a Ctrl-C (the worker's stop, then
    each training's SIGTERM and SIGKILL, then the stand-in's); past them, what it was doing."""
    from kdq.demo import TRAINING_STOP_S, WORKER_STOP_S

    try:
        return proc.communicate(timeout=WORKER_STOP_S + 2 * TRAINING_STOP_S + 30)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        out = proc.communicate()[0]
        log = (home / "worker.log").read_text()[-3000:] if (home / "worker.log").exists() else ""
        tree = subprocess.run(["ps", "-eo", "pid,ppid,stat,etime,args"], capture_output=True, text=True)
        said = f"the demo did not stop after Ctrl-C:\n{out}\n--- worker.log\n{log}\n--- ps\n{tree.stdout}"
        pytest.fail(said)


def stages(home: Path) -> list[Stage]:
    if not (home / "kdq.db").exists():
        return []
    with Store(home / "kdq.db") as store:
        return [e.stage for e in store.list()]


@pytest.mark.slow
def test_demo_survives_ctrl_c_then_runs_to_the_end(tmp_path):
    home = tmp_path / "demo"
    first = demo(home)
    deadline = time.time() + 180
    while Stage.TRAINING not in stages(home) and time.time() < deadline:
        time.sleep(0.2)
    assert Stage.TRAINING in stages(home), "no experiment reached training"
    first.send_signal(signal.SIGINT)
    out = stopped(first, home)
    assert first.returncode == 130, out
    assert "interrupted" in out
    worker_pid = json.loads(Store(home / "kdq.db").get_meta("worker"))["pid"]
    with pytest.raises(ProcessLookupError):
        os.kill(worker_pid, 0)
    runs = list((home / "runs").iterdir())
    assert runs and not any(is_running(r) for r in runs), "a training process outlived the demo"

    second = demo(home)
    out, _ = second.communicate(timeout=480)
    assert second.returncode == 0, out
    with Store(home / "kdq.db") as store:
        exps = store.list()
        assert len(exps) == 3 and not any(e.stage in LIVE for e in exps)
        assert not [e for e in exps if e.stage is Stage.FAILED]
        submitted = sorted((e for e in exps if e.server_score is not None), key=lambda e: e.server_attempt)
        assert submitted and all(e.stage is Stage.DONE for e in submitted)
        assert submitted[-1].server_rank == 1  # the live one (one team); superseded ones keep no rank
        # if_better by expected score: each submission beat the live one (the demo's models are the same
        # size, so by holdout F1); one within the noise of the live one is skipped with the numbers
        f1s = [e.metrics["holdout_f1"] for e in submitted]
        assert f1s == sorted(f1s)
        skipped = [e for e in exps if e.stage is Stage.SKIPPED]
        assert all("chance better" in store.events(e.id)[-1]["message"] for e in skipped)
    assert "kdq-demo" in out and "leaderboard" in out
    assert not [line for line in out.splitlines() if "[debug" in line or "[info" in line]  # its own words
    assert f"export KDQ_HOME={home.resolve()}" in out  # the closing hint holds for every later command


def test_the_demos_home_keeps_its_stand_in_settings_for_later_commands(tmp_path, monkeypatch):
    """`export KDQ_HOME=<demo home>` afterwards: kdq talks to the (gone) stand-in, with the demo's windows,
    not to the course server with the real 15 minutes."""
    from kdq.demo import DemoOptions, remember_settings
    from kdq.settings import Settings

    home = tmp_path / "demo"
    home.mkdir()
    remember_settings(home, "http://127.0.0.1:40123", DemoOptions(home=home, configs=[]))
    monkeypatch.chdir(tmp_path)
    for var in ("KDQ_SERVER_URL", "KDQ_SUBMIT_INTERVAL_S", "KDQ_STATUS_INTERVAL_S"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KDQ_HOME", str(home))
    s = Settings()
    assert s.server_url == "http://127.0.0.1:40123" and s.submit_interval_s == 8.0 and s.team == "kdq-demo"
    assert "KDQ_TOKEN" not in (home / ".env").read_text()  # the token dies with the stand-in


def test_the_demos_last_lines_name_the_real_folders_and_a_command_that_works(tmp_path, store, monkeypatch):
    from kdq.demo import closing_lines
    from kdq.spec import ExperimentSpec

    [i] = store.add([(None, ExperimentSpec(name="demo-hinton"))])
    store.update(i, run_id="ab12cd34-e1-a1", artifacts=str(tmp_path / "artifacts" / "ab12cd34-e1-a1"))
    monkeypatch.setattr("shutil.which", lambda name: None)  # kdq is not on the PATH after `make demo`
    text = "\n".join(closing_lines(tmp_path, store))
    assert str(tmp_path / "artifacts" / "ab12cd34-e1-a1") in text and "<id>" not in text
    kdq = str(Path(sys.executable).with_name("kdq"))
    assert f"{kdq} status --all" in text or "activate" in text, text
