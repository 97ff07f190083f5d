"""The night's cost model: packing and cache-once halve a night, the new bounds cut its worst case."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_packing_and_cache_once_meet_the_targets_and_each_assumption_says_where_it_comes_from(capsys):
    night = load("night_cost")
    m = night.scenarios(20)
    assert m["cache_once"] < m["today"] and m["packed"] <= 0.5 * m["today"]
    assert m["decode_off_gpu"] < m["packed"]  # the decode bills CPUs alone
    off_gpu = night.dollars(m["decode_off_gpu"], night.cpu_only_min("decode_off_gpu"))
    assert off_gpu < night.dollars(m["packed"])
    assert m["worst_now"] <= 0.1 * m["worst_today"] and m["worst_packed"] < m["worst_now"]
    assert m["worst_default_packed"] <= 0.1 * m["worst_today"]  # the default spec's limits, the default pack
    assert m["worst_today"] == 20 * 8 * 60  # 8 GPU-hours a run, the bound before
    assert all(isinstance(v, (int, float)) and why for v, why in night.ASSUMPTIONS.values())
    assert night.main(["--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["scenario"] for r in rows} == set(m) and rows[0]["usd"] == pytest.approx(
        night.dollars(m["today"]), abs=0.01
    )


def test_the_docs_print_the_models_numbers():
    night = load("night_cost")
    doc = (ROOT / "docs" / "modal.md").read_text()
    m = night.scenarios(20)
    rows = ("today", "cache_once", "packed", "decode_off_gpu", "worst_now", "worst_default")
    rows += ("worst_default_packed",)
    for name in rows:
        assert f"| {m[name] / 60:.2f} |" in doc or f"| {m[name] / 60:.1f} |" in doc, name
