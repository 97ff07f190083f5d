"""The experiment commands, in-process through typer's CliRunner."""

import json

import pytest
from typer.testing import CliRunner

from kdq.cli.main import app
from kdq.stages import Stage
from kdq.store import Store

runner = CliRunner()


def kdq(*args):
    return runner.invoke(app, list(map(str, args)), catch_exceptions=False)


@pytest.fixture
def specs(settings, hw3, tmp_path):  # hw3: the specs' dataset, which enqueue checks
    (tmp_path / "sweep.toml").write_text(
        '[submit]\npolicy = "never"\n[sweep]\n"train.lr" = [0.001, 0.003, 0.01]\n'
    )
    (tmp_path / "one.toml").write_text("[train]\nepochs = 3\n")
    (tmp_path / "bad.toml").write_text("[train]\nepochs = 0\n")
    return tmp_path


def test_enqueue_sweep_queues_three(settings, specs):
    r = kdq("enqueue", specs / "sweep.toml", "--json")
    assert r.exit_code == 0, r.output
    assert [x["name"] for x in json.loads(r.stdout)] == [f"sweep[lr={v}]" for v in ("0.001", "0.003", "0.01")]
    with Store.open(settings) as store:
        assert [e.stage for e in store.list()] == [Stage.QUEUED] * 3


def test_batch_with_one_invalid_spec_queues_nothing(settings, specs):
    r = kdq("enqueue", specs / "sweep.toml", specs / "bad.toml", specs / "one.toml")
    assert r.exit_code == 1
    assert f"{specs / 'bad.toml'}: train.epochs = 0: Input should be greater than or equal to 1" in r.stderr
    assert "nothing was queued" in r.stderr
    with Store.open(settings) as store:
        assert store.list() == []


def test_globs_set_dry_run_and_force(settings, specs):
    r = kdq("enqueue", str(specs / "s*.toml"), "--set", "train.epochs=7", "--dry-run", "--json")
    assert r.exit_code == 0 and len(json.loads(r.stdout)) == 3
    with Store.open(settings) as store:
        assert store.list() == []
    assert kdq("enqueue", specs / "one.toml", "--set", "train.epochs=7").exit_code == 0
    again = kdq("enqueue", specs / "one.toml", "--set", "train.epochs=7")
    assert again.exit_code == 1 and "already experiment 1" in again.stderr and "--force" in again.stderr
    assert kdq("enqueue", specs / "one.toml", "--set", "train.epochs=7", "--force").exit_code == 0
    with Store.open(settings) as store:
        assert [e.spec.train.epochs for e in store.list()] == [7, 7]


def test_no_matching_glob_is_an_error(settings, specs):
    r = kdq("enqueue", str(specs / "nothing*.toml"))
    assert r.exit_code == 1 and "no file matches" in r.stderr


def test_status_show_cancel_retry(settings, specs):
    kdq("enqueue", specs / "one.toml")
    status = json.loads(kdq("status", "--json").stdout)
    assert status["worker_alive"] is False and status["counts"] == {"queued": 1}
    assert status["course_server"] is None  # not contacted yet
    table = kdq("status").stdout
    assert "not running" in table and "one" in table
    shown = json.loads(kdq("show", 1, "--json").stdout)
    assert shown["spec"]["train"]["epochs"] == 3 and shown["timeline"][0]["kind"] == "enqueued"
    assert "timeline" in kdq("show", 1).stdout
    assert kdq("cancel", 1).stdout.strip() == "1: cancelled"
    assert kdq("retry", 1).stdout.strip() == "1: queued again (attempt 2)"
    r = kdq("retry", 1)
    assert r.exit_code == 1 and "only cancelled, failed, pruned, skipped can be retried" in r.stderr
    r = kdq("show", 99)
    assert r.exit_code == 1 and "no experiment 99" in r.stderr


def test_results_json_csv_and_sort(settings, specs):
    kdq("enqueue", specs / "sweep.toml")
    with Store.open(settings) as store:
        for i, f1 in [(1, 0.5), (2, 0.7), (3, None)]:
            store.update(i, val_f1=f1, metrics={"val_acc": 0.6, "model_mb": 1.5})
    rows = json.loads(kdq("results", "--json").stdout)
    assert [r["id"] for r in rows] == [2, 1]
    csv = kdq("results", "--csv").stdout.splitlines()
    assert csv[0].startswith("id,name,stage,val_f1") and len(csv) == 3
    assert kdq("results", "--sort", "bogus").exit_code == 2  # a usage error (docs/cli-reference.md)


