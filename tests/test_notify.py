"""Notifications: what is news (pure), and real messages through Apprise's json:// to a local receiver."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from typer.testing import CliRunner

from kdq.cli.main import app
from kdq.notify import PAUSED_FOR_S, Facts, Told, check, news
from kdq.spec import ExperimentSpec

TOKEN = "".join(f"{i:x}" for i in range(16)) * 2  # token-shaped, made at run time


@pytest.fixture
def receiver():
    """A local HTTP server that keeps every JSON body posted to it."""
    got: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"json://127.0.0.1:{server.server_port}/kdq", got
    server.shutdown()


def facts(best=None, failed=None, live=1, paused=None):
    return Facts(best, failed or {}, live, paused, {"done": 2})


def test_the_first_look_only_takes_note():
    messages, told = news(None, facts(best=(7.0, 3, "a"), failed={4: "b: boom"}), now=0.0)
    assert messages == [] and told.best == 7.0 and told.failed == (4,) and told.busy


def test_each_piece_of_news_is_told_once():
    told = news(None, facts(best=(7.0, 3, "a")), now=0.0)[1]
    messages, told = news(told, facts(best=(7.5, 5, "b"), failed={6: "c: CUDA out of memory"}), now=60.0)
    assert [m.title for m in messages] == ["kdq: new best score 7.500", "kdq: 6 failed"]
    assert "5 b was graded 7.500" in messages[0].body and "6 c: CUDA out of memory" in messages[1].body
    again, told = news(told, facts(best=(7.5, 5, "b"), failed={6: "c: CUDA out of memory"}), now=120.0)
    assert again == []
    worse, told = news(told, facts(best=(7.5, 5, "b")), now=130.0)  # a retry takes 6 out of failed
    assert worse == [] and told.failed == ()


def test_a_pause_is_told_once_it_has_lasted_a_few_minutes():
    told = news(None, facts(), now=0.0)[1]
    off = "The course server is unreachable (off the VPN?)"
    messages, told = news(told, facts(paused=off), now=10.0)
    assert messages == [] and told.paused_since == 10.0
    messages, told = news(told, facts(paused=off), now=10.0 + PAUSED_FOR_S - 1)
    assert messages == []
    messages, told = news(told, facts(paused=off), now=10.0 + PAUSED_FOR_S)
    assert [m.title for m in messages] == ["kdq: queue paused for 5 min"] and messages[0].body == off
    assert news(told, facts(paused=off), now=10.0 + 2 * PAUSED_FOR_S)[0] == []
    back = news(told, facts(), now=2000.0)[1]
    assert back.paused_since is None and not back.paused_told  # a later pause is news again


def test_an_empty_queue_is_told_when_it_empties():
    told = news(None, facts(best=(4.0, 1, "a"), live=2), now=0.0)[1]
    messages, told = news(told, facts(best=(4.0, 1, "a"), live=0), now=60.0)
    assert [m.title for m in messages] == ["kdq: the queue is empty"]
    assert "2 done" in messages[0].body and "best score 4.000" in messages[0].body
    assert news(told, facts(best=(4.0, 1, "a"), live=0), now=120.0)[0] == []
    assert Told() == Told(best=None, failed=(), paused_since=None, paused_told=False, busy=False)


def test_the_worker_sends_through_apprise_and_never_a_token(settings, store, receiver, monkeypatch):
    from kdq.settings import Settings

    url, got = receiver
    monkeypatch.setenv("KDQ_NOTIFY", url)
    monkeypatch.setenv("KDQ_TOKEN", TOKEN)
    s = Settings()
    (a, b) = store.add(
        [(None, ExperimentSpec(name="a")), (None, ExperimentSpec(name="b", train={"seed": 2}))]
    )
    assert check(s) == [] and got == []  # the first look takes note
    store.update(a, stage="failed", error=f"the server said: bad token {TOKEN}\nmore lines")
    store.update(b, stage="done", server_score=6.25)
    sent = check(s)
    assert [m.title for m in sent] == [
        "kdq: new best score 6.250",
        f"kdq: {a} failed",
        "kdq: the queue is empty",
    ]
    assert [g["title"] for g in got] == [m.title for m in sent]
    assert "bad token ***" in got[1]["message"]
    assert all(TOKEN not in json.dumps(g) for g in got)
    assert check(s) == []  # told once


def test_a_failing_notifier_is_logged_and_never_raises(settings, store, monkeypatch, capsys):
    from kdq.settings import Settings

    monkeypatch.setenv("KDQ_NOTIFY", "json://127.0.0.1:9/closed-port not-a-url")
    s = Settings()
    (a,) = store.add([(None, ExperimentSpec(name="a"))])
    check(s)
    store.update(a, stage="failed", error="boom")
    sent = [m.title for m in check(s)]  # said, and the failure to send logged
    assert sent == [f"kdq: {a} failed", "kdq: the queue is empty"]
    err = capsys.readouterr()
    text = err.out + err.err
    assert "notification not sent" in text and "127.0.0.1:9" not in text.split("notification not sent")[1]


def test_notify_test_sends_one(settings, receiver, monkeypatch):
    url, got = receiver
    monkeypatch.setenv("KDQ_NOTIFY", url)
    r = CliRunner().invoke(app, ["notify", "test"])
    assert r.exit_code == 0, r.output
    assert got[0]["title"] == "kdq: test notification" and "sent to 1 notifier" in r.stdout
    assert url not in r.output


def test_notify_test_without_urls_or_with_a_dead_one_is_one_line(settings, monkeypatch):
    r = CliRunner().invoke(app, ["notify", "test"])
    assert r.exit_code == 2 and "KDQ_NOTIFY is not set" in r.output and "Traceback" not in r.output
    monkeypatch.setenv("KDQ_NOTIFY", "json://127.0.0.1:9/closed")
    r = CliRunner().invoke(app, ["notify", "test", "--json"])
    assert r.exit_code == 1 and json.loads(r.stdout.split("\nerror")[0])["sent"] is False
    assert "127.0.0.1:9" not in r.output


def test_the_worker_looks_once_a_minute(settings, monkeypatch):
    from kdq import worker

    seen = []
    monkeypatch.setattr("kdq.notify.check", lambda s: seen.append(s))
    q = worker.queue(settings)
    q.tasks["reconcile"].call_local()
    assert seen == [settings]


def test_each_look_notes_the_gaps_even_without_notifiers(settings, store):
    from kdq import gaps
    from kdq.course.ledger import Ledger

    Ledger(store).record_server(False, "connection refused")
    check(settings, now=1000.0)
    Ledger(store).record_server(True, "ok")
    check(settings, now=1600.0)
    assert [(g["kind"], g["from"], g["to"]) for g in gaps.read(store)] == [("vpn", 1000.0, 1600.0)]


def test_a_missing_login_is_a_pause_and_a_gap(settings, store, receiver, monkeypatch):
    from kdq import gaps, pause
    from kdq.settings import Settings

    url, got = receiver
    monkeypatch.setenv("KDQ_NOTIFY", url)
    s = Settings()
    store.add([(None, ExperimentSpec(name="a", backend={"kind": "modal"}))])
    check(s, now=1000.0)
    pause.record(store, "modal", "Modal has no valid credentials: run `modal token new`")
    check(s, now=1060.0)
    assert got == []  # not yet: a pause of a minute is not news
    check(s, now=1060.0 + PAUSED_FOR_S)
    assert [g["title"] for g in got] == ["kdq: queue paused for 5 min"]
    assert "Modal: Modal has no valid credentials" in got[0]["message"]
    (gap,) = gaps.read(store)
    assert (gap["kind"], gap["from"], gap["to"]) == ("credentials", 1060.0, None)
