"""The client against the stand-in server, one fault at a time."""

from __future__ import annotations

import logging

import httpx
import pytest

from kdq.course import CourseClient, RateLimited, Rejected, ServerError, UnexpectedResponse, Unreachable


def test_happy_path_both_wordings(server, client, models):
    assert client.ping().reachable
    first = client.submit(models["perfect"])
    second = client.submit(models["const0"])
    assert (first.attempt, second.attempt) == (1, 2)
    assert "Attempt #1." in first.message and "This is attempt #2" in second.message  # the two wordings
    server.course.wait_graded()
    attempts = client.status()
    assert [(a.attempt, a.state) for a in attempts] == [(1, "successful"), (2, "successful")]
    assert attempts[0].score is not None and attempts[0].score > attempts[1].score
    assert attempts[0].submitted_at.tzinfo is not None
    row = client.leaderboard().find("team rocket")
    assert row is not None and row.rank == 1 and row.score == pytest.approx(attempts[1].score, abs=1e-3)


@pytest.mark.parametrize("status_code", [500, 502])
def test_reads_retry_through_server_errors(server, client, status_code):
    server.inject("error", count=2, status=status_code, route="status")
    assert client.status() == []
    server.inject("error", count=3, status=status_code, route="status")
    with pytest.raises(ServerError) as err:
        client.status()
    assert err.value.status_code == status_code


@pytest.mark.parametrize(
    "body, words", [("html", "HTML page"), ("empty", "empty body"), ("truncated", "truncated JSON")]
)
def test_garbage_bodies_are_unexpected_responses(server, client, body, words):
    server.inject("garbage", count=3, body=body, route="status")
    with pytest.raises(UnexpectedResponse, match=words):
        client.status()
    server.inject("garbage", count=1, body=body, route="status")
    assert client.status() == []  # one bad answer is retried away


def test_garbage_answer_to_a_submit_is_not_resent(server, client, models):
    server.inject("garbage", body="truncated", route="submit", when="after")
    with pytest.raises(UnexpectedResponse) as err:
        client.submit(models["perfect"])
    assert err.value.maybe_sent
    assert len(server.course.submissions) == 1


def test_rate_limit_names_the_wait(server, client, models):
    server.inject("rate_limit", wait_s=180, route="submit")
    with pytest.raises(RateLimited) as err:
        client.submit(models["perfect"])
    assert err.value.wait_s == 180 and not err.value.maybe_sent
    assert "Rate limit: wait 3 minutes" in str(err.value)
    assert server.course.submissions == []


def test_status_throttle_short_wait_is_waited_out_long_one_raised(make_server, token):
    srv = make_server(status_interval_s=15)
    with CourseClient(srv.url, token, rate_limit_wait_max_s=1, backoff_s=0.01) as c:
        c.status()
        with pytest.raises(RateLimited) as err:
            c.status()
        assert 14 <= err.value.wait_s <= 15
    srv.inject("rate_limit", wait_s=0.2, unit="seconds", route="status")
    srv.course.reset_limits()
    with CourseClient(srv.url, token, rate_limit_wait_max_s=2, backoff_s=0.01) as c:
        assert c.status() == []  # "wait 1 seconds", waited, retried


def test_stall_times_out_and_reads_retry(server, token):
    with CourseClient(server.url, token, request_timeout_s=0.3, backoff_s=0.01) as c:
        server.inject("stall", seconds=1.0, route="status")
        assert c.status() == []
        server.inject("stall", count=3, seconds=1.0, route="status")
        with pytest.raises(Unreachable, match="no answer in time") as err:
            c.status()
        assert err.value.maybe_sent


@pytest.mark.parametrize("fault", [dict(kind="stall", seconds=1.0), dict(kind="error", status=500)])
def test_submit_is_never_resent_once_it_may_have_arrived(server, token, models, fault):
    server.inject(route="submit", when="after", **fault)
    with CourseClient(server.url, token, request_timeout_s=0.3, backoff_s=0.01) as c:
        with pytest.raises((Unreachable, ServerError)) as err:
            c.submit(models["perfect"])
    assert err.value.maybe_sent
    assert len(server.course.submissions) == 1  # it went through exactly once
    if fault["kind"] == "error":  # (a stalled answer is logged only once sent)
        assert server.course.count("submit") == 1  # and was POSTed exactly once


def test_refused_connection_is_unreachable_and_never_sent(server, client, models):
    server.go_down()
    ping = client.ping()
    assert not ping.reachable and "is `kdq fake-server` running?" in ping.detail  # a loopback URL
    assert "VPN" not in ping.detail
    with pytest.raises(Unreachable) as err:
        client.submit(models["perfect"])
    assert not err.value.maybe_sent
    assert server.course.count("submit") == 0
    server.come_up()
    assert client.ping().reachable
    assert client.submit(models["perfect"]).attempt == 1


def test_server_comes_back_on_the_same_port_by_itself(server, client):
    port = server.port
    server.go_down(0.3)
    with CourseClient(server.url, client._token, backoff_s=0.5, read_attempts=4) as c:
        assert c.status() == []  # refused at first, retried until it is back
    assert server.port == port