def test_submit_refuses_an_unvalidated_experiment(settings, specs):
    kdq("enqueue", specs / "one.toml")
    r = kdq("submit", 1)
    assert r.exit_code == 1 and "only a validated model" in r.stderr


def test_a_folder_is_one_line_and_nothing_is_queued(settings, specs):
    r = runner.invoke(app, ["enqueue", str(specs), str(specs / "one.toml")])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert f"error: {specs} is a folder: pass spec files or a glob, e.g. {specs / '*.toml'}" in r.stderr
    assert "nothing was queued" in r.stderr
    assert not settings.db_path.exists() or Store.open(settings).list() == []


def test_a_symlink_loop_in_a_glob_is_named_and_the_good_files_are_not_dropped(settings, specs):
    (specs / "bad.toml").unlink()
    (specs / "loop.toml").symlink_to(specs / "loop.toml")
    r = runner.invoke(app, ["enqueue", str(specs / "*.toml")])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert f"{specs / 'loop.toml'}: a symlink that leads nowhere (broken or a loop)" in r.stderr
    assert "nothing was queued" in r.stderr
    (specs / "loop.toml").unlink()
    r = kdq("enqueue", specs / "*.toml", "--json")
    assert [x["name"] for x in json.loads(r.stdout)][-1] == "sweep[lr=0.01]" and len(
        json.loads(r.stdout)
    ) == 4


@pytest.mark.parametrize("priority", [str(2**64), str(-(2**63) - 1)])
def test_a_priority_out_of_range_is_a_usage_error(settings, specs, priority):
    r = runner.invoke(app, ["enqueue", str(specs / "one.toml"), "--priority", priority])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "--priority" in r.output and "1000000" in r.output


def test_cancel_retry_and_submit_take_several_ids_and_json(settings, specs):
    kdq("enqueue", specs / "sweep.toml")
    r = kdq("cancel", 1, 2, "--json")
    assert [(x["id"], x["stage"], x["ok"]) for x in json.loads(r.stdout)] == [
        (1, "cancelled", True),
        (2, "cancelled", True),
    ]
    r = kdq("retry", 1, 3)
    assert r.exit_code == 1 and r.stdout.strip() == "1: queued again (attempt 2)"
    assert "error: 3: experiment 3 is queued" in r.stderr
    r = kdq("submit", 1, 2, "--json")
    assert r.exit_code == 1 and [x["ok"] for x in json.loads(r.stdout)] == [False, False]


