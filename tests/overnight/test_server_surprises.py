"""What a real server does that kdq's rules did not foresee, against a real ``kdq worker``: a cancel
while an upload is refused, a status word kdq does not know, a status list empty for a while. Each
ends with one upload per decision (none for the cancelled one) and every grade recorded."""

from __future__ import annotations

import time

import pytest

from kdq.stages import Stage

from .test_one_upload import posts

pytestmark = pytest.mark.slow


def test_a_cancel_during_an_upload_the_server_refuses_is_never_uploaded(overnight, tiny_model):
    h = overnight()
    h.server.inject("rate_limit", route="submit", wait_s=1, unit="seconds", delay_s=4)
    i = h.place(tiny_model, val_f1=0.6)
    h.start_worker()
    h.wait_stage(i, Stage.SUBMITTING, 60)
    h.cli("cancel", i)
    h.wait_stage(i, Stage.CANCELLED, 60)
    time.sleep(8)  # windows (3 s) go by: nothing may upload it again
    assert posts(h) == 1 and h.server.course.submissions == [], h.report()
    assert "cancelled by the user" in h.store.events(i)[-1]["message"]


def test_a_status_word_kdq_does_not_know_is_waited_out_and_the_grade_recorded(overnight, tiny_model):
    h = overnight(eval_delay_s=8)
    i = h.place(tiny_model, val_f1=0.6)
    h.start_worker()
    h.wait(lambda: h.server.course.submissions, 60, "the upload")
    sub = h.server.course.submissions[0]
    sub.status = "evaluation pending"  # the stand-in grades it later and writes "successful"
    h.wait_stage(i, Stage.DONE, 120)
    h.check_delivered([i])
    assert any("not a final word" in e["message"] for e in h.store.events(i)), h.report()


def test_a_status_list_empty_for_a_while_loses_no_grade(overnight, tiny_model):
    from kdq.course.fake_server.course import Outcome

    h = overnight(eval_delay_s=6)
    course = h.server.course
    real = course.status
    i = h.place(tiny_model, val_f1=0.6)
    h.start_worker()
    h.wait_stage(i, Stage.EVALUATING, 60)
    course.status = lambda token: Outcome(200, [])  # for 5 s the server lists nothing
    time.sleep(5)
    course.status = real
    h.wait_stage(i, Stage.DONE, 120)
    h.check_delivered([i])
    assert posts(h) == 1
