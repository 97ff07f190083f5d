"""The pure submission policy."""

from kdq.course.models import Attempt
from kdq.course.policy import SLACK_S, Candidate, Live, live_submission, next_slot, plan

NOW = 10_000.0


def go(cands, live=None, last=None, interval=900.0, blocked=None):
    return plan(cands, live, now=NOW, last_submit_at=last, interval_s=interval, blocked_until=blocked)


def test_best_first_when_the_window_is_free():
    p = go([Candidate(1, 0.70, "always"), Candidate(2, 0.80, "always"), Candidate(3, 0.75, "always")])
    assert p.submit == 2 and p.wait_s is None


def test_ties_go_to_the_smaller_model_then_the_older_experiment():
    p = go(
        [
            Candidate(1, 0.8, "always", size_mb=9),
            Candidate(2, 0.8, "always", size_mb=4),
            Candidate(3, 0.8, "always", size_mb=4),
        ]
    )
    assert p.submit == 2


def test_waits_for_the_window_counting_from_the_last_submission_anyones():
    p = go([Candidate(1, 0.9)], last=NOW - 100)
    assert p.submit is None and p.wait_s == 800 + SLACK_S
    assert go([Candidate(1, 0.9)], last=NOW - 900 - SLACK_S).submit == 1


def test_a_rate_limit_pushes_the_window():
    p = go([Candidate(1, 0.9)], last=NOW - 5000, blocked=NOW + 42)
    assert p.wait_s == 42


def test_if_better_never_replaces_a_better_live_submission():
    live = Live(attempt=4, state="successful", exp_id=7, val_f1=0.80)
    p = go([Candidate(1, 0.79), Candidate(2, 0.80), Candidate(3, 0.81)], live)
    assert p.submit == 3
    assert [(i, kind) for i, kind, _ in p.finish] == [(1, "skipped"), (2, "skipped")]
    assert "0.7900 is not above 0.8000" in p.finish[0][2] and "kdq submit 1" in p.finish[0][2]


def test_if_better_waits_while_the_live_submission_may_still_fail():
    live = Live(attempt=4, state="pending", exp_id=7, val_f1=0.80)
    p = go([Candidate(1, 0.70)], live)
    assert p.submit is None and p.finish == () and p.wait_s is None


def test_if_better_against_an_unknown_outside_submission_submits():
    assert go([Candidate(1, 0.5)], Live(attempt=2, state="successful")).submit == 1


def test_policies_always_never_manual_and_requested():
    live = Live(attempt=1, state="successful", exp_id=9, val_f1=0.95)
    p = go([Candidate(1, 0.5, "always"), Candidate(2, 0.99, "never"), Candidate(3, 0.99, "manual")], live)
    assert p.submit == 1
    assert p.finish == ((2, "done", "submit.policy = never: not submitted"),)
    p = go([Candidate(3, 0.99, "manual")], live)
    assert p.submit is None and "manual" in p.reason
    p = go([Candidate(3, 0.10, "manual", requested=True), Candidate(4, 0.99, "always")], live)
    assert p.submit == 3  # a request goes first and bypasses the policy ...
    assert (
        go([Candidate(3, 0.1, "never", requested=True)], live, last=NOW - 1).submit is None
    )  # ... not the window


def test_nothing_ready_means_nothing_to_wait_for():
    assert go([]) == go([], last=NOW) and go([]).wait_s is None


def test_live_submission_is_the_latest_attempt_that_did_not_fail():
    attempts = [
        Attempt(attempt=1, status="successful"),
        Attempt(attempt=2, status="pending"),
        Attempt(attempt=3, status="broken file"),
    ]
    live = live_submission(attempts, {2: (5, 0.7)})
    assert live == Live(attempt=2, state="pending", exp_id=5, val_f1=0.7)
    outside = live_submission(attempts[:1], {}, outside_f1=0.66)
    assert outside == Live(attempt=1, state="successful", exp_id=None, val_f1=0.66)
    assert live_submission([attempts[2]], {}) is None


def test_next_slot():
    assert next_slot(None, 900) == 0
    assert next_slot(100, 900) == 1000 + SLACK_S
    assert next_slot(100, 900, blocked_until=5000) == 5000
