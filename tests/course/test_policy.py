"""The pure submission policy."""

from dataclasses import replace

from kdq.course.expected import Deadline
from kdq.course.models import Attempt
from kdq.course.policy import SLACK_S, Candidate, Graded, Live, live_submission, next_slot, plan
from kdq.course.size_factor import assumed

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
    why = p.finish[0][2]
    assert "expected score 7.900 (no holdout) vs expected 8.000 (no holdout)" in why and "kdq submit 1" in why


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


# ---------------------------------------------------------------- playing for the score

# The previous homework's size term: 1 point, the size normalised between 1 and 23 MiB.
CAPPED = assumed(((1.0, 0.0), (23.0, 1.0)))


def test_a_small_model_beats_a_slightly_better_big_one_under_the_size_factor():
    big, small = Candidate(1, 0.80, size_mb=20.0), Candidate(2, 0.79, size_mb=2.0)
    assert go([big, small]).submit == 2  # the default prior (0 at 1 MiB, 1 point at 25 MiB)
    p = plan([big, small], None, now=NOW, last_submit_at=None, interval_s=900.0, factor=CAPPED)
    assert p.submit == 2 and "expected score 7.855" in p.reason  # 7.90 - 0.045 against 8.00 - 0.864


def test_a_big_model_never_replaces_a_small_live_one_it_only_matches_in_f1():
    live = Live(attempt=3, state="successful", exp_id=7, val_f1=0.79, size_mb=2.0)
    p = go([Candidate(1, 0.80, size_mb=20.0)], live)
    assert p.submit is None and p.finish[0][:2] == (1, "skipped")


def test_a_candidate_within_the_noise_of_the_live_one_is_skipped_with_the_numbers():
    live = Live(
        attempt=5, state="successful", exp_id=7, val_f1=0.800, size_mb=4.0, ci=(0.78, 0.82), holdout=True
    )
    close = Candidate(1, 0.805, size_mb=4.0, ci=(0.785, 0.825), holdout=True)
    p = go([close], live)
    assert p.submit is None and [(i, kind) for i, kind, _ in p.finish] == [(1, "skipped")]
    why = p.finish[0][2]
    assert "expected score 7.925 [7.725, 8.125]" in why and "expected 7.875 [7.675, 8.075]" in why
    assert "chance better 0.61 < 0.80 needed" in why and "attempt #5, experiment 7" in why
    clear = Candidate(2, 0.84, size_mb=4.0, ci=(0.825, 0.855), holdout=True)
    assert go([close, clear], live).submit == 2  # well outside the noise: it goes


def test_the_skip_line_names_the_live_submissions_server_score_beside_the_expected_one_it_compares():
    """Both sides are compared as local estimates (the same bias on each); the server's score of the live
    one, which `kdq submit` and the leaderboard show, is named too, so the two numbers are not confused."""
    live = replace(GRADED_LIVE, score=8.12, policy="if_better")  # defined with the explore tests below
    p = go([near(1, 0.805, policy="if_better")], live)
    why = p.finish[0][2]
    assert "expected 7.875 [7.675, 8.075] of the live submission" in why
    assert "its server score 8.120" in why


def test_the_confidence_is_a_setting():
    live = Live(attempt=5, state="successful", exp_id=7, val_f1=0.800, size_mb=4.0, ci=(0.78, 0.82))
    close = Candidate(1, 0.805, size_mb=4.0, ci=(0.785, 0.825))
    p = plan([close], live, now=NOW, last_submit_at=None, interval_s=900.0, confidence=0.6)
    assert p.submit == 1


def test_a_submission_made_outside_kdq_is_judged_by_its_leaderboard_score():
    outside = Live(attempt=2, state="successful", score=7.90)
    p = go([Candidate(1, 0.79, size_mb=2.0)], outside)  # 7.900 - 0.042 for 2 MiB under the prior
    assert (
        p.finish[0][1] == "skipped"
        and "expected score 7.858 (no holdout) vs leaderboard score 7.900" in p.finish[0][2]
    )
    assert go([Candidate(1, 0.80, size_mb=2.0)], outside).submit == 1


