"""The course ledger: the one next window, errors that recover, submissions by identity."""

from __future__ import annotations

from datetime import UTC, datetime

from kdq.course.ledger import Ledger
from kdq.course.models import Attempt
from kdq.course.policy import SLACK_S
from kdq.spec import ExperimentSpec


def test_the_next_window_counts_ours_the_servers_and_a_named_wait(store):
    ledger = Ledger(store, clock=lambda: 1000.0, monotonic=lambda: 50.0)
    assert ledger.next_window(900) == 0.0
    ledger.note_submit(100.0)
    assert ledger.next_window(900) == 100.0 + 900 + SLACK_S
    theirs = Attempt(attempt=1, status="pending", submitted_at=datetime.fromtimestamp(500.0, UTC))
    ledger.save_status([theirs], 1000.0)
    assert ledger.next_window(900) == 500.0 + 900 + SLACK_S
    ledger.block_until(5000.0)
    assert ledger.next_window(900) == 5000.0
    stepped = Ledger(store, clock=lambda: 1000.0 - 3600, monotonic=lambda: 50.0 + 60)  # -1 h, 60 s later
    assert stepped.next_window(900) == 5000.0 - 3600 - 60  # the named wait moved with the clock


def test_a_failure_clears_on_success_and_a_recovered_one_stays_shown(store):
    ledger = Ledger(store, clock=lambda: 10.0)
    ledger.set_error("ZeroDivisionError: x")
    assert ledger.error()["error"] == "ZeroDivisionError: x"
    ledger.clear_error()
    assert ledger.error() is None
    ledger.recovered("disk full (ENOSPC): cannot write /x/kdq.db")
    ledger.clear_error()
    assert ledger.error()["recovered_at"] == 10.0


def test_lost_attempts_are_not_ours_any_more(store):
    [i] = store.add([(None, ExperimentSpec(name="a"))])
    ledger = Ledger(store)
    first = ledger.open_submission(i, sha256="ab")
    ledger.update_submission(first, state="evaluating", attempt=1)
    assert ledger.our_attempts() == {1: (i, None)} and ledger.max_attempt() == 1
    ledger.update_submission(first, state="lost")
    assert ledger.our_attempts() == {} and ledger.attempt_names() == {}
    assert ledger.latest_submission(i)["sha256"] == "ab"


def _at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def test_kdq_server_status_shows_the_times_kdq_uses_not_a_server_clock_hours_off(store, monkeypatch):
    """A server whose times run 14 h ahead (or 3 h behind) of ours: `kdq server status` showed them as
    they came. It shows when kdq sent each of its uploads, a future time as now, and says the server's
    times are off."""
    from typer.testing import CliRunner

    from kdq.cli import server
    from kdq.cli.main import app

    [i] = store.add([(None, ExperimentSpec(name="a"))])
    ledger = Ledger(store)
    sent = ledger.clock() - 120
    first = ledger.open_submission(i, sha256="ab")
    store.db["submissions"].update(first, {"created_at": sent})
    ledger.update_submission(first, state="evaluating", attempt=1)
    for off_h, word in ((14, "ahead of"), (-3, "behind")):
        attempts = [
            Attempt(attempt=1, status="successful", score=0.7, submitted_at=_at(sent + off_h * 3600)),
            Attempt(attempt=2, status="pending", submitted_at=_at(sent + 60 + off_h * 3600)),
        ]

        class Client:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return None

            def status(self, attempts=attempts):
                return attempts

        monkeypatch.setattr(server, "_client", lambda: Client())
        out = CliRunner().invoke(app, ["server", "status"]).output
        assert _at(sent).strftime("%Y-%m-%d %H:%M:%S") in out, out  # ours: when kdq sent it
        assert _at(sent + off_h * 3600).strftime("%Y-%m-%d %H:%M") not in out, out
        assert f"the server's times run {abs(off_h):.1f} h {word} this machine's" in out, out
