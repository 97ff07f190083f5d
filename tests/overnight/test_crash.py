"""The worker dies inside each stage in turn and is started again: nothing is lost, nothing is done twice.

SIGKILL (a crash, an OOM kill, a laptop lid) is tried inside every stage on its own. SIGTERM (`kill`,
systemd) and SIGINT (Ctrl-C) are sent once inside every stage of one experiment's life, the worker
restarted after each: each must end the worker cleanly (exit 0, heartbeat marked stopped).

How each stage is caught: ``launching``, ``fetching`` and ``validating`` take milliseconds, so the
worker runs through ``worker_entry.py``, which pauses inside the step right after its side effect
(the training process started, the files copied, the model verified) and before the stage change is
written; ``training`` lasts seconds on its own; ``submitting`` is held open by the stand-in stalling
its answer after it has recorded the upload; ``evaluating`` by the stand-in grading slowly.
"""

from __future__ import annotations

import json
import signal

import pytest

from kdq.stages import PIPELINE, Stage

pytestmark = pytest.mark.slow
STAGES = ["launching", "training", "fetching", "validating", "submitting", "evaluating"]
PAUSE_S = 3.0
PAUSES = {"launching": PAUSE_S, "fetching": PAUSE_S, "validating": PAUSE_S}
EVAL_DELAY_S = 4.0
ORDER = [str(s) for s in PIPELINE]


def harness(overnight, stage: str | None = None, eval_delay_s: float = EVAL_DELAY_S, stall_s: float = 12.0):
    """A stand-in that holds ``submitting`` / ``evaluating`` open (both when ``stage`` is None)."""
    h = overnight(eval_delay_s=eval_delay_s if stage in (None, "evaluating") else 0.0)
    if stage in (None, "submitting"):
        h.server.inject(
            "stall", seconds=stall_s, route="submit", when="after"
        )  # the upload lands, its answer hangs
    return h


def inside(h, exp_id: int, stage: str) -> bool:
    """Whether the worker is inside ``stage`` of ``exp_id`` now (a pause mark, the server, the store)."""
    if stage in PAUSES:
        return (h.marks / stage).exists()
    if stage == "submitting":
        return bool(h.server.course.submissions) and h.get(exp_id).stage is Stage.SUBMITTING
    return h.get(exp_id).stage is Stage(stage)


def passed(h, exp_id: int, stage: str) -> bool:
    current = str(h.get(exp_id).stage)
    return current in ORDER and ORDER.index(current) > ORDER.index(stage)


def check_one_training_run(h, exp_id: int) -> None:
    exp = h.get(exp_id)
    runs = list(h.settings.runs_dir.iterdir())
    assert [r.name for r in runs] == [exp.run_id], "a second run folder was made"
    launch = json.loads((runs[0] / "launch.json").read_text())
    assert launch["pid"] == exp.handle["pid"], "a second training process was started"
    assert "already being trained" not in (runs[0] / "log.txt").read_text()


@pytest.mark.parametrize("stage", STAGES)
def test_sigkill_inside_each_stage(overnight, stage):
    h = harness(overnight, stage)
    [exp_id] = h.enqueue(1, epochs=3 if stage == "training" else 2)
    h.start_worker(pauses=PAUSES)
    h.wait(lambda: inside(h, exp_id, stage), 180, f"the worker inside {stage}", every=0.02)
    assert h.signal(signal.SIGKILL) == -signal.SIGKILL
    assert h.get(exp_id).stage is Stage(stage), "the stage changed although the worker died inside it"
    h.start_worker()
    h.wait_finished(180)
    h.check_delivered([exp_id])
    check_one_training_run(h, exp_id)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_clean_stop_inside_every_stage_in_turn(overnight, sig):
    # Each stage must outlast a graceful stop of the one before and a restart: a long training
    # (epochs of 50 ms), a slow grader, a short stall (a graceful stop waits for the answer).
    h = harness(overnight, eval_delay_s=15.0, stall_s=4.0)
    # Pictures decoded at the grader's 224: a model trained this long is sure enough of itself that its
    # holdout F1 on pictures upsampled from 40 pixels and the grader's F1 on the files would part.
    [exp_id] = h.enqueue(1, epochs=250, train_extra="patience = 1000", decode_size=224)
    stopped_in = []
    h.start_worker(pauses=PAUSES)
    h.wait_worker_up()
    for stage in STAGES:
        h.wait(
            lambda stage=stage: inside(h, exp_id, stage) or passed(h, exp_id, stage),
            180,
            f"the worker inside {stage}",
            every=0.02,
        )
        if not inside(h, exp_id, stage):
            continue  # a graceful stop finished the step in hand and ran on past this stage
        stopped_in.append(stage)
        assert h.signal(sig) == 0, f"unclean exit on {sig.name} inside {stage}\n{h.report()}"
        beat = h.store.get_meta_json("worker")
        assert beat["pid"] == h.worker.pid and beat.get("stopped_at"), "the heartbeat does not say it stopped"
        assert json.loads(h.cli("status", "--json").stdout)["worker_alive"] is False
        h.start_worker(pauses=PAUSES)
        h.wait_worker_up()
    # A graceful stop lets the step in hand finish, and a step may run on into the next stage:
    # the stages that were reached and stopped in must still be most of them.
    assert {"launching", "training", "submitting", "evaluating"} <= set(stopped_in), stopped_in
    h.wait_finished(180)
    h.check_delivered([exp_id])
    check_one_training_run(h, exp_id)
