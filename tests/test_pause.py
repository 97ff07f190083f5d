"""A login this machine lacks pauses what needs it (kdq/pause.py): it waits, fails nothing, and holds no
launch slot that an experiment without that need could use."""

from kdq import pause, steps
from kdq.backends import RunStatus
from kdq.errors import CredentialError
from kdq.spec import ExperimentSpec
from kdq.stages import Stage


class Backend:
    """Launches anything but a Hub teacher's run while no Hugging Face token is here."""

    def __init__(self):
        self.token, self.launched, self.refused = False, [], 0

    def launch(self, run_id, spec, **kw):
        if spec.teacher.kind != "none" and not self.token:
            self.refused += 1
            raise CredentialError("huggingface", f"no Hugging Face token for {spec.teacher.model}")
        self.launched.append(spec.name)
        return {"run_id": run_id}

    def poll(self, handle):
        return RunStatus("running", {"epoch": 1, "epochs": 2})


def test_a_paused_experiment_holds_no_launch_slot_and_goes_on_once_the_login_works(settings, store):
    settings.local_max_running = 1
    backend = Backend()
    ctx = steps.Context(settings=settings, store=store, backend_factory=lambda kind, s: backend)
    hub = {"kind": "siglip", "model": "google/medsiglip-448"}
    gated, plain = store.add(
        [
            (None, ExperimentSpec(name="gated", teacher=hub)),
            (None, ExperimentSpec(name="plain", teacher={"kind": "none"}, distill={"loss": "ce"})),
        ]
    )
    for _ in range(3):  # the worker's turns: the older, gated one first
        for i in (gated, plain):
            steps.advance(ctx, i)
    assert "huggingface" in pause.active(store)
    assert store.get(gated).stage is Stage.QUEUED  # waits in line, not in a launch slot; nothing failed
    assert store.get(plain).stage is Stage.TRAINING and backend.launched == ["plain"]  # it got the slot
    backend.token = True
    pause.clear(store, ["huggingface"])  # `kdq doctor` passes now
    steps.advance(ctx, gated)  # the slot is still taken: the gated one waits its turn
    assert store.get(gated).stage is Stage.QUEUED
    store.move(plain, Stage.TRAINING, Stage.CANCELLED)
    steps.advance(ctx, gated)
    steps.advance(ctx, gated)
    assert store.get(gated).stage is Stage.TRAINING and not pause.active(store)


def test_the_experiments_waiting_for_a_login_try_it_once_a_minute_between_them(settings, store):
    """Each waiting experiment trying its launch every minute put two stage changes a minute per
    experiment into the worker log: one try a minute for the login, the others wait quietly."""
    settings.local_max_running = 3
    backend = Backend()
    ctx = steps.Context(settings=settings, store=store, backend_factory=lambda kind, s: backend)
    hub = {"kind": "siglip", "model": "google/medsiglip-448"}
    ids = store.add(
        [(None, ExperimentSpec(name=f"gated-{k}", teacher=hub, train={"seed": k})) for k in range(3)]
    )
    for _ in range(6):
        for i in ids:
            steps.advance(ctx, i)
    assert backend.refused == 3  # the three that were launching when the pause began; none since
    assert [store.get(i).stage for i in ids] == [Stage.QUEUED] * 3
    stages = [e for i in ids for e in store.events(i) if e["kind"] == "stage"]
    assert len(stages) == 6  # queued → launching → queued, once each