def test_the_highest_expected_score_goes_first_not_the_highest_f1():
    cands = [Candidate(1, 0.85, "always", size_mb=22.0), Candidate(2, 0.83, "always", size_mb=1.5)]
    assert plan(cands, None, now=NOW, last_submit_at=None, interval_s=900.0, factor=CAPPED).submit == 2


# ---------------------------------------------------------------- the deadline

DEADLINE = Deadline(at=NOW + 3 * 3600, interval_s=900.0, grading_s=300.0)  # closing 21 min before


def at(when: float, cands, live=None, graded=(), best_known=None, last=None):
    return plan(
        cands,
        live,
        now=when,
        last_submit_at=last,
        interval_s=900.0,
        factor=CAPPED,
        deadline=DEADLINE,
        graded=graded,
        best_known=best_known,
    )


def test_deadline_phases():
    assert DEADLINE.reserve_s == 1260 and DEADLINE.phase(NOW) == "open"
    assert DEADLINE.phase(DEADLINE.at - 1260 - 4 * 900) == "final"
    assert DEADLINE.phase(DEADLINE.at - 1260) == "closing" and DEADLINE.phase(DEADLINE.at) == "over"
    slow = Deadline(at=0.0, interval_s=900.0, grading_s=1000.0)
    assert slow.reserve_s == 2060  # grading slower than the window: wait for it, twice


def test_in_the_final_windows_only_the_best_expected_score_so_far_goes():
    final = DEADLINE.final_at + 60
    live = Live(attempt=3, state="successful", exp_id=7, val_f1=0.70, size_mb=2.0)
    second, best = Candidate(1, 0.80, "always", size_mb=2.0), Candidate(2, 0.82, "always", size_mb=2.0)
    assert at(final, [second], live, best_known=8.1).submit is None  # a model validated earlier was better
    assert "not the best expected score so far" in at(final, [second], live, best_known=8.1).reason
    assert at(final, [second, best], live, best_known=8.1).submit == 2
    assert at(DEADLINE.final_at - 60, [second], live, best_known=8.1).submit == 1  # before: as usual


def test_closing_no_new_model_goes_and_a_worse_live_one_is_replaced_by_the_best_graded():
    closing = DEADLINE.closing_at + 60
    graded = (Graded(exp_id=4, attempt=2, score=7.60), Graded(exp_id=7, attempt=3, score=7.20))
    worse_live = Live(attempt=3, state="successful", exp_id=7, val_f1=0.78, size_mb=2.0, score=7.20)
    p = at(closing, [Candidate(9, 0.95, size_mb=2.0)], worse_live, graded)
    assert p.submit is None and p.restore == 4 and "best graded" in p.reason
    best_live = Live(attempt=2, state="successful", exp_id=4, val_f1=0.78, size_mb=2.0, score=7.60)
    p = at(closing, [Candidate(9, 0.95, size_mb=2.0)], best_live, graded)
    assert p.submit is None and p.restore is None and "deadline is closing" in p.reason
    pending = Live(attempt=5, state="pending", exp_id=8, val_f1=0.9, size_mb=2.0)
    assert at(closing, [], pending, graded).restore is None  # it may be the best: look once it is graded
    assert at(closing, [Candidate(9, 0.9, size_mb=2.0)], None).submit == 9  # nothing live: anything beats it
    assert at(DEADLINE.at + 1, [Candidate(9, 0.9, size_mb=2.0)], None).submit is None  # too late to count