def _training_with_a_process(settings, store, name="bg"):
    """An experiment in training whose local run is a live process holding the run lock (no worker)."""
    import subprocess
    import sys

    from kdq.spec import ExperimentSpec

    [exp_id] = store.add([(None, ExperimentSpec(name=name))])
    run_dir = settings.runs_dir / f"run-{exp_id}"
    run_dir.mkdir(parents=True)
    code = (
        f"from kdq.runfolder import hold_lock; import time; f = hold_lock({str(run_dir)!r}); time.sleep(120)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    from kdq import runfolder

    runfolder.write_json(run_dir / "launch.json", {"pid": proc.pid, "started_at": 0, "cmd": ["python"]})
    deadline = __import__("time").time() + 30
    from kdq.runfolder import is_running

    while not is_running(run_dir) and __import__("time").time() < deadline:
        __import__("time").sleep(0.05)
    assert store.move(exp_id, Stage.QUEUED, Stage.LAUNCHING)
    assert store.move(
        exp_id,
        Stage.LAUNCHING,
        Stage.TRAINING,
        handle={"run_dir": str(run_dir), "pid": proc.pid},
        run_id=f"run-{exp_id}",
    )
    return exp_id, proc


def test_cancel_with_no_worker_stops_the_local_run_itself(settings, store):
    exp_id, proc = _training_with_a_process(settings, store)
    try:
        r = kdq("cancel", exp_id)
        assert r.exit_code == 0, r.output
        assert f"no worker is running: stopped its training process (pid {proc.pid})" in r.stdout
        assert proc.wait(10) is not None  # it is gone
        assert "next `kdq worker`" in r.stdout
    finally:
        proc.kill()


def test_a_stopped_worker_says_which_local_runs_go_on(settings, store, monkeypatch):
    import jobs.worker

    exp_id, proc = _training_with_a_process(settings, store, name="long-d")
    monkeypatch.setattr(jobs.worker, "run", lambda s: None)  # as if Ctrl-C had just stopped it
    try:
        r = runner.invoke(app, ["worker", "--log-console"])
        assert r.exit_code == 0, r.output
        assert f"still training in the background: {exp_id} long-d (pid {proc.pid})" in r.stderr
        assert "the next `kdq worker` picks them up" in r.stderr
    finally:
        proc.kill()


def test_a_restarted_worker_forgets_the_stored_tick_so_new_settings_count(settings, store, monkeypatch):
    import time

    import jobs.worker
    from kdq.course.ledger import Ledger

    Ledger(store).set_next_tick(time.time() + 3600)  # worked out with the old KDQ_SUBMIT_INTERVAL_S
    seen = {}
    monkeypatch.setattr(jobs.worker, "run", lambda s: seen.setdefault("tick", Ledger(store).next_tick_at()))
    assert runner.invoke(app, ["worker", "--log-console"]).exit_code == 0
    assert seen == {"tick": None}


NO_TEACHER = '[teacher]\nkind = "none"\n[distill]\nloss = "ce"\n'


def test_a_local_spec_whose_dataset_is_missing_is_refused_at_enqueue(settings, synth_dataset, tmp_path):
    """One line naming the files, data.dataset and the fix, nothing queued; a Modal spec is not checked."""
    a, b, m = tmp_path / "a.toml", tmp_path / "b.toml", tmp_path / "m.toml"
    a.write_text(f'[data]\ndataset = "mine"\n{NO_TEACHER}')
    b.write_text(f'[data]\ndataset = "mine"\n{NO_TEACHER}[sweep]\n"train.lr" = [0.002, 0.01]\n')
    m.write_text(f'[data]\ndataset = "mine"\n{NO_TEACHER}[backend]\nkind = "modal"\n')
    r = runner.invoke(app, ["enqueue", str(a), str(b), str(m)])
    assert r.exit_code == 1 and "Traceback" not in r.output
    folder = settings.datasets_dir / "mine"
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert [e.split(": data.dataset")[0] for e in errors] == [f"error: {a}, {b}"]  # one problem, one line
    assert all(
        f"data.dataset = 'mine': no dataset at {folder}" in e and "kdq data synth" in e for e in errors
    )
    assert "nothing was queued" in r.stderr
    assert not settings.db_path.exists() or Store.open(settings).list() == []
    assert kdq("enqueue", m).exit_code == 0  # Modal: its data is on the Volume
    (folder / "1. Eczema").mkdir(parents=True)  # a folder without pictures is no dataset either
    r = runner.invoke(app, ["enqueue", str(a)])
    assert r.exit_code == 1 and "found no class folders with images" in r.stderr, r.stderr
    (folder / "1. Eczema").rmdir()
    folder.rmdir()
    folder.symlink_to(synth_dataset, target_is_directory=True)
    assert kdq("enqueue", a, b).exit_code == 0
    with Store.open(settings) as store:
        assert len(store.list()) == 4


def test_two_hundred_specs_without_their_dataset_are_one_line_not_two_hundred(settings, tmp_path):
    paths = [tmp_path / f"s{i:03d}.toml" for i in range(200)]
    for i, path in enumerate(paths):
        path.write_text(f"[train]\nseed = {i}\n{NO_TEACHER}")
    (tmp_path / "big.toml").write_text(f'[student]\nname = "no_such_net"\n{NO_TEACHER}')
    r = runner.invoke(app, ["enqueue", str(tmp_path / "*.toml")])
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.exit_code == 1 and len(errors) == 2, r.stderr  # the missing dataset; the unknown student
    [dataset] = [e for e in errors if "data.dataset" in e]
    assert dataset.startswith(f"error: {tmp_path / 'big.toml'}, {paths[0]}, {paths[1]} and 198 more: ")


@pytest.fixture
def hub(monkeypatch):
    """The Hub stand-in (tests/hf_hub.py) as huggingface_hub's endpoint, and a folder for the dataset."""
    import huggingface_hub.constants
    from hf_hub import serve

    with serve() as h:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", h.url)
        monkeypatch.setattr("huggingface_hub.get_token", lambda: None)  # no saved login on this machine
        yield h


def gated_specs(settings, tmp_path, n: int = 200) -> list:
    seeds = ", ".join(map(str, range(n)))
    (tmp_path / "gated.toml").write_text(f'[sweep]\n"train.seed" = [{seeds}]\n')  # medsiglip, local
    (tmp_path / "tiny.toml").write_text('[teacher]\nmodel = "tiny"\n')  # a stand-in: no check
    return [tmp_path / "gated.toml", tmp_path / "tiny.toml"]


@pytest.mark.parametrize(
    "token, said",
    [
        (None, "no Hugging Face token found: run `hf auth login` (or put HF_TOKEN=... in .env)"),
        ("GATED", "has not accepted the terms of google/medsiglip-448: open https://huggingface.co/google"),
        ("INVALID", "the Hugging Face token cannot see google/medsiglip-448"),
    ],
)
def test_a_gated_teacher_that_this_user_cannot_read_is_refused_at_enqueue(
    settings, hw3, tmp_path, hub, monkeypatch, token, said
):
    import hf_hub

    if token:
        monkeypatch.setenv("HF_TOKEN", getattr(hf_hub, token))
    r = runner.invoke(app, ["enqueue", *map(str, gated_specs(settings, tmp_path))])
    assert r.exit_code == 1 and "Traceback" not in r.output
    [line] = [line for line in r.stderr.splitlines() if line.startswith("error:")]  # 200 specs, one line
    assert line.startswith(f"error: {tmp_path / 'gated.toml'}: teacher.model = 'google/medsiglip-448': ")
    assert said in line and line.endswith("then enqueue it again")
    assert "nothing was queued" in r.stderr
    # one check for the one Hub teacher of 201 specs (huggingface_hub also fetches its agent list once a day)
    assert len([c for c in hub.calls if c.endswith("/auth-check")]) == 1
    assert not token or getattr(hf_hub, token) not in r.output


def test_a_readable_teacher_queues_with_one_call_and_an_unreachable_hub_only_warns(
    settings, hw3, tmp_path, hub, monkeypatch
):
    import huggingface_hub.constants
    from hf_hub import BUSY, GOOD

    monkeypatch.setenv("HF_TOKEN", GOOD)
    r = kdq("enqueue", *gated_specs(settings, tmp_path, n=50), "--json")
    assert r.exit_code == 0 and len(json.loads(r.stdout)) == 51 and "Hugging Face" not in r.stderr
    assert len([c for c in hub.calls if c.endswith("/auth-check")]) == 1
    monkeypatch.setenv("HF_TOKEN", BUSY)  # the Hub answers 503
    r = kdq("enqueue", tmp_path / "gated.toml", "--set", "train.epochs=3")
    assert r.exit_code == 0, r.output
    assert "warning: Hugging Face is busy or down (503) checking access to google/medsiglip-448" in r.stderr
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # offline
    r = kdq("enqueue", tmp_path / "gated.toml", "--set", "train.epochs=4")
    assert r.exit_code == 0 and "warning: could not reach huggingface.co" in r.stderr
    assert "queued without the check" in r.stderr
    with Store.open(settings) as store:
        assert len(store.list()) == 151


def test_best_epoch_is_shown_as_recorded_1_based_in_show_json_compare_and_the_report(settings, store):
    """Training records it 1-based (tests/train/test_loop.py); no view adds one again."""
    from kdq.compare import side_by_side
    from kdq.report import experiment_data
    from kdq.spec import ExperimentSpec

    [i] = store.add([(None, ExperimentSpec(name="best"))])
    store.update(i, metrics={"val_f1": 0.8, "best_epoch": 3, "epochs_run": 5})
    shown = kdq("show", i)
    cells = [line.replace("│", " ").split() for line in shown.stdout.splitlines() if "best_epoch" in line]
    assert shown.exit_code == 0 and cells == [["best_epoch", "3"]]
    assert json.loads(kdq("show", i, "--json").stdout)["metrics"]["best_epoch"] == 3
    assert side_by_side([store.get(i)])["best_epoch"] == [3]
    assert experiment_data(store.get(i), [], settings)["timings"]["best epoch"] == 3


def test_retry_of_a_trained_verified_model_keeps_it_and_names_the_way_forward(settings, store):
    from cli_helpers import fill, row

    [skipped, pruned] = fill(
        store,
        [
            {**row("trained", "skipped", 60, 0.81), "artifacts": "/a", "run_id": "x-e1-a1"},
            {**row("stopped-early", "pruned", 20, 0.5), "run_id": "x-e2-a1"},
        ],
    )
    r = kdq("retry", skipped)
    assert r.exit_code == 1
    line = " ".join(r.stderr.split())
    assert f"kdq submit {skipped}" in line and f"kdq retry {skipped} --fresh" in line, line
    exp = store.get(skipped)
    assert exp.stage is Stage.SKIPPED and exp.attempt == 1 and exp.artifacts == "/a"
    r = kdq("retry", pruned)  # not trained to the end: it resumes
    assert r.exit_code == 0 and "from run x-e2-a1's checkpoint" in r.stdout
    r = kdq("retry", skipped, "--fresh")
    assert r.exit_code == 0 and store.get(skipped).resume_from is None


def test_retry_and_cancel_take_ranges_failed_and_stage(settings, store):
    from cli_helpers import fill, row

    ids = fill(
        store, [row(f"f{i}", "failed", 3) for i in range(4)] + [row("q", "queued"), row("d", "done", 60)]
    )
    r = kdq("retry", "1-2", "--json")
    assert r.exit_code == 0 and [x["id"] for x in json.loads(r.stdout)] == [1, 2]
    r = kdq("retry", "--failed", "--json")
    assert r.exit_code == 0 and [x["id"] for x in json.loads(r.stdout)] == [3, 4]
    r = kdq("cancel", "--stage", "queued", "--json")
    assert r.exit_code == 0 and [x["id"] for x in json.loads(r.stdout)] == [1, 2, 3, 4, 5]
    assert all(store.get(i).stage is Stage.CANCELLED for i in ids[:5]) and store.get(6).stage is Stage.DONE
    for args in (["retry", "2-x"], ["retry", "5-3"], ["cancel"], ["retry", "--stage", "nonsense"]):
        r = kdq(*args)
        assert r.exit_code == 2 and "Traceback" not in r.output, (args, r.output)
    assert "1-6" in kdq("cancel").stderr


def test_submit_of_a_model_worse_than_the_live_one_asks_with_the_numbers(settings, store, monkeypatch):
    from cli_helpers import fill, row

    from kdq.course.ledger import Ledger

    good = {"val_f1": 0.9, "holdout_f1": 0.9, "holdout_f1_ci": [0.85, 0.95], "model_mb": 2.0}
    worse = {"val_f1": 0.5, "holdout_f1": 0.5, "holdout_f1_ci": [0.45, 0.55], "model_mb": 2.0}
    live, weak, strong = fill(
        store,
        [
            {**row("live", "done", 60, 0.9), "artifacts": "/a", "metrics": good},
            {**row("weak", "skipped", 60, 0.5), "artifacts": "/b", "metrics": worse},
            {**row("strong", "skipped", 60, 0.95), "artifacts": "/c", "metrics": good},
        ],
    )
    Ledger(store).open_submission(live, attempt=4, state="successful", score=8.7, rank=1)
    r = kdq("submit", weak)  # no terminal to ask on, no --yes
    assert r.exit_code == 2 and store.get(weak).stage is Stage.SKIPPED
    line = " ".join(r.stderr.split())
    assert "--yes" in line and "8.700" in line and "attempt #4" in line and f"{weak}" in line, line
    assert "4.958 [4.458, 5.458]" in line, line  # 10 x 0.5 - the size factor at 2 MiB (1/24)
    monkeypatch.setattr("kdq.cli.ask.interactive", lambda: True)
    r = runner.invoke(app, ["submit", str(weak)], input="n\n")
    assert r.exit_code == 1 and "8.700" in r.output and store.get(weak).stage is Stage.SKIPPED
    r = runner.invoke(app, ["submit", str(weak)], input="y\n")
    assert r.exit_code == 0 and store.get(weak).submit_requested
    monkeypatch.setattr("kdq.cli.ask.interactive", lambda: False)
    r = kdq("submit", strong)  # expected above the live one: nothing to ask
    assert r.exit_code == 0, r.output


def test_enqueue_and_dry_run_say_when_a_modal_spec_has_no_modal_login_or_hf_token(
    settings, tmp_path, monkeypatch
):
    for var in ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "HF_TOKEN", "KDQ_HF_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(tmp_path / "no-modal.toml"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no token saved by `hf auth login`
    spec = tmp_path / "m.toml"
    spec.write_text('name = "m"\n[teacher]\nmodel = "google/medsiglip-448"\n[backend]\nkind = "modal"\n')
    for args in (["enqueue", spec, "--dry-run"], ["enqueue", spec]):
        r = kdq(*args)
        assert r.exit_code == 0, r.output
        said = " ".join(r.stderr.split())
        assert "Modal: not logged in" in said and "modal token new" in said, said
        assert "no Hugging Face token" in said and "hf auth login" in said, said


def test_show_says_when_the_file_was_never_scored_as_the_grader_scores_it(settings, store):
    from kdq.spec import ExperimentSpec

    [i, j] = store.add(
        [(None, ExperimentSpec(name="unscored")), (None, ExperimentSpec(name="scored"))], force=True
    )
    store.update(i, metrics={"val_f1": 0.8, "holdout_files": ["1/a.jpg"], "grader_f1": None})
    store.update(j, metrics={"val_f1": 0.8, "holdout_files": ["1/a.jpg"], "grader_f1": 0.8})
    shown = " ".join(kdq("show", i).stdout.split())
    assert "the file was never scored on the holdout pictures" in shown and f"kdq submit {i}" in shown
    assert "never scored" not in kdq("show", j).stdout
