import multiprocessing as mp
import sqlite3

import pytest

from kdq.requests import DuplicateSpec
from kdq.spec import ExperimentSpec
from kdq.stages import Stage
from kdq.store import SCHEMA_VERSION, NotFound, Store, StoreError


def spec(name="x", **train):
    return ExperimentSpec(name=name, train=train)


def test_new_store_is_migrated_in_wal_mode(store):
    assert store.schema_version() == SCHEMA_VERSION
    assert store.db.execute("pragma journal_mode").fetchone()[0] == "wal"
    assert set(store.db.table_names()) >= {"experiments", "events", "submissions", "leaderboard", "meta"}
    assert len(store.instance) == 8


def test_reopening_keeps_instance_and_data(settings):
    with Store.open(settings) as a:
        ids = a.add([("f.toml", spec())])
        instance = a.instance
    with Store.open(settings) as b:
        assert b.instance == instance
        assert b.get(ids[0]).name == "x"


def test_add_is_all_or_nothing_and_refuses_duplicates(store):
    [first] = store.add([("a.toml", spec("a", lr=0.1))])
    with pytest.raises(DuplicateSpec, match=f"already experiment {first}"):
        store.add([("b.toml", spec("b", lr=0.2)), ("c.toml", spec("c", lr=0.1))])
    assert [e.name for e in store.list()] == ["a"]  # b was not half-queued
    ids = store.add([("c.toml", spec("c", lr=0.1))], force=True)
    assert store.get(ids[0]).stage is Stage.QUEUED


def test_duplicates_within_one_batch_are_refused(store):
    with pytest.raises(DuplicateSpec) as info:
        store.add([("a.toml", spec("a")), ("b.toml", spec("b"))])
    assert str(info.value) == "b: the same spec as a in this enqueue (use --force to queue both)"
    assert store.list() == []


def test_move_is_compare_and_set_and_logs_an_event(store):
    [i] = store.add([(None, spec())])
    assert store.move(i, Stage.QUEUED, Stage.LAUNCHING, run_id="r1")
    assert not store.move(i, Stage.QUEUED, Stage.LAUNCHING)  # somebody else moved it already
    exp = store.get(i)
    assert exp.stage is Stage.LAUNCHING and exp.run_id == "r1"
    assert [e["kind"] for e in store.events(i)] == ["enqueued", "stage"]


def test_illegal_move_raises(store):
    [i] = store.add([(None, spec())])
    with pytest.raises(ValueError, match="cannot move"):
        store.move(i, Stage.QUEUED, Stage.DONE)


def test_json_fields_round_trip(store):
    [i] = store.add([(None, spec())])
    store.update(i, handle={"pid": 1}, progress={"epoch": 2}, metrics={"val_f1": 0.5})
    exp = store.get(i)
    assert exp.handle == {"pid": 1} and exp.progress == {"epoch": 2} and exp.metrics == {"val_f1": 0.5}


def test_cancel_of_queued_is_immediate_and_of_training_is_a_request(store):
    a, b = store.add([(None, spec("a", lr=0.1)), (None, spec("b", lr=0.2))])
    assert store.request_cancel(a).stage is Stage.CANCELLED
    store.move(b, Stage.QUEUED, Stage.LAUNCHING)
    store.move(b, Stage.LAUNCHING, Stage.TRAINING)
    exp = store.request_cancel(b)
    assert exp.stage is Stage.TRAINING and exp.cancel_requested


def test_retry_makes_a_new_attempt_and_refuses_live_experiments(store):
    [i] = store.add([(None, spec())])
    with pytest.raises(ValueError, match="only"):
        store.retry(i)
    store.move(i, Stage.QUEUED, Stage.FAILED, error="boom", run_id="r")
    exp = store.retry(i)
    assert (exp.stage, exp.attempt, exp.error, exp.run_id) == (Stage.QUEUED, 2, None, None)


