"""kdq report --night: the whole night on one page; a slow test looks at it in headless Chromium."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
from typer.testing import CliRunner

from kdq import gaps
from kdq.cli.main import app
from kdq.course.ledger import Ledger
from kdq.nightpage import Axis, write_night_report
from kdq.spec import ExperimentSpec

H = 3600.0


def _night(store, now: float) -> dict[str, int]:
    """Three experiments over five hours: one graded twice, one skipped, one still training on Modal."""
    specs = [
        ExperimentSpec(name="hinton-mnv3[T=4]", train={"seed": 1}),
        ExperimentSpec(name="dkd-resnet18", train={"seed": 2}),
        ExperimentSpec(name="embed-logit-long", backend={"kind": "modal", "gpu": "H100"}, train={"seed": 3}),
    ]
    a, b, c = store.add([(None, s) for s in specs])
    moves = {
        a: [
            (-5.0, "queued"),
            (-4.9, "launching"),
            (-4.8, "training"),
            (-3.0, "fetching"),
            (-2.9, "ready"),
            (-2.8, "submitting"),
            (-2.7, "evaluating"),
            (-2.5, "done"),
        ],
        b: [
            (-5.0, "queued"),
            (-3.0, "launching"),
            (-2.9, "training"),
            (-1.5, "fetching"),
            (-1.4, "ready"),
            (-1.3, "skipped"),
        ],
        c: [(-4.0, "queued"), (-3.9, "launching"), (-3.8, "training")],
    }
    with store.transaction() as db:
        for exp_id, evs in moves.items():
            db["events"].insert_all(
                {"exp_id": exp_id, "ts": now + h * H, "kind": "stage", "stage": st, "message": ""}
                for h, st in evs
            )
    store.update(a, stage="done", val_f1=0.81, server_score=6.4, server_attempt=2)
    store.update(b, stage="skipped", val_f1=0.78)
    store.update(
        c, stage="training", progress={"epoch": 3, "epochs": 10, "epoch_s": 600.0, "updated_at": now}
    )
    ledger = Ledger(store)
    for attempt, score, at in ((1, 5.1, now - 2.6 * H), (2, 6.4, now - 1.0 * H)):
        sub = ledger.open_submission(a, attempt=attempt)
        ledger.update_submission(sub, state="successful", score=score, posted_at=at - 60)
        with store.transaction() as db:
            db.execute("update submissions set updated_at = ? where id = ?", [at, sub])
    gaps.add(store, "vpn", now - 2.2 * H, now - 1.9 * H, "The course server is unreachable (off the VPN?)")
    gaps.add(store, "asleep", now - 1.2 * H, now - 1.1 * H, "the worker was asleep 6m: 0 windows missed")
    return {"graded": a, "skipped": b, "training": c}


def test_the_page_has_the_timeline_windows_score_gaps_cost_and_links(settings, store, tmp_path):
    now = time.time()
    ids = _night(store, now)
    page = write_night_report(store, settings, tmp_path / "night", now=now)
    html = page.read_text()
    assert page == tmp_path / "night" / "index.html"
    assert html.count("<svg") == 2  # the timeline and the live score
    for name in ("hinton-mnv3[T=4]", "dkd-resnet18", "embed-logit-long"):
        assert name in html
    assert "submission windows" in html and "window used" in html and "skipped" in html
    assert "attempt #2: 1 hinton-mnv3[T=4], score 6.400" in html  # live, in the headline
    assert "off the VPN" in html and "asleep" in html
    assert "H100" in html and "worst case $" in html  # the cost
    report = settings.root / "reports" / str(ids["graded"]) / "index.html"
    assert report.exists() and f'href="../home/reports/{ids["graded"]}/index.html"' in html


def test_the_time_axis_ticks_in_round_steps():
    axis = Axis(0.0, 5 * H)
    assert axis.ticks()[:2] == [1800.0, 3600.0] and len(axis.ticks()) <= 12
    assert axis.x(-100.0) == axis.x(0.0) and axis.x(10 * H) == axis.x(5 * H)  # clamped to the chart


def test_kdq_report_night_writes_a_file(settings, store, tmp_path):
    _night(store, time.time())
    r = CliRunner().invoke(app, ["report", "--night", "-o", str(tmp_path / "morning.html")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "morning.html").read_text().startswith("<!doctype html>")
    r = CliRunner().invoke(app, ["report"])
    assert r.exit_code == 2 and "--night" in r.output and "Traceback" not in r.output


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.slow
@pytest.mark.skipif(chromium() is None, reason="no Chromium here: apt-get install chromium")
def test_the_page_renders_in_headless_chromium(settings, store, tmp_path):
    from PIL import Image

    now = time.time()
    _night(store, now)
    page = write_night_report(store, settings, tmp_path / "night", now=now)
    shot = tmp_path / "night.png"
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}"]
    cmd += ["--window-size=1200,1000", "--hide-scrollbars", page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.exists(), proc.stderr[-2000:]
    img = Image.open(shot).convert("RGB")
    colors = set(img.getdata())
    assert img.size == (1200, 1000)
    # the stage colours were drawn: training yellow, done green, the VPN gap orange, the score line blue
    for rgb in ((0xF0, 0xB4, 0x29), (0x2C, 0xA0, 0x2C), (0xFF, 0x7F, 0x0E), (0x1F, 0x77, 0xB4)):
        assert rgb in colors, rgb
