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