def test_submit_request_needs_a_validated_model(store):
    [i] = store.add([(None, spec())])
    with pytest.raises(ValueError, match="only a validated model"):
        store.request_submit(i)
    for src, dst in [
        ("queued", "launching"),
        ("launching", "training"),
        ("training", "fetching"),
        ("fetching", "validating"),
        ("validating", "ready"),
        ("ready", "done"),
    ]:
        store.move(i, Stage(src), Stage(dst), artifacts="/a")
    exp = store.request_submit(i)
    assert exp.stage is Stage.READY and exp.submit_requested


def test_get_unknown_raises(store):
    with pytest.raises(NotFound):
        store.get(42)


def test_newer_schema_is_refused(settings):
    with Store.open(settings) as s:
        s.set_meta("schema_version", str(SCHEMA_VERSION + 1))
    with pytest.raises(StoreError, match="newer kdq"):
        Store.open(settings)


def _hammer(db_path: str, worker: int, n: int) -> None:
    store = Store(db_path)
    for k in range(n):
        [i] = store.add([(None, ExperimentSpec(name=f"w{worker}-{k}", train={"seed": worker * 10_000 + k}))])
        store.move(i, Stage.QUEUED, Stage.LAUNCHING)
        store.update(i, progress={"k": k})
        store.event(i, "note", "hammer")
    store.close()


def test_concurrent_writers_never_see_database_locked(settings):
    Store.open(settings).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_hammer, args=(str(settings.db_path), w, 60)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    with Store.open(settings) as store:
        exps = store.list()
        assert len(exps) == 240
        assert all(e.stage is Stage.LAUNCHING and e.progress is not None for e in exps)
        assert store.db.execute("select count(*) from events").fetchone()[0] == 240 * 3


def test_database_is_a_plain_sqlite_file(settings, store):
    store.add([(None, spec())])
    conn = sqlite3.connect(settings.db_path)
    assert conn.execute("select count(*) from experiments").fetchone()[0] == 1


# ---------------------------------------------------------------- a damaged or missing database


