"""``kdq data synth``: never merges into a folder that already holds something, unless --force."""

from typer.testing import CliRunner

from kdq.cli.main import app

runner = CliRunner()


def test_synth_refuses_a_non_empty_folder_without_force(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    r = runner.invoke(
        app, ["data", "synth", str(out), "--per-class", "2", "--max-size", "16", "--min-size", "8"]
    )
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert f"{out} is not empty" in r.stderr and "--force" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # nothing written
    r = runner.invoke(
        app, ["data", "synth", str(out), "--per-class", "2", "--max-size", "16", "--min-size", "8", "--force"]
    )
    assert r.exit_code == 0, r.output
    assert (out / "notes.txt").exists() and "images in 10 classes" in r.stdout


def test_synth_into_a_new_or_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "new", tmp_path / "empty"):
        r = runner.invoke(
            app, ["data", "synth", str(out), "--per-class", "2", "--max-size", "16", "--min-size", "8"]
        )
        assert r.exit_code == 0, r.output
