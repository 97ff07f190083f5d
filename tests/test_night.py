"""The night's numbers from the database: attempts from stage events, the queue's end, kdq status --json."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kdq.cli.main import app
from kdq.night import Night
from kdq.spec import ExperimentSpec

NOW = 1_000_000.0


def _add(store, name, stage, events, backend="modal", epochs=10, progress=None, metrics=None, gpu="H100"):
    spec = ExperimentSpec(
        name=name, backend={"kind": backend, "gpu": gpu, "timeout_min": 60}, train={"epochs": epochs}
    )
    (exp_id,) = store.add([(None, spec)], force=True)
    store.update(exp_id, stage=stage, progress=progress, metrics=metrics)
    with store.transaction() as db:
        db["events"].insert_all(
            {"exp_id": exp_id, "ts": NOW + ts, "kind": "stage", "stage": st, "message": ""}
            for ts, st in events
        )
    return exp_id


@pytest.fixture
def night(store):
    finished = [(-7200, "launching"), (-7100, "training"), (-3600, "fetching"), (-3500, "ready")]
    done = _add(store, "done", "done", finished, metrics={"epochs_run": 10})  # 360 s per epoch
    progress = {"epoch": 4, "epochs": 10, "phase": "training", "epoch_s": 300.0, "updated_at": NOW}
    running = _add(
        store, "running", "training", [(-1800, "launching"), (-1700, "training")], progress=progress
    )
    queued = _add(store, "queued", "queued", [], epochs=5)
    local = _add(store, "local", "done", [(-600, "launching"), (0, "fetching")], backend="local")
    return {"done": done, "running": running, "queued": queued, "local": local}


def test_eta_and_cost_per_experiment_and_for_the_night(settings, store, night):
    n = Night.read(store, settings, now=NOW)
    run = n.etas[night["running"]]
    assert (run.elapsed_s, run.remaining_s, run.cell()) == (1800.0, 1800.0, "4/10 30m+30m")
    assert night["done"] not in n.etas and night["queued"] not in n.etas  # only trainings have one
    assert n.costs[night["done"]].dollars == pytest.approx(3.95)  # an hour of H100
    assert n.costs[night["running"]].dollars == pytest.approx(3.95 / 2)
    # the running one may use backend.max_gpu_min (40 by default) in all: 10 minutes more
    assert n.costs[night["running"]].worst_case_dollars == pytest.approx(40 / 60 * 3.95)
    assert n.costs[night["local"]].dollars == 0.0
    # 8 Modal slots: the queued one (5 epochs x 360 s) starts now and ends before the running one
    assert n.empty_at == NOW + 1800.0 and n.waiting == 2
    t = n.totals
    assert t["gpu_hours"] == pytest.approx(1.5) and t["local_hours"] == pytest.approx(600 / 3600, abs=1e-4)
    assert t["dollars"] == pytest.approx(1.5 * 3.95, abs=0.01)
    assert t["worst_case_dollars"] == pytest.approx(3.95 + 2 * 40 / 60 * 3.95, abs=0.01)
    assert n.line().startswith("night: queue empty ~") and "(in 30m)" in n.line()
    assert "GPU 1.5 h $5.93, worst case $9.22  local 0.2 h" in n.line()


def test_one_slot_queues_them_and_a_price_setting_changes_dollars(settings, store, night, monkeypatch):
    from kdq.settings import Settings

    monkeypatch.setenv("KDQ_MODAL_MAX_RUNNING", "1")
    monkeypatch.setenv("KDQ_GPU_PRICE_PER_HOUR", "H100:2")
    n = Night.read(store, Settings(), now=NOW)
    assert n.empty_at == NOW + 1800.0 + 5 * 360.0
    assert n.costs[night["done"]].dollars == pytest.approx(2.0)


def test_nothing_timed_yet_is_said_not_guessed(settings, store):
    _add(store, "queued", "queued", [])
    n = Night.read(store, settings, now=NOW)
    assert n.empty_at is None and "not known" in n.line()


def test_status_json_has_eta_and_cost(settings, store, night):
    r = CliRunner().invoke(app, ["status", "--json", "--all"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert set(data["eta"]) == {"queue_empty_at", "queue_empty_in_s", "waiting_for"}
    assert data["cost"]["dollars"] > 0 and data["cost"]["worst_case_dollars"] >= data["cost"]["dollars"]
    by_name = {e["name"]: e for e in data["experiments"]}
    assert by_name["running"]["eta"]["total"] == 10 and by_name["done"]["eta"] is None
    assert by_name["done"]["cost"]["gpu"] == "H100" and by_name["local"]["cost"]["gpu"] == "local"


def test_a_bad_price_is_a_one_line_settings_error(settings, store, monkeypatch):
    monkeypatch.setenv("KDQ_GPU_PRICE_PER_HOUR", "cheap")
    r = CliRunner().invoke(app, ["status"])
    assert r.exit_code == 2 and "KDQ_GPU_PRICE_PER_HOUR" in r.output and "Traceback" not in r.output


def test_a_spec_stored_by_an_older_kdq_is_still_costed(settings, store):
    """A database from before the cap was counted in minutes: its rows hold backend.max_gpu_hours."""
    exp_id = _add(store, "old", "training", [(-600, "launching")])
    with store.transaction() as db:
        spec = json.loads(db.execute("select spec from experiments where id = ?", [exp_id]).fetchone()[0])
        spec["backend"] = {"kind": "modal", "gpu": "H100", "timeout_min": 240, "max_gpu_hours": 0.5}
        db.execute("update experiments set spec = ? where id = ?", [json.dumps(spec), exp_id])
    n = Night.read(store, settings, now=NOW)
    assert n.costs[exp_id].worst_case_dollars == pytest.approx(0.5 * 3.95)
    assert CliRunner().invoke(app, ["status"]).exit_code == 0
