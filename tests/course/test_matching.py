"""Which attempt is which upload: number, size and recorded time, never the number alone."""

from __future__ import annotations

from datetime import UTC, datetime

from kdq.course.matching import find_upload, is_ours, read_list, same_size, tolerance_s
from kdq.course.models import Attempt

T0 = 1_800_000_000.0
MB = 1024 * 1024


def attempt(n: int, at: float | None, size_mb: float = 1.0, text: str | None = None) -> Attempt:
    when = None if at is None else datetime.fromtimestamp(at, UTC)
    return Attempt(
        attempt=n, status="pending", size_mb=size_mb, submitted_at=when, submitted_at_text=text or str(at)
    )


def test_sizes_in_mib_or_mb_and_unknown_sizes():
    assert same_size(1.0, MB) and same_size(1.05, 1_050_000) and same_size(None, 5)
    assert not same_size(2.0, MB)


def test_an_upload_is_found_by_size_and_time_not_by_number():
    theirs = attempt(2, T0 + 5, size_mb=3.0)
    before = attempt(1, T0 - 900)  # our previous upload: a full window earlier
    ours = attempt(3, T0 + 8)
    found = find_upload([before, theirs, ours], since=T0, size_bytes=MB, baseline=1, tol_s=tolerance_s(900))
    assert found == [ours]
    assert find_upload([before, theirs], since=T0, size_bytes=MB, baseline=1, tol_s=450) == []
    restarted = attempt(1, T0 + 3)  # numbers started again: found by its time all the same
    assert find_upload([restarted], since=T0, size_bytes=MB, baseline=5, tol_s=450) == []
    assert find_upload([restarted], since=T0, size_bytes=MB, baseline=5, tol_s=450, restarted=True) == [
        restarted
    ]
    assert find_upload([before], since=T0, size_bytes=MB, baseline=0, tol_s=450, restarted=True) == []
    behind = attempt(2, T0 - 3 * 3600)  # a server clock hours behind: the number still tells
    assert find_upload([before, behind], since=T0, size_bytes=MB, baseline=1, tol_s=450) == [behind]


def test_an_upload_kdq_made_outside_the_queue_is_never_a_candidate_and_two_candidates_are_both_told():
    ours, theirs = attempt(2, T0 + 5), attempt(3, T0 + 9)
    kw = {"since": T0, "size_bytes": MB, "baseline": 1, "tol_s": 450}
    assert find_upload([ours, theirs], **kw) == [ours, theirs]  # one size, two attempts: cannot tell
    assert find_upload([ours, theirs], **kw, outside={3}) == [ours]


def test_sizes_match_to_the_precision_the_server_shows():
    assert same_size(round(150_326 / 2**20, 2), 150_390)  # 0.14: either file
    assert same_size(150_326 / 2**20, 150_326) and not same_size(150_326 / 2**20, 150_390)
    assert same_size(round(1_500_000 / 2**20, 4), 1_500_000)
    assert not same_size(round(1_500_000 / 2**20, 4), 1_500_400)


def test_our_attempt_is_the_one_with_our_time_and_size():
    mine = attempt(1, T0 + 2)
    assert is_ours(mine, number=1, size_bytes=MB, recorded_at=None, since=T0, tol_s=1.5)
    assert is_ours(mine, number=1, size_bytes=MB, recorded_at=T0 + 2, since=T0, tol_s=1.5)
    after_restart = attempt(1, T0 + 10)  # attempt #1 again, someone else's moment
    assert not is_ours(after_restart, number=1, size_bytes=MB, recorded_at=T0 + 2, since=T0, tol_s=1.5)
    kw = dict(number=1, size_bytes=MB, recorded_at=None, since=T0, tol_s=1.5)
    assert not is_ours(after_restart, **kw, restarted=True) and is_ours(after_restart, **kw)
    behind = attempt(1, T0 - 3 * 3600)  # never seen yet, a server clock hours behind ours
    assert is_ours(behind, **kw)
    assert not is_ours(mine, number=2, size_bytes=MB, recorded_at=None, since=T0, tol_s=1.5)
    assert not is_ours(mine, number=1, size_bytes=3 * MB, recorded_at=None, since=T0, tol_s=1.5)


def test_future_times_are_clamped_once_and_kept():
    now = T0
    ahead = attempt(1, T0 + 5 * 3600, text="ahead")
    seen = read_list([ahead], [], now)
    assert seen.ahead_s == 5 * 3600 and seen.attempts[0].submitted_at.timestamp() == now
    later = read_list([ahead], seen.attempts, now + 600)  # the same attempt keeps the time first seen
    assert later.attempts[0].submitted_at.timestamp() == now and later.ahead_s == 0


def test_a_list_that_shrinks_or_changes_is_a_restart():
    old = [attempt(1, T0, text="a"), attempt(2, T0 + 900, text="b")]
    assert read_list(old, old, T0 + 1000).restarted == ""
    assert "went from 2 attempts" in read_list([], old, T0 + 1000).restarted
    assert (
        "attempt #1 was submitted"
        in read_list([attempt(1, T0 + 950, text="c")], old[:1], T0 + 1000).restarted
    )
