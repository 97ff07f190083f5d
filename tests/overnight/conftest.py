"""The overnight harness: a real ``kdq worker`` process, the course-server stand-in on a loopback
port, generated data, and the checks every suite makes at the end.

    def test_x(overnight):
        h = overnight()                      # stand-in started, nothing else yet
        ids = h.enqueue(2)                   # two tiny experiments (policy "always")
        h.start_worker(pauses={"fetching": 4})
        h.wait_mark("fetching"); h.signal(signal.SIGKILL)
        h.start_worker(); h.wait_finished()
        h.check_delivered(ids)               # done, one submission each, nothing lost

Everything is small on purpose (2 shared cores): 32-pixel images, a tiny CNN, two epochs, a
20-image hidden test set, a 3 s submission window and a 0.5 s status window on the stand-in.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from spectext import tiny_spec

from kdq.experiment import Experiment
from kdq.stages import TERMINAL, Stage
from kdq.store import Store

HERE = Path(__file__).resolve().parent
TEAM = "Overnight Owls"
SUBMIT_INTERVAL_S = 3.0
STATUS_INTERVAL_S = 0.5


def pytest_collection_modifyitems(items):
    """torch warns that TorchScript is deprecated on every save and load; the course server needs it."""
    for item in items:
        if str(item.path).startswith(str(HERE)):
            item.add_marker(pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning"))


def course_token() -> str:
    """A fake team token (32 hex), built at run time: no secret-looking literal in the repository."""
    return "0123456789abcdef" * 2


def hf_token() -> str:
    """A fake Hugging Face token, built at run time."""
    return "hf_" + "OvernightFake" + "Token" * 4


def spec_text(name: str = "tiny", *, policy: str = "always", **fields: Any) -> str:
    """A tiny spec (tests/spectext.py) that is submitted by default: the harness checks the deliveries."""
    return tiny_spec(name, policy=policy, **fields)


@pytest.fixture(scope="session")
def test_set(tmp_path_factory) -> Path:
    """The stand-in's hidden test set: 2 generated images per class, another seed than the training set."""
    from kdq.synth import synth

    root = tmp_path_factory.mktemp("hidden") / "test_dataset"
    synth(root, per_class=2, seed=1, macosx=False)
    return root


