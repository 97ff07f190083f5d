"""The course server's lines in ``kdq status``: an upload in flight, a failure while it lasts and after."""

from __future__ import annotations

from kdq.course.ledger import Ledger
from kdq.course.status import header_lines


def test_an_upload_in_flight_and_a_recovered_failure_are_shown(store):
    ledger = Ledger(store, clock=lambda: 1000.0)
    ledger.record_server(True, "ok")
    ledger.set_intent({"exp_id": 7, "sub_id": 1, "baseline": 0, "at": 940.0})
    lines = header_lines(store, now=1000.0, interval_s=900)
    assert "upload in flight: experiment 7 (60s, outcome not known yet)" in lines[-1]
    ledger.set_error("disk full (ENOSPC): cannot write /h/kdq.db")
    assert any(
        "crashed" in x and "disk full (ENOSPC)" in x for x in header_lines(store, now=1000.0, interval_s=900)
    )
    ledger.recovered("disk full (ENOSPC): cannot write /h/kdq.db")
    lines = header_lines(store, now=1060.0, interval_s=900)
    assert any("recovered" in x and "60s ago" in x and "ENOSPC" in x for x in lines)
    assert not any("crashed" in x for x in lines)
    assert not any("recovered" in x for x in header_lines(store, now=1000.0 + 3601, interval_s=900))
