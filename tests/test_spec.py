from pathlib import Path

import pytest

from kdq.spec import ExperimentSpec
from kdq.specfile import SpecError, expand, load_file, load_files, parse_overrides, parse_value


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_are_the_course_hinton_setup():
    spec = ExperimentSpec(name="x")
    assert spec.distill.loss == "hinton"
    assert (spec.distill.temperature, spec.distill.alpha) == (4.0, 0.3)
    assert spec.submit.policy == "if_better"
    assert spec.backend.kind == "local"


def test_name_defaults_to_file_stem(tmp_path):
    [spec] = load_file(write(tmp_path, "baseline.toml", "[train]\nepochs = 3\n"))
    assert spec.name == "baseline"
    assert spec.train.epochs == 3


def test_sweep_expands_cartesian_product_with_readable_names(tmp_path):
    p = write(
        tmp_path, "s.toml", '[sweep]\n"distill.temperature" = [2, 4]\n"distill.alpha" = [0.1, 0.5, 0.9]\n'
    )
    specs = load_file(p)
    assert len(specs) == 6
    assert {(s.distill.temperature, s.distill.alpha) for s in specs} == {
        (t, a) for t in (2, 4) for a in (0.1, 0.5, 0.9)
    }
    assert specs[0].name == "s[temperature=2,alpha=0.1]"
    assert len({s.content_hash() for s in specs}) == 6


def test_content_hash_is_stable_and_ignores_the_name():
    a = ExperimentSpec(name="a", distill={"temperature": 2.0})
    b = ExperimentSpec(name="b", distill={"temperature": 2.0})
    c = ExperimentSpec(name="a", distill={"temperature": 3.0})
    assert a.content_hash() == b.content_hash() != c.content_hash()
    assert a.content_hash() == ExperimentSpec.model_validate_json(a.model_dump_json()).content_hash()


def test_overrides_parse_like_toml_and_apply_before_validation(tmp_path):
    assert parse_value("4") == 4 and parse_value("0.3") == 0.3 and parse_value("true") is True
    assert parse_value("[1, 2]") == [1, 2] and parse_value("adamw") == "adamw"
    p = write(tmp_path, "o.toml", 'name = "o"\n')
    [spec] = load_file(p, parse_overrides(["distill.temperature=8", "train.optimizer=sgd"]))
    assert spec.distill.temperature == 8 and spec.train.optimizer == "sgd"


def test_bad_override_syntax_is_explained():
    with pytest.raises(SpecError, match="expected KEY=VALUE"):
        parse_overrides(["distill.temperature"])


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[distill]\nalpha = 1.5\n", "distill.alpha = 1.5: Input should be less than or equal to 1"),
        (
            "[distill]\ntemprature = 3\n",
            "distill.temprature: unknown key. Allowed at distill: loss, temperature",
        ),
        (
            '[distill]\nloss = "hintn"\n',
            "distill.loss = \"hintn\": Input should be 'ce', 'hinton', 'dkd' or 'dist'",
        ),
        ('[train]\nepochs = "ten"\n', 'train.epochs = "ten"'),
        ("[colour]\nx = 1\n", "colour: unknown key. Allowed at top level: name, student"),
        ('[teacher]\nkind = "none"\n', "needs a teacher"),
        ('[data]\ndataset = "/home/me/data"\n', 'data.dataset = "/home/me/data"'),
        ("name = \n", "TOML syntax error"),
        ('[sweep]\n"train.lr" = []\n', "sweep.train.lr: must be a non-empty list"),
        ('[sweep]\n"train.lr" = 0.1\n', "sweep.train.lr: must be a non-empty list"),
    ],
)
def test_errors_name_file_field_value_and_what_is_allowed(tmp_path, text, expected):
    p = write(tmp_path, "bad.toml", text)
    with pytest.raises(SpecError) as info:
        load_file(p)
    assert str(p) in str(info.value)
    assert expected in str(info.value)


def test_sweep_error_names_the_sweep_point(tmp_path):
    p = write(tmp_path, "s.toml", '[sweep]\n"distill.alpha" = [0.5, 2.0]\n')
    with pytest.raises(SpecError) as info:
        load_file(p)
    assert info.value.problems == [
        f"{p} (sweep alpha=2.0): distill.alpha = 2.0: Input should be less than or equal to 1"
    ]


def test_oversized_sweep_is_refused(tmp_path):
    p = write(
        tmp_path, "big.toml", f'[sweep]\n"train.seed" = {list(range(100))}\n"train.lr" = [0.1, 0.2, 0.3]\n'
    )
    with pytest.raises(SpecError, match="300 combinations"):
        load_file(p)