def damaged(settings, how: str) -> None:
    with Store.open(settings) as s:
        s.add([(f"{i}.toml", spec(f"e{i}", seed=i)) for i in range(200)])
        s.db.execute("pragma wal_checkpoint(truncate)")
    data = settings.db_path.read_bytes()
    if how == "truncated":
        settings.db_path.write_bytes(data[: len(data) // 2])
    else:
        settings.db_path.write_bytes(b"this is not a database at all" * 200)


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_a_damaged_database_is_one_line_naming_the_file_and_the_fix(settings, how):
    damaged(settings, how)
    with pytest.raises(StoreError) as info:
        Store.open(settings)
    message = str(info.value)
    assert "\n" not in message
    assert str(settings.db_path) in message and "damaged" in message and "move it aside" in message


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_no_command_prints_a_traceback_for_a_damaged_database(settings, how):
    from typer.testing import CliRunner

    from kdq.cli.main import app

    damaged(settings, how)
    for args in (["status"], ["show", "1"], ["results"], ["cancel", "1"]):
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 1, (args, r.output)
        assert "Traceback" not in r.output and str(settings.db_path) in " ".join(r.stderr.split())


def test_a_home_with_runs_but_no_database_is_refused_unless_forced(settings):
    with Store.open(settings) as s:
        old_instance = s.instance
    (settings.artifacts_dir / f"{old_instance}-e1-a1").mkdir(parents=True)
    (settings.artifacts_dir / f"{old_instance}-e1-a1" / "model.pt").write_bytes(b"the old experiment 1")
    settings.db_path.unlink()
    for suffix in ("-wal", "-shm"):
        settings.db_path.with_name(settings.db_path.name + suffix).unlink(missing_ok=True)
    with pytest.raises(StoreError, match=r"artifacts but no kdq.db.*kdq worker --force") as info:
        Store.open(settings)
    assert "\n" not in str(info.value)
    assert not settings.db_path.exists()  # nothing half-done
    with Store.open(settings, force=True) as s:
        assert s.instance != old_instance  # so no new run id (nor artifacts folder) can be an old one


def test_discard_takes_back_experiments_still_queued_and_nothing_else(store):
    a, b = store.add([("a.toml", spec("a")), ("b.toml", spec("b", lr=0.1))])
    assert store.move(b, Stage.QUEUED, Stage.LAUNCHING, run_id="r1")
    assert store.discard([a, b]) == [a]  # b is the worker's already
    assert [e.id for e in store.list()] == [b]
    assert store.events(a) == []


def test_a_damaged_queue_db_is_rebuilt_and_enqueue_queues_once(settings, tiny_spec_file, dataset):
    from typer.testing import CliRunner

    from kdq.cli.main import app

    settings.root.mkdir(parents=True, exist_ok=True)
    settings.queue_path.write_bytes(b"not a database, only noise" * 100)
    r = CliRunner().invoke(app, ["enqueue", str(tiny_spec_file)])
    assert r.exit_code == 0, r.output
    with Store.open(settings) as s:
        assert [e.name for e in s.list()] == ["tiny"]
    assert list(settings.root.glob("queue.db.damaged-*")), "the damaged file is kept aside, not deleted"
    with sqlite3.connect(settings.queue_path) as conn:
        assert conn.execute("pragma quick_check").fetchone()[0] == "ok"


def test_enqueue_whose_nudge_fails_queues_nothing_and_says_so_in_one_line(
    settings, tiny_spec_file, dataset, monkeypatch
):
    from typer.testing import CliRunner

    from kdq import worker
    from kdq.cli.main import app

    def broken(ids, settings, scheduler=False):
        raise sqlite3.DatabaseError("database disk image is malformed")

    monkeypatch.setattr(worker, "nudge", broken)
    r = CliRunner().invoke(app, ["enqueue", str(tiny_spec_file)])
    assert r.exit_code == 1 and (r.exception is None or isinstance(r.exception, SystemExit)), r.output
    assert "nothing was queued" in r.stderr and str(settings.queue_path) in " ".join(r.stderr.split())
    assert "Traceback" not in r.output
    with Store.open(settings) as s:
        assert s.list() == []


def test_a_store_from_before_best_epoch_counted_from_one_is_migrated_once(settings):
    with Store.open(settings) as old:
        a, b = old.add([("a.toml", spec("a", lr=0.1)), ("b.toml", spec("b", lr=0.2))])
        old.update(a, metrics={"best_epoch": 2, "val_f1": 0.5})  # recorded 0-based: the third epoch
        old.set_meta("schema_version", "4")
    for _ in range(2):  # migrated once: opening again changes nothing
        with Store.open(settings) as s:
            assert s.schema_version() == SCHEMA_VERSION
            assert s.get(a).metrics == {"best_epoch": 3, "val_f1": 0.5} and s.get(b).metrics is None


def _writes_outside_transactions(store, action) -> list[str]:
    """The write statements ``action`` runs outside a ``BEGIN IMMEDIATE … COMMIT`` of the store's own."""
    inside, stray = False, []

    def trace(sql: str) -> None:
        nonlocal inside
        word = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
        if sql.strip().upper() == "BEGIN IMMEDIATE":
            inside = True
        elif word in ("COMMIT", "ROLLBACK"):
            inside = False
        elif word in ("INSERT", "UPDATE", "DELETE", "REPLACE") and not inside:
            stray.append(sql.strip())

    store.conn.set_trace_callback(trace)
    try:
        action()
    finally:
        store.conn.set_trace_callback(None)
    return stray


def test_every_write_of_the_store_takes_the_write_lock_first(store):
    """set_meta and event wait their turn like every other write (BEGIN IMMEDIATE), never write bare."""
    [i] = store.add([(None, ExperimentSpec(name="a"))])
    assert _writes_outside_transactions(store, lambda: store.set_meta("k", {"v": 1})) == []
    assert _writes_outside_transactions(store, lambda: store.event(i, "note", "hello")) == []
    assert store.get_meta_json("k") == {"v": 1} and store.events(i)[-1]["message"] == "hello"


def test_a_launch_changes_the_stage_the_one_way_every_move_does(store):
    """start_launch is a compare-and-set move like the others: the same event, the same stage check."""
    [i] = store.add([(None, ExperimentSpec(name="a"))])
    assert store.start_launch(i, "local", limit=1, run_id="r1")
    [event] = [e for e in store.events(i) if e["stage"] == "launching"]
    assert event["message"] == "queued → launching" and store.get(i).run_id == "r1"
    assert not store.start_launch(i, "local", limit=1)  # not queued any more


@pytest.mark.parametrize(
    ("raised", "says"),
    [
        (sqlite3.OperationalError("attempt to write a readonly database"), "cannot be written"),
        (sqlite3.OperationalError("disk I/O error"), "deleted or replaced"),
        (sqlite3.OperationalError("database is locked"), "is busy"),
    ],
)
def test_a_home_that_cannot_be_written_is_one_line_from_every_command(
    settings, tiny_spec_file, dataset, monkeypatch, raised, says
):
    """A read-only KDQ_HOME, a kdq.db deleted under a running worker, a lock held for long: one
    `error:` line naming the file and what to do, never a traceback."""
    from typer.testing import CliRunner

    from kdq.cli.main import app

    with Store.open(settings) as store:
        store.add([(None, ExperimentSpec(name="a"))])

    def refuse(*args, **kwargs):
        raise raised

    monkeypatch.setattr(Store, "transaction", refuse)
    for args in (["enqueue", str(tiny_spec_file)], ["cancel", "1"]):
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 1 and isinstance(r.exception, SystemExit | None), (args, r.exception)
        line = " ".join(r.stderr.split())
        assert line.startswith("error: ") and str(settings.db_path) in line and says in line, (args, line)
        assert "Traceback" not in r.output


def test_every_command_on_a_home_that_lost_its_database_gives_the_documented_refusal(settings):
    """Not "no kdq state here ... kdq enqueue SPEC starts one" (enqueue refuses such a home too)."""
    from typer.testing import CliRunner

    from kdq.cli.main import app

    Store.open(settings).close()
    (settings.runs_dir / "old-e1-a1").mkdir(parents=True)
    for suffix in ("", "-wal", "-shm"):
        settings.db_path.with_name(settings.db_path.name + suffix).unlink(missing_ok=True)
    for args in (["status"], ["show", "1"], ["results"], ["cancel", "1"], ["retry", "1"], ["submit", "1"]):
        r = CliRunner().invoke(app, args)
        line = " ".join(r.stderr.split())
        assert r.exit_code == 1 and "runs but no kdq.db" in line and "kdq worker --force" in line, (
            args,
            line,
        )


def test_a_home_mounted_read_only_with_no_worker_says_read_only_not_deleted(settings, monkeypatch):
    """On a read-only mount SQLite cannot even open kdq.db ("unable to open database file"): the line
    named a database deleted under a worker. It names the read-only home and the fix."""
    import sqlite3

    from typer.testing import CliRunner

    from kdq import errors
    from kdq.cli.main import app

    with Store.open(settings) as store:
        store.add([(None, ExperimentSpec(name="a"))])
    monkeypatch.setattr(errors, "read_only_at", lambda path: errors.read_only_line(path))

    def refuse(*args, **kwargs):
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(Store, "transaction", refuse)
    monkeypatch.setattr(Store, "open", classmethod(lambda cls, *a, **k: refuse()))
    for args in (["status"], ["cancel", "1"], ["worker"]):
        r = CliRunner().invoke(app, args)
        line = " ".join(r.stderr.split())
        assert r.exit_code == 1 and "Traceback" not in r.output, (args, r.output)
        assert "cannot be written" in line and "writable" in line, (args, line)
        assert "deleted or replaced" not in line, (args, line)
