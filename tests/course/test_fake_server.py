"""The stand-in's HTTP shapes, wordings, limits and fault controls, seen with a bare HTTP client."""

from __future__ import annotations

import time

import httpx
import pytest

from kdq.course.fake_server import parse_fault
from kdq.course.fake_server.course import FakeCourse


def post(srv, token, path, name=None):
    with open(path, "rb") as fh:
        return httpx.post(
            f"{srv.url}/submit",
            data={"token": token} if token else {},
            files={"file": (name or path.name, fh)},
        )


def test_submit_answers_in_the_documented_shapes(make_server, token, models):
    srv = make_server()
    r = post(srv, token, models["perfect"])
    assert r.status_code == 200
    assert r.json() == {
        "message": "Submission received for team 'Team Rocket'. Attempt #1.",
        "status": "pending",
        "attempt": 1,
    }
    r = post(srv, token, models["perfect"])
    assert r.json() == {
        "message": "Submission received for team 'Team Rocket'. This is attempt #2, "
        "status pending, evaluation pending."
    }
    assert post(srv, None, models["perfect"]).json() == {"error": "Missing token or file"}
    r = post(srv, "0" * 32, models["perfect"])
    assert (r.status_code, r.json()) == (403, {"error": "Invalid token"})
    r = post(srv, token, models["perfect"], name="model.onnx")
    assert (r.status_code, r.json()) == (400, {"error": "Only .pt or .pth files are allowed"})


def test_size_limit_at_upload_or_in_status(make_server, token, models):
    srv = make_server(max_size_mb=0.0001)
    r = post(srv, token, models["perfect"])
    assert (r.status_code, r.json()) == (400, {"error": "File too large (>0.0 MB)"})
    srv = make_server(max_size_mb=0.0001, size_check="status")
    assert post(srv, token, models["perfect"]).status_code == 200
    [row] = httpx.get(f"{srv.url}/submission-status/{token}").json()
    assert row["status"] == "rejected (file too large)" and row["score"] is None


def test_rate_limits_speak_minutes_for_submit_and_seconds_for_status(make_server, token, models):
    srv = make_server(submit_interval_s=900, status_interval_s=15)
    assert post(srv, token, models["perfect"]).status_code == 200
    r = post(srv, token, models["perfect"])
    assert (r.status_code, r.json()) == (429, {"error": "Rate limit: wait 15 minutes"})
    assert httpx.get(f"{srv.url}/submission-status/{token}").status_code == 200
    r = httpx.get(f"{srv.url}/submission-status/{token}")
    assert (r.status_code, r.json()) == (429, {"error": "Rate limit: wait 15 seconds"})
    assert len(srv.course.submissions) == 1


def test_grading_statuses_and_status_rows(make_server, token, models):
    srv = make_server(size_factor=0.5, abandon_superseded=False)
    for name in ("perfect", "broken", "wrong_shape"):
        assert post(srv, token, models[name]).status_code == 200
    srv.course.wait_graded()
    rows = httpx.get(f"{srv.url}/submission-status/{token}").json()
    assert [r["attempt"] for r in rows] == [1, 2, 3]
    assert set(rows[0]) == {"attempt", "status", "model_size", "submitted_at", "score"}
    perfect, broken, shape = rows
    assert perfect["status"] == "successful"
    assert perfect["score"] == pytest.approx(10 - 0.5 * perfect["model_size"], abs=1e-3)
    assert broken["status"] == "broken file" and broken["score"] is None
    assert shape["status"].startswith("Evaluation failed: ValueError: expected output of shape")
    assert perfect["submitted_at"].endswith(("AM", "PM"))


def test_an_older_attempt_stays_pending_once_a_newer_one_exists(make_server, token, models):
    """The grading delay runs on the stand-in's clock, which the test moves: however slow the machine
    between the two uploads (the sleep stands for it), the first is not graded before the second."""
    now = [time.time()]
    srv = make_server(eval_delay_s=1.0, clock=lambda: now[0])
    post(srv, token, models["const0"])
    time.sleep(1.5)  # a loaded machine: more real time than the delay passes before the next upload
    post(srv, token, models["perfect"])
    now[0] += 2.0
    srv.course.wait_graded()
    rows = httpx.get(f"{srv.url}/submission-status/{token}").json()
    assert [r["status"] for r in rows] == ["pending", "successful"]