def test_batch_reports_every_bad_file_and_returns_nothing(tmp_path):
    good = write(tmp_path, "good.toml", 'name = "good"\n')
    bad1 = write(tmp_path, "bad1.toml", "[train]\nlr = -1\n")
    bad2 = write(tmp_path, "bad2.toml", "[nope]\n")
    with pytest.raises(SpecError) as info:
        load_files([good, bad1, bad2])
    text = str(info.value)
    assert "bad1.toml: train.lr = -1" in text and "bad2.toml: nope" in text and "good.toml" not in text


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(SpecError, match="no such file"):
        load_file(tmp_path / "nope.toml")


def test_expand_does_not_mutate_its_input():
    raw = {"sweep": {"train.lr": [0.1, 0.2]}, "train": {"epochs": 2}}
    expand(raw, "x.toml")
    assert raw == {"sweep": {"train.lr": [0.1, 0.2]}, "train": {"epochs": 2}}


# ---------------------------------------------------------------- hostile files and values (issue 12, 13-14)


def test_a_named_pipe_is_refused_without_blocking(tmp_path):
    import os

    pipe = tmp_path / "spec.toml"
    os.mkfifo(pipe)  # no writer: opening it for reading would wait forever
    with pytest.raises(SpecError, match=r"spec.toml: not a regular file \(a pipe or a device\?\)"):
        load_file(pipe)


def test_a_device_is_refused():
    with pytest.raises(SpecError, match=r"^/dev/zero: not a regular file"):
        load_file("/dev/zero")


def test_a_huge_file_is_refused_by_its_size(tmp_path):
    p = write(tmp_path, "big.toml", "# " + "x" * (2 << 20) + "\nname = 'big'\n")
    with pytest.raises(SpecError, match="big.toml: 2,097,168 bytes, more than a spec's 1,048,576"):
        load_file(p)


def test_a_folder_is_named_as_such(tmp_path):
    with pytest.raises(SpecError, match="is a folder, not a spec file"):
        load_file(tmp_path)


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    p = tmp_path / "bom.toml"
    p.write_bytes("\ufeffname = 'bom'\n[train]\nepochs = 3\n".encode())
    [spec] = load_file(p)
    assert (spec.name, spec.train.epochs) == ("bom", 3)


def test_control_characters_are_stripped_from_names(tmp_path):
    p = write(tmp_path, "esc.toml", 'name = "\\u001b[31mred\\u0007 alert\\u001b[0m"\n')
    [spec] = load_file(p)
    assert spec.name == "[31mred alert[0m"
    assert not any(ord(c) < 32 for c in spec.name)
    with pytest.raises(SpecError, match="name: has no printable character"):
        load_file(write(tmp_path, "bell.toml", 'name = "\\u0007\\u001b"\n'))


def test_a_ten_megabyte_value_is_cut_in_the_message(tmp_path):
    p = write(tmp_path, "long.toml", 'name = "long"\n')  # a file that big is refused whole: a --set value
    with pytest.raises(SpecError) as info:
        load_file(p, parse_overrides([f"train.optimizer={'a' * 10_000_000}"]))
    [line] = info.value.problems
    assert len(line) < 400
    assert "(10,000,002 characters)" in line and "train.optimizer" in line


def test_a_bool_is_not_an_int_even_from_set(tmp_path):
    p = write(tmp_path, "b.toml", 'name = "b"\n')
    with pytest.raises(SpecError, match=r"train.epochs = true: .*\(true and false are not numbers\)"):
        load_file(p, parse_overrides(["train.epochs=true"]))


def test_ints_are_accepted_for_floats_and_stored_specs_load_back(tmp_path):
    [spec] = load_file(write(tmp_path, "i.toml", 'name = "i"\n[distill]\ntemperature = 4\n'))
    assert spec.distill.temperature == 4.0
    assert ExperimentSpec.model_validate_json(spec.model_dump_json()) == spec


def test_a_repeated_sweep_value_is_refused_before_the_store_sees_it(tmp_path):
    p = write(tmp_path, "r.toml", 'name = "r"\n[sweep]\n"train.seed" = [0, 1, 0]\n')
    with pytest.raises(SpecError, match="sweep.train.seed: the value 0 appears twice"):
        load_file(p)
    [one, two] = load_file(write(tmp_path, "ok.toml", 'name = "ok"\n[sweep]\n"train.seed" = [1, 2]\n'))
    assert (one.train.seed, two.train.seed) == (1, 2)


def test_an_older_specs_train_tta_flip_reads_as_export_tta_hflip():
    from kdq.spec import ExperimentSpec

    old = ExperimentSpec.model_validate({"name": "a", "train": {"tta_flip": True}})
    assert old.export.tta == "hflip" and old.export.weights == "int8"
    assert ExperimentSpec.model_validate({"name": "a", "train": {"tta_flip": False}}).export.tta == "none"
    both = {"name": "a", "train": {"tta_flip": True}, "export": {"tta": "dihedral8"}}
    assert ExperimentSpec.model_validate(both).export.tta == "dihedral8"  # the new field wins
    with pytest.raises(ValueError, match="train.tta_flip: true or false"):
        ExperimentSpec.model_validate({"name": "a", "train": {"tta_flip": "yes"}})
