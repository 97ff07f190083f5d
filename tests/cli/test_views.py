"""What people read: the status table at 80 columns, the same in a pipe, ``--watch`` on a short screen."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from cli_helpers import LONG_ERROR, fill, in_terminal, kdq_env, row
from typer.testing import CliRunner

from kdq.cli import views
from kdq.cli.main import app
from kdq.cli.status import RESULT_COLUMNS

runner = CliRunner()


@pytest.fixture
def morning(store):
    return fill(store)


def test_status_at_80_columns_gives_the_width_to_name_and_stage(settings, morning):
    out = in_terminal(["status"], kdq_env(settings.root), cols=80, rows=40)
    lines = out.splitlines()
    assert max(map(len, lines)) <= 80, out
    header = next(line for line in lines if line.startswith("id "))
    assert header.split() == ["id", "name", "stage", "epoch", "val", "F1", "server", "updated"]  # one line
    assert "backend" not in out and "teacher F1" not in out  # always local, no teacher score: dropped
    for whole in ("evaluating", "embed-logit-efficientnet", "hinton-shufflenet-v2-x1.5", "dkd-mobilenetv3"):
        assert any(whole in line for line in lines), (whole, out)
    assert "7.912 #3" in out  # score and rank, rounded
    assert "teacher" in out and "22/60" in out  # the phase, not a frozen 0/60
    assert all(line.startswith("11 failed: ") for line in lines if "CUDA" in line)  # under the table
    assert " ".join(out.split()).count("11 failed: training exited with code 1: CUDA out of memory.") == 1
    assert "lower train.batch_size or data.decode_size, then kdq retry 11" in " ".join(out.split())
    assert "… 1 older (kdq status --all)" in out


def test_piped_status_is_full_width_tab_separated(settings, morning):
    r = runner.invoke(app, ["status"])
    assert r.exit_code == 0, r.output
    rows = [line.split("\t") for line in r.stdout.splitlines() if "\t" in line]
    assert rows[0][:3] == ["id", "name", "stage"] and rows[0][-1] == "error"
    by_name = {row[1]: row for row in rows[1:]}
    assert by_name["hinton-sweep[temperature=4.0,alpha=0.3]"][2] == "done"  # grep finds it whole
    assert by_name["dkd-mobilenetv3-large-long"][-1] == LONG_ERROR
    assert all(len(row) == len(rows[0]) for row in rows)


def test_the_live_submission_stays_on_screen_and_older_ones_are_counted(settings, store):
    rows = [row("live-one", "done", 60, 0.8, server_score=7.5, server_rank=1, server_attempt=4)]
    rows += [row(f"later-{i}", "done", 60, 0.5) for i in range(14)]
    fill(store, rows)
    shown, queued, older = views.pick(store.list(), show_all=False)
    assert "live-one" in [e.name for e in shown]
    assert (queued, older) == (0, 15 - len(shown))
    assert len(shown) == views.RECENT_SHOWN + 1 and older == 4
    r = runner.invoke(app, ["status"])
    assert "… 4 older (kdq status --all)" in r.stdout and "live-one" in r.stdout
    assert "older" not in runner.invoke(app, ["status", "--all"]).stdout


def test_the_glance_reads_whole_only_the_rows_it_shows(settings, store):
    """The outlines decide what is shown exactly as whole rows would; only those rows are then read."""
    rows = [row(f"done-{i}", "done", 60, 0.5) for i in range(14)]
    rows += [row("live-one", "done", 60, 0.8, server_score=7.5, server_rank=1, server_attempt=4)]
    rows += [row(f"queued-{i}", "queued", 0) for i in range(13)] + [row("run", "training", 5)]
    fill(store, rows)
    shown, queued, older = views.glance(store, show_all=False)
    whole = views.pick(store.list(), show_all=False)
    assert (shown, queued, older) == whole and (queued, older) == (3, 5)
    assert all(type(e).__name__ == "Experiment" for e in shown)
    assert views.glance(store, show_all=True) == (store.list(), 0, 0)


def test_the_epoch_column_says_the_phase():
    def exp(progress):
        return SimpleNamespace(progress=progress)

    assert views.progress(exp({"epoch": 0, "epochs": 60, "phase": "data"})) == "data"
    assert views.progress(exp({"epoch": 0, "epochs": 60, "phase": "teacher"})) == "teacher"
    assert views.progress(exp({"epoch": 7, "epochs": 60, "phase": "training"})) == "7/60"
    assert views.progress(exp({"epoch": 60, "epochs": 60, "phase": "export"})) == "export"
    assert views.progress(exp(None)) == ""


def test_watch_on_a_short_screen_keeps_the_newest_rows(settings, store):
    rows = [row(f"old-{i}", "done", 60, 0.5) for i in range(8)]
    rows += [row(f"run-{i}-hinton-sweep[temperature=4.0,alpha=0.3]", "training", i) for i in range(30)]
    ids = fill(store, rows)  # names that wrap onto two lines each
    env = kdq_env(settings.root)
    out = in_terminal(["status", "--watch"], env, cols=80, rows=24, until="older (kdq status --all)")
    # Live redraws in place: with the cursor moves stripped, a frame's first line follows the last one's.
    frames = ["home: " + f for f in out.split("home: ")[1:]]
    frame = frames[-1]  # the last refresh
    lines = frame.splitlines()
    assert max(len(line) for f in frames for line in f.splitlines()) <= 80
    assert len(lines) <= 24, frame
    assert "run-29-" in frame and str(ids[-1]) in frame  # the newest is on screen
    assert "old-0" not in frame and "older (kdq status --all)" in frame


def test_results_piped_are_tab_separated_and_rounded_on_a_terminal(settings, morning):
    r = runner.invoke(app, ["results"])
    rows = [line.split("\t") for line in r.stdout.splitlines()]
    assert rows[0][:4] == ["id", "name", "stage", "val_f1"] and len(rows) == 14
    assert any(row[3] == "0.8012" for row in rows)  # piped: the full value
    out = in_terminal(["results"], kdq_env(settings.root), cols=80)
    assert max(map(len, out.splitlines())) <= 80 and "0.801 " in out and "0.8012" not in out


def test_the_readme_sample_is_what_kdq_prints_at_80_columns(settings, store):
    from pathlib import Path

    from cli_helpers import normalized, readme_morning

    readme_morning(store)
    printed = normalized(in_terminal(["status"], kdq_env(settings.root), cols=80, rows=40))
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    block = readme.split("## What `kdq status` looks like", 1)[1].split("```\n", 2)[1]
    strip = "\n".join(line.rstrip() for line in printed.strip("\n").splitlines())
    assert block.rstrip("\n") == strip, (
        "README.md's sample is stale: python tests/cli/cli_helpers.py prints it"
    )


def test_expected_scores_do_not_squeeze_the_name_out_at_80_columns(settings, store):
    metrics = {"val_f1": 0.81, "holdout_f1": 0.8, "holdout_f1_ci": [0.7, 0.9], "model_mb": 4.5}
    rows = [
        row(f"hinton-shufflenet-{i}", "done", 60, 0.81, metrics=metrics, teacher_f1=0.117) for i in range(3)
    ]
    rows[0].update(server_score=1.916, server_rank=1)  # every column in use, as after the demo
    ids = fill(store, rows)
    out = in_terminal(["status"], kdq_env(settings.root), cols=80, rows=40)
    assert max(map(len, out.splitlines())) <= 80
    header = next(line for line in out.splitlines() if line.startswith("id "))
    assert header.split()[:2] == ["id", "name"] and "expected" in header, out
    assert "teacher" not in header  # optional columns go first (teacher, backend, updated), not the name
    assert "…" not in out and all(f"net-{i}" in out for i in range(3)) and ids  # wrapped, never cut
    piped = runner.invoke(app, ["status"]).stdout
    assert any("\t0.8" in line and "[" in line for line in piped.splitlines())  # piped: the interval, whole


@pytest.mark.parametrize(
    ("beat_s", "silent_s", "alive"), [(20.0, 40.0, True), (5.0, 25.0, True), (5.0, 40.0, False)]
)
def test_status_status_json_and_doctor_agree_when_the_worker_is_alive(
    settings, store, monkeypatch, beat_s, silent_s, alive
):
    """One rule, following KDQ_HEARTBEAT_S: six beats missed (30 s by default). A worker that beats every
    20 s and was heard 40 s ago lives."""
    import json
    import time

    from kdq.doctor import Env, check_worker
    from kdq.settings import Settings

    monkeypatch.setenv("KDQ_HEARTBEAT_S", str(beat_s))
    store.set_meta("worker", {"pid": 1, "host": "h", "started_at": 0, "ts": time.time() - silent_s})
    text = runner.invoke(app, ["status"]).stdout
    assert ("worker: alive" in text) is alive, text
    assert json.loads(runner.invoke(app, ["status", "--json"]).stdout)["worker_alive"] is alive
    assert check_worker(Env(Settings())).ok is alive


def test_a_paused_queue_is_one_line_of_status_and_in_its_json(settings, store):
    import json

    from kdq import pause

    fill(store, [row("waits", "launching")])
    pause.record(store, "modal", "Modal has no valid credentials: run `modal token new`")
    out = runner.invoke(app, ["status"]).stdout
    [line] = [x for x in out.splitlines() if x.startswith("paused")]
    assert "Modal" in line and "modal token new" in line and "kdq doctor" in line
    data = json.loads(runner.invoke(app, ["status", "--json"]).stdout)
    assert "modal token new" in data["paused"]["modal"]["message"]


def test_status_at_80x24_keeps_one_line_per_experiment_and_the_rows_that_matter(settings, store):
    """Sweep and search names shorten to the part that differs instead of wrapping; optional columns go
    before the name is crushed; under --watch only finished rows hide, never a queued one or the live
    submission; the first line names the home."""
    metrics = {"val_f1": 0.81, "holdout_f1": 0.8, "holdout_f1_ci": [0.7, 0.9], "model_mb": 4.5}
    live = row("hinton-mnv3-local[temperature=2.0,alpha=0.1]", "done", 6, 0.8, metrics=metrics)
    live.update(server_score=3.569, server_rank=1, server_attempt=4, teacher_f1=0.4)
    rows = [live]
    rows += [
        row(f"hinton-mnv3-local[temperature={t}.0,alpha=0.{a}]", "done", 6, 0.7)
        for t in (4, 8)
        for a in (1, 3)
    ]
    rows += [row(f"tiny-search#{k}", "done", 6, 0.6) for k in range(12)]
    rows += [row("hinton-mnv3-local[temperature=8.0,alpha=0.5]", "training", 3, phase="training")]
    rows += [row(f"queued-long-name-number-{k}[lr=0.001]", "queued") for k in range(2)]
    ids = fill(store, rows)
    env = kdq_env(settings.root)
    for args, until in ((["status"], None), (["status", "--watch"], "(kdq status --all)")):
        out = in_terminal(args, env, cols=80, rows=24, until=until)
        frame = "home: " + out.split("home: ")[-1]
        lines = frame.splitlines()
        assert max(map(len, lines)) <= 80, frame
        assert str(settings.root.parent.name) in lines[0] and "home" in lines[0], lines[0]
        header = next(line for line in lines if line.startswith("id "))
        assert "updated" in header.split() or "updated" not in frame, header
        table = [line for line in lines if line[:3].strip().isdigit()]
        assert all(len(line.split()) >= 3 for line in table), frame  # no row wrapped onto a second line
        assert "[T=8,a=0.5]" in frame and "[T=2,a=0.1]" in frame, frame  # the part that differs
        shown = {int(line.split()[0]) for line in table}
        assert {ids[0], ids[-1], ids[-2], ids[-3]} <= shown, frame  # live submission, training, queued
        if until:
            assert len(lines) <= 24, frame
            assert "more queued" not in frame and "older (kdq status --all)" in frame


def test_a_run_that_asked_for_pretrained_weights_and_trained_from_scratch_says_so(settings, store):
    """The weights failed to load (no internet, a Hub hiccup): status, show and compare say the run is
    a scratch one, not only its log."""
    import json

    from kdq.spec import ExperimentSpec

    spec = ExperimentSpec(name="mnv3", student={"name": "mobilenet_v3_small", "pretrained": True})
    a, b = store.add([(None, spec), (None, spec.model_copy(update={"name": "ok"}))], force=True)
    with store.transaction() as db:
        for i, loaded in ((a, False), (b, True)):
            metrics = json.dumps({"val_f1": 0.5, "pretrained_loaded": loaded})
            db.execute(
                "update experiments set stage = 'done', val_f1 = 0.5, metrics = ? where id = ?", [metrics, i]
            )
    status = runner.invoke(app, ["status"]).stdout
    assert f"{a} trained from scratch" in status and f"{b} trained from scratch" not in status
    assert "from scratch" in runner.invoke(app, ["show", str(a)]).stdout
    assert "from scratch" not in runner.invoke(app, ["show", str(b)]).stdout
    compared = json.loads(runner.invoke(app, ["compare", str(a), str(b), "--json"]).stdout)
    assert compared["metrics"]["pretrained_loaded"] == [False, True]
    from kdq.report import experiment_data

    assert (
        experiment_data(store.get(a), [])["from_scratch"]
        and not experiment_data(store.get(b), [])["from_scratch"]
    )


def test_a_kdq_model_has_no_pretrained_weights_so_it_is_never_called_a_scratch_run(settings, store):
    """tiny_cnn (the demo's student) starts from scratch by design, whatever student.pretrained says."""
    import json

    from kdq.spec import ExperimentSpec

    [a] = store.add([(None, ExperimentSpec(name="tiny", student={"library": "kdq", "name": "tiny_cnn"}))])
    metrics = json.dumps({"val_f1": 0.5, "pretrained_loaded": False})
    with store.transaction() as db:
        db.execute(
            "update experiments set stage = 'done', val_f1 = 0.5, metrics = ? where id = ?", [metrics, a]
        )
    assert store.get(a).spec.student.pretrained  # the default
    assert "from scratch" not in runner.invoke(app, ["status"]).stdout
    assert not store.get(a).from_scratch


def test_results_at_80_columns_keep_the_id_and_the_name(settings, store):
    """`kdq results` on an 80-column terminal showed every column crushed (`sta…`, `va…`, `0.…`) and no
    id or name at all: optional columns go first, as in kdq status."""
    metrics = {
        "val_f1": 0.81,
        "val_acc": 0.8,
        "holdout_f1": 0.8,
        "holdout_f1_ci": [0.7, 0.9],
        "model_mb": 4.5,
    }
    rows = [row(f"my-hinton-tiny[lr={lr}]", "done", 3, 0.81, metrics=metrics) for lr in (0.003, 0.01)]
    rows[0].update(server_score=1.44, server_rank=1, teacher_f1=0.5)
    fill(store, rows)
    out = in_terminal(["results"], kdq_env(settings.root), cols=80, rows=24)
    lines = out.splitlines()
    assert max(map(len, lines)) <= 80 and "…" not in out, out
    header = next(line for line in lines if line.lstrip().startswith("id "))
    assert header.split()[:5] == ["id", "name", "stage", "val", "F1"], out
    assert "expected" in header and "server" in header, out  # the numbers that decide
    assert all(f"my-hinton-tiny[lr={lr}]" in out for lr in (0.003, 0.01)) and "1.440" in out, out
    piped = runner.invoke(app, ["results"]).stdout.splitlines()[0].split("\t")
    assert piped == list(RESULT_COLUMNS)  # piped: every column, under its own name