def test_a_worse_model_is_never_left_live_at_the_deadline():
    """Walk the last three hours minute by minute while models arrive: one that looks best locally but
    grades worse goes in the final windows, so the best graded one is put back before the deadline."""
    truth = {1: 7.0, 2: 7.6, 3: 7.3, 4: 7.1}  # server scores; 3 and 4 look better locally than they are
    local = {1: 0.71, 2: 0.77, 3: 0.80, 4: 0.82}
    arrives = {1: NOW, 2: NOW + 1800, 3: DEADLINE.closing_at - 120, 4: DEADLINE.closing_at + 60}
    ready: dict[int, Candidate] = {}
    graded: list[Graded] = []
    uploads: list[tuple[float, int]] = []  # (time, exp id)
    live, now = None, NOW
    while now < DEADLINE.at:
        ready.update({i: Candidate(i, local[i], size_mb=2.0) for i, t in arrives.items() if t == now})
        if live is not None and live.state == "pending" and now - uploads[-1][0] >= DEADLINE.grading_s:
            graded.append(Graded(live.exp_id, live.attempt, truth[live.exp_id]))
            live = Live(
                live.attempt, "successful", live.exp_id, local[live.exp_id], 2.0, score=truth[live.exp_id]
            )
        p = at(now, list(ready.values()), live, tuple(graded), last=uploads[-1][0] if uploads else None)
        if p.restore is not None:  # what the scheduler does: `kdq submit ID`
            ready[p.restore] = Candidate(p.restore, local[p.restore], requested=True, size_mb=2.0)
        for exp_id, _, _ in p.finish:
            ready.pop(exp_id)
        if p.submit is not None:
            ready.pop(p.submit)
            uploads.append((now, p.submit))
            live = Live(len(uploads), "pending", p.submit, local[p.submit], 2.0)
        now += 60
    assert [e for _, e in uploads] == [1, 2, 3, 2]  # 3 went in the final windows, 4 came too late
    assert live.state == "successful" and live.exp_id == 2 and live.score == max(truth.values()) == 7.6


# ---------------------------------------------------------------- explore: the best graded of several

# Two models within each other's noise: 0.805 [0.785, 0.825] against a live 0.800 [0.780, 0.820],
# both 4 MiB (expected 7.925 [7.725, 8.125] against 7.875 [7.675, 8.075]: chance better 0.61).
GRADED_LIVE = Live(
    attempt=5,
    state="successful",
    exp_id=7,
    val_f1=0.800,
    size_mb=4.0,
    ci=(0.78, 0.82),
    holdout=True,
    score=7.90,
    policy="explore",
)


def near(exp_id, f1, policy="explore", lo=0.02):
    return Candidate(exp_id, f1, policy, size_mb=4.0, ci=(f1 - lo, f1 + lo), holdout=True)


LIVE_GRADED = (Graded(7, 5, 7.90),)


def explore(cands, live=GRADED_LIVE, graded=LIVE_GRADED, work_left=True, **kw):
    return plan(
        cands, live, now=NOW, last_submit_at=None, interval_s=900.0, graded=graded, work_left=work_left, **kw
    )


def test_explore_submits_an_overlapping_candidate_that_if_better_skips():
    assert explore([near(1, 0.805, "if_better")]).finish[0][:2] == (1, "skipped")  # chance better 0.61
    p = explore([near(1, 0.805)])
    assert p.submit == 1 and p.finish == ()
    assert (
        "upper bound 8.125" in p.reason and "best graded score 7.900 (experiment 7, attempt #5)" in p.reason
    )


def test_explore_takes_the_highest_upper_bound_not_the_highest_expected_score():
    steady, wide = (
        near(1, 0.810, lo=0.005),
        near(2, 0.805, lo=0.03),
    )  # 7.975 [7.925, 8.025], 7.925 [7.625, 8.225]
    assert explore([steady, wide]).submit == 2


def test_explore_never_submits_a_candidate_whose_upper_bound_is_below_the_best_graded():
    graded = (Graded(4, 3, 8.20), Graded(7, 5, 7.90))  # the live one (7) graded worse than 4 did
    p = explore([near(1, 0.805)], graded=graded)  # upper bound 8.125 < 8.200
    assert p.submit is None and [(i, kind) for i, kind, _ in p.finish] == [(1, "skipped")]
    why = p.finish[0][2]
    assert (
        "upper bound 8.125" in why and "below the best graded score 8.200 (experiment 4, attempt #3)" in why
    )
    assert "kdq submit 1" in why
    assert (
        explore([near(1, 0.805)], graded=(), live=None).submit == 1
    )  # nothing graded: nothing to stay under