def test_rejections_carry_the_server_text(make_server, models):
    srv = make_server()
    with CourseClient(srv.url, "f" * 32, backoff_s=0.01) as c:
        with pytest.raises(Rejected, match="Invalid token") as err:
            c.submit(models["perfect"])
        assert err.value.status_code == 403
        with pytest.raises(Rejected, match="Invalid token"):
            c.status()


def test_doomed_uploads_are_refused_before_sending(server, client, models, tmp_path):
    odd = tmp_path / "model.onnx"
    odd.write_bytes(b"x")
    with pytest.raises(Rejected, match=r"only files ending in \.pt or \.pth"):
        client.submit(odd)
    with pytest.raises(Rejected, match="no such file"):
        client.submit(tmp_path / "missing.pt")
    with CourseClient(server.url, client._token, max_upload_mb=0.0001) as small:
        with pytest.raises(Rejected, match="over the 0.0001 MB limit"):
            small.submit(models["perfect"])
    assert server.course.submissions == []


def test_a_moved_leaderboard_is_found_through_the_course_pages(server, token, caplog, capsys):
    with CourseClient(server.url, token, leaderboard_path="/leaderboard-hw2", backoff_s=0.01) as c:
        assert c.leaderboard().columns[:2] == ["Rank", "Team"]
        assert c.paths["leaderboard"] == "/leaderboard3"
    out = capsys.readouterr()
    assert "KDQ_LEADERBOARD_PATH=/leaderboard3" in out.out + out.err + caplog.text


def test_moved_path_is_reported_with_the_setting_to_change(server, token):
    with CourseClient(server.url, token, status_path="/status/{token}", backoff_s=0.01) as c:
        with pytest.raises(UnexpectedResponse, match="KDQ_STATUS_PATH"):
            c.status()


def test_leaderboard_links_are_read_like_a_person_would():
    from kdq.course.leaderboard import find_leaderboard_link

    page = """<a href="/leaderboard-hw2">Leaderboard (HW2)</a> <a href="http://elsewhere.org/leaderboard3">x</a>
              <a href="leaderboard3">Leaderboard</a> <a href="/download/train-dataset">Dataset</a>"""
    assert find_leaderboard_link(page, "http://hadi.cs.virginia.edu:8000") == "/leaderboard3"
    assert find_leaderboard_link("<a href='/x'>home</a>", "http://h:1") is None


def test_no_token_is_a_clear_error(server):
    with CourseClient(server.url, None) as c:
        with pytest.raises(Rejected, match="KDQ_TOKEN"):
            c.status()


def test_token_never_appears_in_logs_errors_or_reprs(server, token, models, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="httpx")  # kdq.log.configure (run by CLI tests) quiets it
    seen: list[str] = []
    with CourseClient(
        server.url,
        token,
        "Team Rocket",
        backoff_s=0.01,
        request_timeout_s=0.3,
        status_path="/submission-status/{token}",
    ) as c:
        seen += [repr(c), c.url("status"), str(c.submit(models["perfect"]))]
        seen.append(str(c.status()))
        for fault in (
            dict(kind="error", count=3),
            dict(kind="garbage", count=3, body="html"),
            dict(kind="stall", count=3, seconds=1.0),
        ):
            server.inject(route="status", **fault)
            with pytest.raises(Exception) as err:
                c.status()
            seen += [str(err.value), repr(err.value)]
        server.go_down()
        with pytest.raises(Unreachable) as err:
            c.status()
        seen += [str(err.value), repr(err.value)]
        server.come_up()
    with CourseClient(server.url, token, status_path="/nowhere/{token}", backoff_s=0.01) as c:
        with pytest.raises(UnexpectedResponse) as err:
            c.status()
        seen += [str(err.value)]
    # Make the raw client log its request URLs through the stdlib logger too.
    with httpx.Client() as raw:
        raw.get(f"{server.url}/submission-status/{token}")
    out = capsys.readouterr()
    text = "\n".join(seen + [caplog.text, out.out, out.err])
    assert "/submission-status/***" in text
    assert "HTTP Request" in caplog.text  # the httpx line was there, redacted
    assert token not in text


def test_ping_suggests_the_other_documented_port(dataset_dir, token):
    """The pages say port 8000, the notes 9000: when one is silent and the other answers, ping says so."""
    import socket

    from kdq.course.fake_server import FakeServer

    for port in (8000, 9000):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                pytest.skip(f"port {port} is taken on this machine")
    with FakeServer(teams={"t": token}, port=8000) as srv:
        with CourseClient("http://127.0.0.1:9000", token, connect_timeout_s=1) as c:
            ping = c.ping()
    assert not ping.reachable
    assert ping.detail.endswith(f"The server does answer on port 8000: set KDQ_SERVER_URL={srv.url}")


def test_a_proxy_413_page_is_a_rejection(server, client, models):
    server.inject("garbage", body="html", status=413, route="submit")
    with pytest.raises(Rejected, match="HTTP 413") as err:
        client.submit(models["perfect"])
    assert not err.value.maybe_sent and server.course.submissions == []
