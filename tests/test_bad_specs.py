"""The bad-spec corpus (tests/bad_inputs/specs): each file fails with its own clear message, and
`kdq enqueue` of it beside valid specs queues nothing."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from kdq.cli.main import app
from kdq.specfile import SpecError, load_file
from kdq.store import Store

CORPUS = sorted((Path(__file__).parent / "bad_inputs" / "specs").glob("*.toml"))


def expected(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must open with '# expect: <message>'"
    return first.removeprefix("# expect: ")


def test_corpus_is_large_and_every_message_is_distinct():
    assert len(CORPUS) >= 30
    messages = [expected(p) for p in CORPUS]
    assert len(set(messages)) >= 30


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_bad_spec_names_file_and_problem(path):
    with pytest.raises(SpecError) as info:
        load_file(path)
    text = str(info.value)
    assert expected(path) in text
    assert all(line.startswith(str(path)) for line in info.value.problems)


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_enqueue_with_a_bad_spec_queues_nothing(settings, path, tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('name = "good"\n[train]\nepochs = 2\n')
    r = CliRunner().invoke(app, ["enqueue", str(good), str(path)])
    assert r.exit_code == 1
    assert expected(path) in " ".join(r.stderr.split()) or expected(path) in r.stderr
    assert "nothing was queued" in r.stderr
    with Store.open(settings) as store:
        assert store.list() == []


STUDENTS = sorted((Path(__file__).parent / "bad_inputs" / "students").glob("*.toml"))


@pytest.mark.parametrize("path", STUDENTS, ids=lambda p: p.stem)
def test_unknown_or_oversized_students_are_refused_at_enqueue(settings, path, tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('name = "good"\n[train]\nepochs = 2\n')
    r = CliRunner().invoke(app, ["enqueue", str(good), str(path)])
    assert r.exit_code == 1
    assert f"{path}: {expected(path)}" in " ".join(r.stderr.split())
    with Store.open(settings) as store:
        assert store.list() == []


@pytest.mark.parametrize("kind", ["fifo", "device", "empty", "huge-value"])
def test_hostile_spec_paths_and_values_are_one_line_and_queue_nothing(settings, tmp_path, kind):
    import os

    good = tmp_path / "good.toml"
    good.write_text('name = "good"\n')
    if kind == "fifo":
        bad = tmp_path / "pipe.toml"
        os.mkfifo(bad)  # nobody writes: reading it would hang enqueue forever
        said = "not a regular file"
    elif kind == "device":
        bad, said = Path("/dev/zero"), "not a regular file"
    elif kind == "empty":
        bad = tmp_path / "empty.toml"
        bad.write_text("")
        said = "empty spec: a spec needs at least a name"
    else:
        bad = tmp_path / "value.toml"
        bad.write_text(f'name = "v"\n[train]\noptimizer = "{"x" * 500_000}"\n')
        said = "(500,002 characters)"  # the quotes counted
    r = CliRunner().invoke(app, ["enqueue", str(good), str(bad)])
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit | None), r.output[-500:]
    assert said in " ".join(r.stderr.split()) and "nothing was queued" in r.stderr
    assert len(r.stderr) < 2000 and "Traceback" not in r.output
    with Store.open(settings) as store:
        assert store.list() == []