class Overnight:
    """One KDQ_HOME, one stand-in server, at most one worker process at a time."""

    def __init__(self, settings, tmp: Path, server, token: str, monkeypatch, extra_env: dict[str, str]):
        self.settings, self.tmp, self.server, self.token = settings, tmp, server, token
        self.home = settings.root
        self.log = tmp / "worker.log"
        self.marks = tmp / "marks"
        self.extra_env = extra_env
        self.worker: subprocess.Popen | None = None
        self.store = Store.open(settings)
        self._specs = 0
        # The CLI run in this process (CliRunner) must see the same server and token as the worker.
        for key, value in self.env().items():
            if key.startswith("KDQ_") or key in ("HF_TOKEN",):
                monkeypatch.setenv(key, value)

    # ------------------------------------------------------------ processes

    def env(self, pauses: dict[str, float] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KDQ_")}
        env.update(
            {
                "KDQ_HOME": str(self.home),
                "KDQ_SERVER_URL": self.server.url,
                "KDQ_TOKEN": self.token,
                "KDQ_TEAM": TEAM,
                "KDQ_SUBMIT_INTERVAL_S": str(SUBMIT_INTERVAL_S),
                "KDQ_STATUS_INTERVAL_S": str(STATUS_INTERVAL_S + 0.1),
                "KDQ_POLL_INTERVAL_S": "0.5",
                "KDQ_HEARTBEAT_S": "1",
                "KDQ_WORKER_THREADS": "2",
                "KDQ_CONNECT_TIMEOUT_S": "1",
                "KDQ_REQUEST_TIMEOUT_S": "20",
                "OMP_NUM_THREADS": "1",
                "PYTHONPATH": str(HERE.parents[1]),
            }
        )
        env.update(self.extra_env)
        if pauses:
            env["KDQ_TEST_PAUSE"] = json.dumps(pauses)
            env["KDQ_TEST_MARKS"] = str(self.marks)
        return env

    def start_worker(self, pauses: dict[str, float] | None = None) -> subprocess.Popen:
        assert self.worker is None or self.worker.poll() is not None, "a worker is already running"
        for mark in self.marks.glob("*"):
            mark.unlink()
        self._log_size = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            log.write(f"--- worker start (pauses {pauses or {}})\n".encode())
            self.worker = subprocess.Popen(
                [sys.executable, str(HERE / "worker_entry.py")],
                env=self.env(pauses),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self.worker

    def wait_worker_up(self, timeout: float = 120) -> None:
        """Until this worker's Huey consumer runs (its signal handlers are set from then on)."""
        start = self._log_size
        self.wait(
            lambda: b"commands are available" in self.log.read_bytes()[start:],
            timeout,
            "the worker to start",
            every=0.1,
        )
        time.sleep(0.3)

    def signal(self, sig: int, timeout: float = 60) -> int:
        """Send ``sig`` to the worker and wait for it to exit; its exit code."""
        self.worker.send_signal(sig)
        try:
            return self.worker.wait(timeout)
        except subprocess.TimeoutExpired:
            self.worker.kill()
            self.worker.wait(10)
            raise AssertionError(f"the worker did not exit within {timeout} s of signal {sig}") from None

    def stop_worker(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.signal(signal.SIGTERM)

    def close(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.kill()
            self.worker.wait(10)
        from kdq.backends.local import LocalBackend

        LocalBackend(self.settings).stop_all(grace_s=5)
        self.store.close()

    # ------------------------------------------------------------ the CLI, in this process

    def cli(self, *args: Any, ok: bool = True):
        import logging

        import structlog
        from typer.testing import CliRunner

        from kdq.cli.main import app

        # A command configures logging onto CliRunner's stderr, which is closed once it returns: put
        # the test process's own logging back, or the stand-in's next log line fails.
        saved, handlers = structlog.get_config(), logging.getLogger().handlers[:]
        try:
            result = CliRunner().invoke(app, [str(a) for a in args])
        finally:
            structlog.configure(**saved)
            logging.getLogger().handlers[:] = handlers
        if ok:
            assert result.exit_code == 0, (
                f"kdq {' '.join(map(str, args))} exited {result.exit_code}: {result.output}"
            )
        return result

    def enqueue(self, n: int = 1, **spec: Any) -> list[int]:
        """Queue ``n`` tiny experiments through ``kdq enqueue``; their ids."""
        before = {e.id for e in self.exps()}
        for _ in range(n):
            self._specs += 1
            path = self.tmp / f"spec{self._specs}.toml"
            path.write_text(spec_text(f"tiny{self._specs}", seed=self._specs, **spec))
            self.cli("enqueue", path)
        return sorted({e.id for e in self.exps()} - before)

    # ------------------------------------------------------------ the store

    def exps(self) -> list[Experiment]:
        return self.store.list()

    def get(self, exp_id: int) -> Experiment:
        return self.store.get(exp_id)

    def wait(self, predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.05):
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = predicate()
            if value:
                return value
            if (
                self.worker is not None
                and self.worker.poll() is not None
                and self.worker.returncode not in (0, -9)
            ):
                raise AssertionError(
                    f"the worker died (exit {self.worker.returncode}) waiting for {what}\n{self.report()}"
                )
            time.sleep(every)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{self.report()}")

    def wait_stage(self, exp_id: int, stage: Stage, timeout: float = 120) -> None:
        self.wait(
            lambda: self.get(exp_id).stage is stage, timeout, f"experiment {exp_id} in {stage}", every=0.02
        )

    def wait_mark(self, stage: str, timeout: float = 120) -> None:
        self.wait(
            lambda: (self.marks / stage).exists(), timeout, f"the worker paused inside {stage}", every=0.02
        )

    def wait_finished(self, timeout: float = 180) -> list[Experiment]:
        self.wait(
            lambda: all(e.stage in TERMINAL for e in self.exps()),
            timeout,
            "every experiment finished",
            every=0.2,
        )
        return self.exps()

    def report(self) -> str:
        lines = []
        for e in self.exps():
            lines.append(f"{e.id} {e.name} {e.stage} attempt={e.attempt} error={(e.error or '')[:300]}")
            lines += [f"    {ev['kind']}: {ev['message'][:200]}" for ev in self.store.events(e.id)]
        lines.append(
            f"server submissions: {[(s.attempt, s.status, s.score) for s in self.server.course.submissions]}"
        )
        log = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(lines) + "\n--- worker log (tail)\n" + log[-4000:]

    # ------------------------------------------------------------ the end state

    def check_delivered(self, ids: list[int], ranks: bool = True) -> None:
        """Every experiment done, submitted exactly once, its validation, score and artifacts kept."""
        subs = self.server.course.submissions
        assert len(subs) == len(ids), (
            f"the server received {len(subs)} submissions for {len(ids)} experiments\n{self.report()}"
        )
        by_attempt = {s.attempt: s for s in subs}
        for exp_id in ids:
            exp = self.get(exp_id)
            assert exp.stage is Stage.DONE, self.report()
            assert exp.attempt == 1 and exp.error is None
            assert exp.val_f1 is not None and 0 <= exp.val_f1 <= 1
            assert exp.metrics and exp.metrics["val_f1"] == exp.val_f1 and "verify" in exp.metrics
            model = Path(exp.artifacts) / "model.pt"
            assert model.is_file() and (Path(exp.artifacts) / "metrics.json").is_file()
            sub = by_attempt[exp.server_attempt]
            assert sub.status == "successful" and exp.server_score == pytest.approx(sub.score)
            assert sub.size_mb == pytest.approx(model.stat().st_size / 2**20, abs=1e-3), (
                "another file was sent"
            )
            live = exp.server_attempt == max(self.get(i).server_attempt for i in ids)
            assert (exp.server_rank is not None) is live or not ranks, "only the live submission has a rank"
            rows = list(
                self.store.db.query(
                    "select attempt, state from submissions where exp_id = ? and attempt is not null",
                    [exp_id],
                )
            )
            assert rows == [{"attempt": exp.server_attempt, "state": "successful"}], rows
            launches = [e for e in self.store.events(exp_id) if e["message"].startswith("launched run")]
            assert len(launches) <= 1, "launched twice"
        assert len({self.get(i).server_attempt for i in ids}) == len(ids)
        log = self.log.read_text(errors="replace")
        for bad in ("Traceback", "step crashed", "scheduler_crashed", "database is locked"):
            assert bad not in log, f"{bad!r} in the worker log\n{log[-3000:]}"

    def place(
        self,
        model: Path,
        *,
        stage: Stage = Stage.READY,
        val_f1: float = 0.5,
        policy: str = "always",
        name: str | None = None,
    ) -> int:
        """An experiment moved along the pipeline to ``stage`` with ``model`` as its artifact (no training)"""
        import shutil

        from kdq.spec import ExperimentSpec

        self._specs += 1
        spec = ExperimentSpec.model_validate(
            {
                "name": name or f"placed{self._specs}",
                "submit": {"policy": policy},
                "train": {"seed": 1000 + self._specs},
            }
        )
        [exp_id] = self.store.add([(None, spec)], force=True)
        folder = self.settings.artifacts_dir / str(exp_id)
        folder.mkdir(parents=True)
        shutil.copy(model, folder / "model.pt")
        (folder / "metrics.json").write_text(json.dumps({"val_f1": val_f1}))
        current = Stage.QUEUED
        for nxt in (Stage.LAUNCHING, Stage.TRAINING, Stage.FETCHING, Stage.VALIDATING, Stage.READY):
            fields: dict[str, Any] = {"artifacts": str(folder)} if nxt is Stage.VALIDATING else {}
            if nxt is Stage.READY:
                fields.update(val_f1=val_f1, metrics={"val_f1": val_f1, "verify": {"placed": True}})
            assert self.store.move(exp_id, current, nxt, **fields)
            current = nxt
            if nxt is stage:
                break
        return exp_id


@pytest.fixture
def overnight(settings, dataset, test_set, tmp_path, monkeypatch):
    """``overnight(**server_options)`` → an ``Overnight`` with a started stand-in; all stopped afterwards."""
    import torch

    from kdq.course.fake_server import FakeServer

    torch.set_num_threads(1)
    made: list[Overnight] = []
    servers: list = []

    def make(
        token: str | None = None, extra_env: dict[str, str] | None = None, **server_options
    ) -> Overnight:
        token = token or course_token()
        options = {
            "submit_interval_s": SUBMIT_INTERVAL_S,
            "status_interval_s": STATUS_INTERVAL_S,
            **server_options,
        }
        server = FakeServer(teams={TEAM: token}, data_dir=test_set, **options).start()
        servers.append(server)
        h = Overnight(settings, tmp_path, server, token, monkeypatch, extra_env or {})
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A valid TorchScript classifier (fp32, [B,10]) for experiments placed straight in ``ready``."""
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = torch.nn.Linear(3, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(x.mean(dim=(2, 3)))

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "tiny.pt"
    torch.jit.save(torch.jit.script(Tiny().eval()), str(path))
    return path
