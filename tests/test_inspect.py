"""``kdq data inspect``: every planted duplicate, conflict, broken file and overlay is found and reported."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from kdq.cli.main import app
from kdq.datainspect import inspect_dataset, overlay, write_report
from kdq.datainspect.findings import summarize
from kdq.datainspect.scan import scan_files
from kdq.synth import CLASS_NAMES, LAYOUT, add_overlay, draw_image, synth
from kdq.train import data

PREFIX = str(Path(*LAYOUT)) + "/"
EXPECTED_FLAG = {"axes": "lines", "frame": "border", "text": "text"}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    out = tmp_path_factory.mktemp("planted")
    man = synth(
        out,
        per_class=12,
        seed=5,
        exact_duplicates=4,
        near_duplicates=3,
        cross_class=3,
        corrupt=4,
        overlays=0.3,
    )
    findings, infos = inspect_dataset(out, workers=1)
    return out, man, findings, infos


def rel(path: str) -> str:
    assert path.startswith(PREFIX), path
    return path[len(PREFIX) :]


def planted_groups(man) -> list[set[str]]:
    """Connected components of the planted pairs (one original can be planted more than once)."""
    groups: list[set[str]] = []
    for a, b in man.exact_duplicates + man.near_duplicates + man.cross_class:
        pair = {rel(a), rel(b)}
        touching = [g for g in groups if g & pair]
        merged = pair.union(*touching)
        groups = [g for g in groups if not g & pair] + [merged]
    return groups


def test_broken_files_are_listed_as_truncated_or_unreadable(planted):
    _, man, f, _ = planted
    assert {p["file"] for p in f.problems} == {rel(c) for c in man.corrupt}
    s = f.counts_summary()
    assert (s["truncated"], s["unreadable"]) == (
        2,
        2,
    )  # synth writes truncated JPEGs and random bytes in turn
    assert s["files"] == s["images"] + 4


def test_class_counts_and_weights_match_the_trainer(planted):
    root, man, f, infos = planted
    assert f.classes == sorted(CLASS_NAMES)
    ds = data.discover(root)
    assert f.files == len(ds.files)
    readable = [i for i in infos if i.ok]
    expected = data.class_weights([i.label for i in readable], 10).tolist()
    assert [f.class_weights[c] for c in f.classes] == pytest.approx(expected, abs=1e-4)
    assert f.imbalance_ratio == pytest.approx(max(f.counts.values()) / min(f.counts.values()), rel=1e-3)
    assert sum(f.counts.values()) == len(man.images) + 4 + 3 + 3  # the clean images plus every planted copy


def test_every_planted_duplicate_is_found_and_nothing_else(planted):
    _, man, f, _ = planted
    expected = planted_groups(man)
    found = [{m["file"] for m in g["members"]} for g in f.duplicate_groups]
    assert sorted(map(sorted, found)) == sorted(map(sorted, expected))
    cross = {rel(b) for _, b in man.cross_class}
    near = {rel(b) for _, b in man.near_duplicates}
    for g in f.duplicate_groups:
        files = {m["file"] for m in g["members"]}
        assert g["cross_class"] == bool(files & cross)
        assert g["kind"] == ("near" if files & near else "exact")
    s = f.counts_summary()
    assert s["cross_class_groups"] == len({frozenset(g) for g in expected if g & cross}) == 3
    assert s["redundant_images"] == 4 + 3 + 3


def test_planted_overlays_are_flagged(planted):
    _, man, f, _ = planted
    flagged = {o["file"]: o["kinds"] for o in f.overlays}
    kinds = {rel(p): k for p, k in man.overlays.items()}
    assert kinds, "the fixture should plant overlays"
    for path, kind in kinds.items():
        if kind in EXPECTED_FLAG:
            assert EXPECTED_FLAG[kind] in flagged.get(path, []), (path, kind)
    watermarks = [p for p, k in kinds.items() if k == "watermark"]
    assert sum(p in flagged for p in watermarks) >= len(watermarks) / 2  # faint: most, not all
    copies = {
        rel(b)
        for pairs in (man.exact_duplicates, man.near_duplicates, man.cross_class)
        for a, b in pairs
        if rel(a) in kinds
    }
    clean = [rel(p) for p in man.images if rel(p) not in kinds]
    false = [p for p in clean if p in flagged]
    assert len(false) <= 0.02 * len(clean), false
    assert set(flagged) <= set(kinds) | copies | set(false)


def test_overlay_signals_on_drawn_pictures():
    rng = np.random.default_rng(0)
    base = Image.fromarray(draw_image(0, rng, (120, 100)))
    assert overlay.flags(overlay.signals(base)) == []
    assert "lines" in overlay.flags(overlay.signals(add_overlay(base, "axes", rng)))
    assert "border" in overlay.flags(overlay.signals(add_overlay(base, "frame", rng)))
    assert "text" in overlay.flags(overlay.signals(add_overlay(base, "text", rng)))
    big = base.resize((900, 700))  # shrunk to the analysis size first
    assert set(overlay.signals(big)) == {"lines", "border_sides", "text"}


def test_process_pool_gives_the_same_answers(planted):
    root, _, _, infos = planted
    ds = data.discover(root)
    items = [(str(p), y) for p, y in zip(ds.files, ds.labels)][:40]
    seen: list[int] = []
    pooled = scan_files(ds.root, items, workers=2, chunk=8, progress=seen.append)
    assert seen == [8] * 5  # progress after every chunk
    assert [(i.file, i.sha1, i.phash, i.overlays, i.problem) for i in pooled] == [
        (i.file, i.sha1, i.phash, i.overlays, i.problem) for i in infos[:40]
    ]


def test_report_folder_has_a_page_and_valid_pictures(planted, tmp_path):
    _, _, f, infos = planted
    page = write_report(f, infos, tmp_path / "rep")
    html = page.read_text()
    assert "<html" in html and "label conflict" in html
    for g in f.duplicate_groups:
        assert all(m["file"] in html for m in g["members"])
    pngs = sorted((tmp_path / "rep").rglob("*.png"))
    names = {p.name for p in pngs}
    assert {"class_counts.png", "sizes.png", "flagged.png"} <= names
    assert len(list((tmp_path / "rep" / "sheets").glob("*.png"))) == 10
    for p in pngs:
        with Image.open(p) as im:
            im.verify()
        assert f'src="{p.relative_to(tmp_path / "rep")}"' in html
    saved = json.loads((tmp_path / "rep" / "findings.json").read_text())
    assert saved["summary"]["cross_class_groups"] == 3


def test_user_text_is_escaped_in_the_page(tmp_path):
    root = tmp_path / "ds"
    for cls in ("<script>alert(1)</script>", "b&c"):
        (root / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(draw_image(i, np.random.default_rng(i), (40, 40))).save(root / cls / f"{i}.png")
    ds = data.discover(root)
    infos = scan_files(ds.root, [(str(p), y) for p, y in zip(ds.files, ds.labels)], workers=1)
    html = write_report(summarize(str(root), ds.classes, infos), infos, tmp_path / "rep").read_text()
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "b&amp;c" in html


def test_cli_writes_the_report_and_prints_a_summary(planted, tmp_path, home):
    root, _, _, _ = planted
    result = CliRunner().invoke(
        app, ["data", "inspect", str(root), "--out", str(tmp_path / "r"), "--workers", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "label conflicts (same picture in two classes): 3" in result.output
    assert (tmp_path / "r" / "index.html").exists()
    result = CliRunner().invoke(app, ["data", "inspect", str(root), "--json", "--workers", "1"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["summary"]["problems"] == 4 and Path(out["report"]).exists()
    assert Path(out["report"]).is_relative_to(home)


def test_cli_names_a_missing_folder(tmp_path, home):
    result = CliRunner().invoke(app, ["data", "inspect", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert "does not exist" in result.output


def test_a_dataset_of_only_broken_files_still_gets_a_report(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / "ds" / cls).mkdir(parents=True)
        (tmp_path / "ds" / cls / "x.jpg").write_bytes(bytes(range(100)))
    f, infos = inspect_dataset(tmp_path / "ds", workers=1)
    assert f.images == 0 and len(f.problems) == 2 and f.duplicate_groups == []
    assert write_report(f, infos, tmp_path / "rep").exists()