def test_explore_waits_for_the_live_submission_to_be_graded():
    pending = Live(attempt=6, state="pending", exp_id=8, val_f1=0.80, size_mb=4.0, policy="explore")
    p = explore([near(1, 0.805)], live=pending)
    assert p.submit is None and p.finish == () and "being graded" in p.reason


def test_explore_restores_the_best_graded_at_the_end_of_the_night():
    graded = (Graded(4, 3, 8.20), Graded(7, 5, 7.90))
    p = explore([], graded=graded, work_left=True)  # more runs to come: they may be worth a try
    assert p.restore is None and "experiment 4 goes back" in p.reason and "7.900" in p.reason
    p = explore([], graded=graded, work_left=False)  # the queue is empty and nothing trains
    assert p.restore == 4 and p.submit is None
    assert "end of the night" in p.reason and "8.200" in p.reason and "7.900" in p.reason
    p = explore([near(1, 0.805)], graded=graded, work_left=False)  # only a candidate below the best graded
    assert p.restore == 4 and p.finish[0][:2] == (1, "skipped")
    best_live = replace(GRADED_LIVE, attempt=3, exp_id=4, score=8.20)
    assert explore([], live=best_live, graded=graded, work_left=False).restore is None  # it already counts
    as_today = replace(GRADED_LIVE, policy="if_better")
    assert explore([], live=as_today, graded=graded, work_left=False).restore is None  # if_better: as today


def test_explore_restores_the_best_graded_before_the_deadline():
    graded = (Graded(4, 3, 8.20), Graded(7, 5, 7.90))
    final = DEADLINE.final_at + 60
    p = plan(
        [],
        GRADED_LIVE,
        now=final,
        last_submit_at=None,
        interval_s=900.0,
        deadline=DEADLINE,
        graded=graded,
        work_left=True,
    )
    assert p.restore == 4 and "deadline final" in p.reason
    assert at(DEADLINE.final_at - 60, [near(1, 0.83)], GRADED_LIVE, graded).submit == 1  # open: it may go
    held = at(DEADLINE.closing_at + 60, [near(1, 0.83)], GRADED_LIVE, graded)
    assert held.submit is None and held.restore == 4  # closing: no new model, the best graded goes back


def test_a_parent_waits_for_its_refit_except_in_the_final_windows():
    parent = Candidate(1, 0.85, size_mb=2.0, refit=2)
    p = go([parent])
    assert (
        p.submit is None and p.finish == () and "experiment 1 waits for its refit, experiment 2" in p.reason
    )
    assert at(DEADLINE.final_at + 60, [parent]).submit == 1  # a model in hand beats one still training


def test_a_refit_succeeds_its_live_parent_whatever_the_policy():
    live = Live(
        attempt=3, state="successful", exp_id=1, val_f1=0.80, size_mb=2.0, ci=(0.78, 0.82), holdout=True
    )
    same = dict(size_mb=2.0, ci=(0.78, 0.82), holdout=True)
    assert go([Candidate(2, 0.80, **same)], live).finish[0][:2] == (2, "skipped")  # a mere equal: skipped
    assert go([Candidate(2, 0.80, refit_of=1, **same)], live).submit == 2  # its refit: goes
    assert go([Candidate(2, 0.80, "explore", refit_of=1, **same)], live).submit == 2
    pending = replace(live, state="pending")
    assert go([Candidate(2, 0.80, refit_of=1, **same)], pending).submit is None  # once it is graded


def test_if_better_waits_for_kdq_submit_when_the_file_was_never_scored_as_the_grader_scores_it():
    from kdq.course.scoring import scored

    unscored = Candidate(1, 0.9, "if_better", scored=False)
    p = go([unscored, Candidate(2, 0.6, "if_better")])
    assert p.submit == 2  # the scored one goes, though its F1 is lower
    alone = go([unscored])
    assert alone.submit is None and "waits for `kdq submit 1`: its file was never scored" in alone.reason
    assert go([replace(unscored, requested=True)]).submit == 1  # kdq submit 1: the user's decision
    assert not scored({"holdout_files": ["a.jpg"], "grader_f1": None}) and scored({"holdout_files": []})
    assert scored({"holdout_files": ["a.jpg"], "grader_f1": 0.8})
