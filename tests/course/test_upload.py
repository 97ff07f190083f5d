"""One upload per decision, in process and in milliseconds: a scripted course server (the test decides
what each call answers and when the server records an upload) and clocks the test moves by hand.

The stand-in server (``test_scheduler.py``) covers the same rules over HTTP; these cover the races and
the clock faults that a real server cannot be made to produce on cue.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from kdq.course.errors import RateLimited, ServerError, Unreachable
from kdq.course.models import EASTERN, Attempt, SubmitReceipt
from kdq.course.scheduler import INTENT, Scheduler
from kdq.stages import Stage

from .test_scheduler import make_ready

WINDOW_S = 60.0
TIMEOUT_S = 1.0
UNKNOWN_FOR_S = WINDOW_S + WINDOW_S + 2 * TIMEOUT_S  # the interval plus the grace (Uploader.grace_s)


class Clocks:
    """A wall clock and a monotonic clock that move together, except when the wall clock jumps."""

    def __init__(self) -> None:
        self.now, self.mono = 1_800_000_000.0, 5_000.0

    def wall(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.mono += seconds

    def jump(self, seconds: float) -> None:
        """NTP stepping the clock, a resume from suspend: only the wall clock moves."""
        self.now += seconds


class Scripted:
    """The course server as the scheduler's client sees it. ``recorded``: the attempts the server holds
    (dicts as the status list shows them); ``on_post``: what a POST does (default: record and answer)."""

    team = "Team Rocket"
    request_timeout_s = TIMEOUT_S

    def __init__(self, clocks: Clocks) -> None:
        self.clocks = clocks
        self.recorded: list[dict] = []
        self.posts: list[Path] = []
        self.on_post = self.record
        self.listing = None  # recorded → the list shown (a fault); None: as recorded

    def record(self, path, size: int | None = None, at: float | None = None) -> SubmitReceipt:
        n = len(self.recorded) + 1
        when = datetime.fromtimestamp(self.clocks.now if at is None else at, UTC).astimezone(EASTERN)
        size = Path(path).stat().st_size if size is None else size
        self.recorded.append(
            {
                "attempt": n,
                "status": "pending",
                "model_size": round(size / 1024 / 1024, 4),
                "submitted_at": when.strftime("%b %d, %Y %I:%M:%S %p"),
                "score": None,
            }
        )
        return SubmitReceipt(attempt=n, status="pending", message=f"Attempt #{n}.")

    def grade(self, n: int, status: str = "successful", score: float | None = 9.0) -> None:
        self.recorded[n - 1].update(status=status, score=score)

    def submit(self, path) -> SubmitReceipt:
        self.posts.append(Path(path))
        return self.on_post(path)

    def status(self) -> list[Attempt]:
        rows = self.recorded if self.listing is None else self.listing(self.recorded)
        return [Attempt.from_raw(r, i + 1) for i, r in enumerate(rows)]

    def leaderboard(self):
        raise Unreachable("no leaderboard in this test", maybe_sent=False)


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


@pytest.fixture
def server(clocks) -> Scripted:
    return Scripted(clocks)


@pytest.fixture
def sched(store, settings, server, clocks) -> Scheduler:
    settings.submit_interval_s, settings.status_interval_s = WINDOW_S, 0.0
    return Scheduler(store, server, settings, clock=clocks.wall, monotonic=clocks.monotonic, retry_s=1.0)


@pytest.fixture
def model(tmp_path) -> Path:
    path = tmp_path / "model.pt"
    path.write_bytes(b"m" * 150_326)
    return path


def lose_the_answer(path):
    raise ServerError("502 Bad Gateway (the answer was lost)")


def test_an_experiment_changed_between_the_plan_and_the_upload_is_never_sent(
    sched, store, server, tmp_path, model
):
    """The ``ready → submitting`` compare-and-set lost (a cancel came in between): no POST."""
    i = make_ready(store, tmp_path, model, 0.9, "always")
    real = sched.ledger.set_intent

    def cancel_meanwhile(intent):
        real(intent)
        store.request_cancel(i)

    sched.ledger.set_intent = cancel_meanwhile
    sched.tick()
    assert server.posts == [] and store.get(i).stage is Stage.CANCELLED
    assert store.get_meta_json(INTENT) is None
    [row] = store.query("select state from submissions where exp_id = ?", [i])
    assert row["state"] == "abandoned"


def test_an_unknown_upload_stays_unknown_until_a_full_window_has_passed(
    sched, store, server, clocks, tmp_path, model
):
    i = make_ready(store, tmp_path, model, 0.9, "always")
    server.on_post = lose_the_answer
    sched.tick()
    assert store.get(i).stage is Stage.SUBMITTING and len(server.posts) == 1
    for _ in range(10):  # the status list does not show it yet: unknown, never "not sent"
        clocks.advance(UNKNOWN_FOR_S / 12)
        sched.tick()
        assert store.get(i).stage is Stage.SUBMITTING and len(server.posts) == 1
    server.record(server.posts[0])  # the server recorded it late: adopted, not re-sent
    sched.tick()
    assert store.get(i).stage is Stage.EVALUATING and store.get(i).server_attempt == 1
    assert len(server.posts) == 1


def test_an_upload_missing_a_full_window_later_goes_back_and_is_sent_once_more(
    sched, store, server, clocks, tmp_path, model
):
    i = make_ready(store, tmp_path, model, 0.9, "always")
    server.on_post = lose_the_answer
    sched.tick()
    clocks.advance(UNKNOWN_FOR_S + 1)
    server.on_post = server.record
    sched.tick()  # a list read after the deadline does not show it: it never reached the server
    assert any("did not reach the server" in e["message"] for e in store.events(i))
    assert store.get(i).stage is Stage.EVALUATING and len(server.posts) == 2
    sched.tick()
    assert len(server.posts) == 2


def test_a_forward_jump_of_the_wall_clock_does_not_end_an_unknown_upload(
    sched, store, server, clocks, tmp_path, model
):
    """Deadlines that measure elapsed time use the monotonic clock: a +2 h step changes nothing."""
    i = make_ready(store, tmp_path, model, 0.9, "always")
    server.on_post = lose_the_answer
    sched.tick()
    clocks.advance(4)
    clocks.jump(7200)
    sched.tick()
    assert store.get(i).stage is Stage.SUBMITTING and len(server.posts) == 1
    clocks.advance(10)
    server.record(server.posts[0], at=clocks.now - 10)  # the server recorded it late
    sched.tick()
    assert store.get(i).stage is Stage.EVALUATING and len(server.posts) == 1


@pytest.mark.parametrize("how", ["rate_limited", "refused_connection", "not_on_the_list"])
def test_a_cancel_during_an_upload_is_honoured_when_the_upload_is_put_back(
    sched, store, server, clocks, tmp_path, model, how
):
    i = make_ready(store, tmp_path, model, 0.9, "always")

    def cancel_then_fail(path):
        store.request_cancel(i)  # `kdq cancel` while the POST is on the wire
        if how == "rate_limited":
            raise RateLimited("Rate limit: wait 1 minutes", 60)
        if how == "refused_connection":
            raise Unreachable("connection refused", maybe_sent=False)
        raise ServerError("502 Bad Gateway")

    server.on_post = cancel_then_fail
    sched.tick()
    if how == "not_on_the_list":
        assert store.get(i).stage is Stage.SUBMITTING  # may have gone: it cannot be taken back yet
        clocks.advance(UNKNOWN_FOR_S + 1)
        sched.tick()
    assert store.get(i).stage is Stage.CANCELLED
    assert "cancelled by the user" in store.events(i)[-1]["message"]
    server.on_post = server.record
    for _ in range(5):
        clocks.advance(WINDOW_S)
        sched.tick()
    assert len(server.posts) == 1 and server.recorded == []


def evaluating(sched, store, server, tmp_path, model, clocks) -> int:
    i = make_ready(store, tmp_path, model, 0.9, "always")
    sched.tick()
    assert store.get(i).stage is Stage.EVALUATING
    clocks.advance(1)
    return i


@pytest.mark.parametrize("word", ["evaluation pending", "in queue", "", None])
def test_a_status_word_kdq_does_not_know_is_not_final(sched, store, server, clocks, tmp_path, model, word):
    """Only a known final word or a score ends an attempt: 'evaluation pending' or no status at all
    is not yet graded, and the real grade is recorded when it comes."""
    i = evaluating(sched, store, server, tmp_path, model, clocks)
    if word is None:
        del server.recorded[0]["status"]
    else:
        server.recorded[0]["status"] = word
    for _ in range(3):
        sched.tick()
        clocks.advance(5)
    assert store.get(i).stage is Stage.EVALUATING
    assert any("not a final word" in e["message"] for e in store.events(i))
    from kdq.course.status import header_lines

    assert "not final yet" in header_lines(store, now=clocks.now, interval_s=WINDOW_S)[-1]
    server.grade(1, "successful", 8.5)
    sched.tick()
    assert store.get(i).stage is Stage.DONE and store.get(i).server_score == 8.5


def test_a_score_with_an_unknown_word_is_a_grade(sched, store, server, clocks, tmp_path, model):
    i = evaluating(sched, store, server, tmp_path, model, clocks)
    server.grade(1, "scored", 7.25)
    sched.tick()
    assert store.get(i).stage is Stage.DONE and store.get(i).server_score == 7.25


@pytest.mark.parametrize("fault", ["empty", "renumbered"])
def test_an_attempt_missing_from_one_list_is_not_lost(sched, store, server, clocks, tmp_path, model, fault):
    i = evaluating(sched, store, server, tmp_path, model, clocks)
    if fault == "empty":
        server.listing = lambda rows: []
    else:
        server.listing = lambda rows: [{**r, "attempt": r["attempt"] + 100} for r in rows]
    for _ in range(3):
        sched.tick()
        clocks.advance(10)
    assert store.get(i).stage is Stage.EVALUATING
    server.listing = None
    server.grade(1, "successful", 9.5)
    sched.tick()
    assert store.get(i).stage is Stage.DONE and store.get(i).server_score == 9.5
    assert len(server.posts) == 1


def test_an_attempt_gone_for_a_full_window_is_lost_without_advice_to_upload_it_again(
    sched, store, server, clocks, tmp_path, model
):
    i = evaluating(sched, store, server, tmp_path, model, clocks)
    server.listing = lambda rows: []
    for _ in range(8):
        sched.tick()
        clocks.advance(UNKNOWN_FOR_S / 6)
    assert store.get(i).stage is Stage.DONE
    why = store.events(i)[-1]["message"]
    assert "no longer on the server's status list" in why and "sends it again" not in why
    assert len(server.posts) == 1


def test_an_outside_upload_of_the_same_size_made_with_kdq_server_submit_is_never_taken_for_ours(
    sched, store, server, clocks, tmp_path, model
):
    """Our answer is lost and our upload never recorded; meanwhile `kdq server submit` uploads another
    model of nearly the same size. kdq knows that upload is not its lost one."""
    from kdq.course.ledger import Ledger

    i = make_ready(store, tmp_path, model, 0.9, "always")
    server.on_post = lose_the_answer
    sched.tick()
    clocks.advance(5)
    receipt = server.record(model, size=150_390)  # what `kdq server submit` does, and writes down:
    Ledger(store, clocks.wall).note_outside(receipt.attempt, size=150_390)
    for _ in range(5):
        sched.tick()
        assert store.get(i).stage is Stage.SUBMITTING and store.get(i).server_attempt is None
        clocks.advance(UNKNOWN_FOR_S / 6)
    clocks.advance(UNKNOWN_FOR_S / 6)
    server.on_post = server.record
    sched.tick()  # a full window and no attempt of ours: it never arrived, so it goes (once)
    assert store.get(i).server_attempt == 2 and len(server.posts) == 2


def test_two_attempts_that_could_be_ours_leave_the_upload_unknown_and_never_resend_it(
    sched, store, server, clocks, tmp_path, model
):
    """A web upload of the same size (not through kdq) and ours both appear: kdq cannot tell which is
    its own. It adopts neither grade, says so, and never uploads it again."""
    i = make_ready(store, tmp_path, model, 0.9, "always")
    server.on_post = lose_the_answer
    sched.tick()
    server.record(model, size=150_390)  # a teammate's upload from the web page
    server.record(model)  # ours, recorded late
    for _ in range(8):
        sched.tick()
        clocks.advance(UNKNOWN_FOR_S / 6)
    exp = store.get(i)
    assert exp.stage is Stage.DONE and exp.server_attempt is None and exp.server_score is None
    assert "cannot tell" in store.events(i)[-1]["message"]
    assert len(server.posts) == 1


def test_a_backward_jump_of_the_wall_clock_does_not_stall_the_next_upload(
    sched, store, server, clocks, tmp_path, model
):
    """The window counts from our last upload by the monotonic clock, and a status list fetched "in the
    future" is stale, not fresh: a -1 h step costs nothing."""
    first = evaluating(sched, store, server, tmp_path, model, clocks)
    server.grade(1)
    sched.tick()
    assert store.get(first).stage is Stage.DONE
    clocks.jump(-3600)
    nxt = make_ready(store, tmp_path, model, 0.95, "always")
    sched.tick()
    assert store.get(nxt).stage is Stage.READY  # the window (60 s) is not over yet
    clocks.advance(WINDOW_S + 3)  # the window and its slack, by the monotonic clock
    sched.tick()
    assert store.get(nxt).stage is Stage.EVALUATING and len(server.posts) == 2