def test_leaderboard_shows_latest_successful_per_team_best_first(make_server, token, models):
    srv = make_server(abandon_superseded=False)
    other = "9" * 32
    srv.course.add_team("Other", other)
    post(srv, token, models["perfect"])
    post(srv, other, models["const0"])
    post(srv, token, models["broken"])  # a failure later does not remove the good one
    srv.course.wait_graded()
    from kdq.course.leaderboard import parse_leaderboard

    board = parse_leaderboard(httpx.get(f"{srv.url}/leaderboard3").text)
    assert [(r.rank, r.team) for r in board.rows] == [(1, "Team Rocket"), (2, "Other")]
    assert board.rows[0].f1 == pytest.approx(1.0)


def test_admin_endpoint_sets_faults_and_takes_the_server_down(make_server, token):
    srv = make_server()
    r = httpx.post(
        f"{srv.url}/_fake/faults", json={"kind": "error", "count": 2, "status": 502, "route": "status"}
    )
    assert r.status_code == 200
    assert httpx.get(f"{srv.url}/submission-status/{token}").status_code == 502
    assert httpx.get(f"{srv.url}/submission-status/{token}").status_code == 502
    assert httpx.get(f"{srv.url}/submission-status/{token}").status_code == 200
    assert httpx.post(f"{srv.url}/_fake/faults", json={"kind": "nope"}).status_code == 400
    assert httpx.post(f"{srv.url}/_fake/down", json={"seconds": 2.0}).json() == {"down_for_s": 2.0}
    import time

    deadline = time.monotonic() + 15  # generous: the machine may be busy
    refused = False
    while time.monotonic() < deadline:
        try:
            httpx.get(srv.url, timeout=1.0)
        except httpx.ConnectError:
            refused = True
        else:
            if refused:
                break  # it went away and came back
        time.sleep(0.05)
    assert refused and srv.up


def test_fault_specs_from_the_command_line():
    f = parse_fault("error:3,status=502,route=submit")
    assert (f.kind, f.count, f.status, f.route) == ("error", 3, 502, "submit")
    assert parse_fault("stall,seconds=2.5,when=after").seconds == 2.5
    with pytest.raises(ValueError, match="Example: error:3"):
        parse_fault("explode:2")
    with pytest.raises(ValueError, match="not key=value"):
        parse_fault("error,502")


def test_course_rules_without_http(tmp_path):
    now = [1000.0]
    course = FakeCourse(teams={"t": "tok"}, submit_interval_s=600, clock=lambda: now[0])
    try:
        assert course.submit("tok", "m.pt", b"x").code == 200
        now[0] += 599
        assert course.submit("tok", "m.pt", b"x").body == {"error": "Rate limit: wait 1 minutes"}
        now[0] += 1
        assert course.submit("tok", "m.pt", b"x").code == 200
    finally:
        course.close()


def test_a_slow_server_reads_the_upload_and_records_it_later(make_server, token, models):
    srv = make_server()
    srv.inject("stall", seconds=1.5, route="submit", when="read")
    with pytest.raises(httpx.ReadTimeout):
        with open(models["perfect"], "rb") as fh:
            httpx.post(f"{srv.url}/submit", data={"token": token}, files={"file": ("m.pt", fh)}, timeout=0.5)
    assert srv.course.submissions == []  # the client gave up before the server recorded anything
    deadline = time.monotonic() + 10
    while not srv.course.submissions and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [s.attempt for s in srv.course.submissions] == [1]  # recorded all the same


def test_a_restart_without_state_numbers_attempts_from_one_again(make_server, token, models):
    srv = make_server(eval_delay_s=30)
    post(srv, token, models["perfect"])
    post(srv, token, models["const0"])
    assert [s.attempt for s in srv.course.submissions] == [1, 2]
    srv.restart(down_s=0.3)
    deadline = time.monotonic() + 10
    while not srv.up and time.monotonic() < deadline:
        time.sleep(0.05)
    assert httpx.get(f"{srv.url}/submission-status/{token}").json() == []
    assert post(srv, token, models["perfect"]).json()["attempt"] == 1
    assert len(srv.course.forgotten) == 2 and len(srv.course.submissions) == 1


def test_times_shown_ahead_of_the_clock(make_server, token, models):
    from kdq.course.models import parse_eastern

    srv = make_server(clock_ahead_s=5 * 3600)
    post(srv, token, models["perfect"])
    [row] = httpx.get(f"{srv.url}/submission-status/{token}").json()
    shown = parse_eastern(row["submitted_at"]).timestamp()
    assert shown - srv.course.submissions[0].submitted_at.timestamp() == pytest.approx(5 * 3600, abs=1)
