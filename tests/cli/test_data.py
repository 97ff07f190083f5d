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


def _course_shaped(tmp_path, synth_dataset):
    """The course's nesting (the synthetic set has it: train_dataset/train_dataset/<class>/) one folder
    down, as a folder and as its zip."""
    import shutil

    shutil.copytree(synth_dataset, tmp_path / "dl" / "training_dataset")
    archive = shutil.make_archive(
        str(tmp_path / "dl" / "training_dataset"), "zip", tmp_path / "dl", "training_dataset"
    )
    return tmp_path / "dl" / "training_dataset", tmp_path / "dl" / "training_dataset.zip", archive


def test_data_add_copies_links_or_unzips_the_course_dataset_into_the_home(settings, tmp_path, synth_dataset):
    from kdq.train.layout import discover, find_root

    folder, zipped, _ = _course_shaped(tmp_path, synth_dataset)
    want = discover(synth_dataset)
    r = runner.invoke(app, ["data", "add", str(zipped), "--name", "hw3"])
    assert r.exit_code == 0, r.output
    added = discover(settings.datasets_dir / "hw3")
    assert added.classes == want.classes and len(added.files) == len(want.files)
    assert f"{len(want.files)} images" in r.stdout and "hw3" in r.stdout
    r = runner.invoke(app, ["data", "add", str(folder), "--name", "hw3"])  # the name is taken
    assert r.exit_code == 1 and "Traceback" not in r.output and "--name" in r.stderr
    r = runner.invoke(app, ["data", "add", str(folder), "--name", "linked", "--link"])
    assert r.exit_code == 0, r.output
    link = settings.datasets_dir / "linked"
    assert link.is_symlink() and link.resolve() == find_root(folder).resolve()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no pictures here")
    r = runner.invoke(app, ["data", "add", str(tmp_path / "notes"), "--name", "nothing"])
    assert (
        r.exit_code == 1 and "Traceback" not in r.output and not (settings.datasets_dir / "nothing").exists()
    )


def test_upload_keeps_a_local_copy_even_when_modal_refuses(settings, tmp_path, synth_dataset):
    import modal.config
    import pytest

    if modal.config.config.get("token_id"):
        pytest.skip("this machine has Modal credentials")
    folder, _, _ = _course_shaped(tmp_path, synth_dataset)
    r = runner.invoke(app, ["data", "upload", str(folder), "--name", "hw3"])
    assert r.exit_code == 1 and "modal token new" in r.output  # no Modal login here
    assert (settings.datasets_dir / "hw3").is_dir() and "local copy" in r.stdout


def test_inspect_reads_the_course_zip_as_downloaded(settings, tmp_path, synth_dataset):
    """`kdq data inspect training_dataset.zip` said the file did not exist and to `kdq data synth` it."""
    from kdq.train.layout import discover

    _, zipped, _ = _course_shaped(tmp_path, synth_dataset)
    r = CliRunner().invoke(app, ["data", "inspect", str(zipped), "--json", "--workers", "1"])
    assert r.exit_code == 0, r.output
    import json

    found = json.loads(r.stdout)
    assert sum(found["counts"].values()) == len(discover(synth_dataset).files), found["counts"]
    assert found["report"].endswith("index.html") and "inspect-training_dataset" in found["report"]
