"""A search end to end: a real worker, the local backend, generated data, the tiny student; the worker is
SIGKILLed in the middle and restarted; the search still ends with every trial once."""

from __future__ import annotations

import json
import signal

import pytest

from kdq.search.study import load_study
from kdq.stages import TERMINAL, Stage

from .conftest import spec_text

pytestmark = pytest.mark.slow

TRIALS, PARALLEL = 12, 2
SEARCH = f"""
[search]
trials = {TRIALS}
parallel = {PARALLEL}
objective = "holdout_f1"
pruner = "successive_halving"
[search.space]
"train.lr" = {{ low = 1e-4, high = 1e-1, log = true }}
"distill.label_smoothing" = {{ low = 0.0, high = 0.2 }}
"""


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def training_intervals(h, exp_id: int) -> list[tuple[float, float]]:
    """From launching to the stage after training, as the store saw it (what the launch gate counts)."""
    out, since = [], None
    for e in h.store.events(exp_id):
        if e["kind"] != "stage":
            continue
        if e["stage"] == "launching":
            since = e["ts"]
        elif since is not None and e["stage"] != "training":
            out.append((since, e["ts"]))
            since = None
    return out


def test_a_search_survives_a_sigkill_and_ends_with_every_trial_once(overnight):
    h = overnight(extra_env={"KDQ_LOCAL_MAX_RUNNING": str(PARALLEL)})
    path = h.tmp / "search.toml"
    path.write_text(spec_text("tiny-search", policy="never", epochs=6) + SEARCH)
    h.cli("enqueue", path)
    assert len(h.exps()) == PARALLEL

    h.start_worker()
    h.wait(
        lambda: sum(e.stage in TERMINAL for e in h.exps()) >= 3 and len(h.exps()) >= 4,
        300,
        "three trials to end",
        every=0.1,
    )
    assert h.signal(signal.SIGKILL) == -9
    h.start_worker()
    h.wait(
        lambda: len(h.exps()) == TRIALS and all(e.stage in TERMINAL for e in h.exps()),
        400,
        f"all {TRIALS} trials to end",
        every=0.2,
    )
    h.stop_worker()

    exps = h.exps()
    assert sorted(e.trial for e in exps) == list(range(TRIALS)), h.report()
    assert {e.stage for e in exps} <= {Stage.DONE, Stage.PRUNED}, h.report()
    status = json.loads(h.cli("search", "status", "--json").stdout)
    [s] = status
    assert s["made"] == TRIALS and s["by_state"]["complete"] + s["by_state"]["pruned"] == TRIALS
    assert s["by_state"]["running"] == 0 and s["by_state"]["fail"] == 0
    study = load_study(h.settings.root, "tiny-search")
    assert len(study.get_trials()) == TRIALS  # nothing asked twice, nothing lost
    lrs = {t.params["train.lr"] for t in study.get_trials()}
    assert lrs == {e.spec.train.lr for e in exps} and len(lrs) == TRIALS  # each trial its own guess
    runs = sorted(p.name for p in h.settings.runs_dir.iterdir())
    assert runs == sorted(e.run_id for e in exps)  # one run folder per trial: none trained twice
    intervals = [iv for e in exps for iv in training_intervals(h, e.id)]
    assert len(intervals) == TRIALS and most_at_once(intervals) <= PARALLEL
    log = h.log.read_text(errors="replace")
    for bad in ("Traceback", "step crashed", "search tick failed", "database is locked"):
        assert bad not in log, f"{bad!r} in the worker log\n{log[-3000:]}"