def test_a_backward_jump_does_not_end_the_chain_of_scheduler_ticks(
    store, settings, server, clocks, tmp_path, model
):
    """The next tick is due by the monotonic clock; an outside upload whose server time is now "in the
    future" holds the window for one interval at most, never for the jump."""
    from kdq.course.scheduler import run_tick

    settings.submit_interval_s, settings.status_interval_s = WINDOW_S, 0.0
    server.record(model, size=1)  # an upload from elsewhere: the window is closed for 60 s
    i = make_ready(store, tmp_path, model, 0.9, "always")
    kw = {"client": server, "clock": clocks.wall, "monotonic": clocks.monotonic, "retry_s": 1.0}
    delay = run_tick(settings, store, **kw)
    assert store.get(i).stage is Stage.READY and 50 < delay <= WINDOW_S + 5
    clocks.jump(-3600)
    clocks.advance(delay)
    delay = run_tick(settings, store, **kw)  # due by the monotonic clock: it ticks
    assert delay is not None and delay <= WINDOW_S + 5
    clocks.advance(delay)
    run_tick(settings, store, **kw)
    assert store.get(i).stage is Stage.EVALUATING


def test_an_adopted_upload_from_a_server_clock_hours_behind_still_closes_the_window(
    sched, store, server, clocks, tmp_path, model
):
    """The server records in its own time, 3 h behind ours: the window counts from our POST, not from
    the server's time, so the next upload does not meet a 429 a few seconds later."""
    first = make_ready(store, tmp_path, model, 0.9, "always")

    def behind(path):
        server.record(path, at=clocks.now - 3 * 3600)
        raise ServerError("502 Bad Gateway (the answer was lost)")

    server.on_post = behind
    sched.tick()
    clocks.advance(2)
    server.on_post = server.record
    nxt = make_ready(store, tmp_path, model, 0.95, "always")
    sched.tick()
    assert store.get(first).stage is Stage.EVALUATING and store.get(nxt).stage is Stage.READY
    assert len(server.posts) == 1


def test_an_attempt_declared_lost_that_comes_back_graded_is_recorded(
    sched, store, server, clocks, tmp_path, model
):
    i = evaluating(sched, store, server, tmp_path, model, clocks)
    server.listing = lambda rows: []
    for _ in range(8):
        sched.tick()
        clocks.advance(UNKNOWN_FOR_S / 6)
    assert store.get(i).stage is Stage.DONE and store.get(i).server_score is None
    server.listing = None
    server.grade(1, "successful", 9.25)
    clocks.advance(5)
    sched.tick()
    assert store.get(i).server_score == 9.25 and len(server.posts) == 1
    assert "back on the server's status list, graded" in store.events(i)[-1]["message"]
