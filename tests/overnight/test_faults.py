"""The course server misbehaves while several models wait to be submitted: 5xx bursts, 429s with
long waits, garbage and truncated bodies, stalls past the read timeout, connections refused for a
while; each alone, then all together over full training runs. The worker must not crash, must never
submit a model twice, and must finish everything once the trouble stops.

Faults spoil the answer *after* the server has recorded an upload too (``when="after"``): the case
where the worker cannot know whether its submission went through and must read the status list
instead of posting again.
"""

from __future__ import annotations

import time

import pytest

from kdq.course.scheduler import ERROR, SERVER
from kdq.stages import Stage

pytestmark = pytest.mark.slow
FAST = {"KDQ_REQUEST_TIMEOUT_S": "4"}  # a stall of 6 s is a read timeout: "maybe sent"
LONG_WAIT_S = 7.0  # "long": more than twice the 3 s window

CASES = {
    "5xx-burst": [
        dict(kind="error", count=4),
        dict(kind="error", count=2, status=502),
        dict(kind="error", route="submit", when="after", status=503),
    ],
    "429-long-waits": [
        dict(kind="rate_limit", route="submit", wait_s=LONG_WAIT_S, unit="seconds"),
        dict(kind="rate_limit", route="status", count=2, wait_s=2),
    ],
    "garbage-bodies": [
        dict(kind="garbage", route="status", count=2, body="html"),
        dict(kind="garbage", route="status", body="truncated"),
        dict(kind="garbage", route="submit", when="after", body="truncated"),
        dict(kind="garbage", route="submit", when="after", body="empty"),
    ],
    "stalls": [
        dict(kind="stall", route="submit", when="after", seconds=6),
        dict(kind="stall", route="status", seconds=6),
    ],
}


def place_ready(h, tiny_model, n: int = 2) -> list[int]:
    return [h.place(tiny_model, val_f1=0.5 + i / 10) for i in range(n)]


def check_survived(h, ids: list[int], ranks: bool = True) -> None:
    assert h.worker.poll() is None, f"the worker exited\n{h.report()}"
    h.check_delivered(ids, ranks=ranks)
    assert h.server.faults.pending() == [], f"faults never reached: {h.server.faults.pending()}"
    assert not h.store.get_meta(ERROR), h.store.get_meta(ERROR)
    log = h.log.read_text()
    assert "scheduler_crashed" not in log and "step crashed" not in log and "Traceback" not in log, log[
        -3000:
    ]
    assert h.store.get_meta_json(SERVER)["reachable"] is True


@pytest.mark.parametrize("case", CASES)
def test_each_fault_alone(overnight, tiny_model, case):
    h = overnight(extra_env=FAST)
    for fault in CASES[case]:
        h.server.inject(**fault)
    ids = place_ready(h, tiny_model)
    started = time.time()
    h.start_worker()
    h.wait_finished(120)
    check_survived(h, ids)
    if case == "429-long-waits":
        first = min(s.submitted_at.timestamp() for s in h.server.course.submissions)
        assert first >= started + LONG_WAIT_S - 1, "submitted before the wait the server named was over"


def test_refused_connections_for_a_while(overnight, tiny_model):
    h = overnight(extra_env=FAST)
    ids = place_ready(h, tiny_model)
    h.start_worker()
    h.wait(lambda: h.server.course.submissions, 60, "the first submission")
    h.server.go_down(8)
    h.wait(
        lambda: (h.store.get_meta_json(SERVER) or {}).get("reachable") is False, 30, "the server seen as down"
    )
    shown = h.cli("status").stdout
    assert "course server: unreachable" in shown and "cannot connect" in shown, shown
    assert all(e.stage is not Stage.FAILED for e in h.exps()), "an outage failed an experiment"
    h.wait_finished(120)
    check_survived(h, ids)
    assert "course server: reachable" in h.cli("status").stdout


def test_every_fault_together_over_full_runs(overnight):
    h = overnight(extra_env=FAST)
    for faults in CASES.values():
        for fault in faults:
            if fault.get("body") != "empty":  # three uploads: room for three spoiled answers after an upload
                h.server.inject(**fault)
    h.server.inject("garbage", route="leaderboard", body="empty")
    ids = h.enqueue(3)
    assert len([f for f in h.server.faults.pending() if f["route"] == "submit" and f["when"] == "after"]) == 3
    h.start_worker()
    h.wait(lambda: h.server.course.submissions, 120, "the first submission")
    h.server.go_down(4)
    h.wait(
        lambda: (h.store.get_meta_json(SERVER) or {}).get("reachable") is False, 30, "the server seen as down"
    )
    h.wait_finished(180)
    check_survived(h, ids, ranks=False)  # a garbage leaderboard page may cost an experiment its rank, no more
