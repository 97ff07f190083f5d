"""Notifications: what the worker tells you while you sleep, through Apprise (``KDQ_NOTIFY``).

    KDQ_NOTIFY="ntfys://ntfy.sh/my-kdq-topic mailto://me:app-password@gmail.com"
    check(settings)          # the worker, once a minute: one message per thing worth waking up for
    send(settings, [Message("kdq: test", "...")])   # kdq notify test

Four things are worth a message, each said once: a new best graded score, an experiment that failed,
a queue paused for more than ``PAUSED_FOR_S`` (the course server unreachable: off the VPN; a login
missing; the scheduler failing), and a queue that became empty. ``news`` decides, from what the
database says now and what was already told (kept in the ``notify`` meta key); it is pure. The first
look only takes note: turning notifications on does not replay the night. Every message passes
``kdq.log.redact`` (no token, no Apprise URL ever leaves in one), and a notifier that fails is logged,
never raised: the worker goes on.
"""

from __future__ import annotations

import socket
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from kdq.log import add_secret, get_logger, redact

if TYPE_CHECKING:
    from kdq.store import Store

log = get_logger("kdq.notify")
META = "notify"
PAUSED_FOR_S = 300.0  # a VPN blip of a minute or two is not worth waking anyone


@dataclass(frozen=True)
class Message:
    title: str
    body: str


@dataclass(frozen=True)
class Facts:
    """What the database says now."""

    best: tuple[float, int, str] | None  # the best graded score, its experiment id and name
    failed: dict[int, str]  # failed experiments: id -> "name: first line of the error"
    live: int  # experiments not yet finished (queued to evaluating)
    paused: str | None  # why the queue waits for the outside world, if it does
    finished: dict[str, int] = field(default_factory=dict)  # stage -> count, for the empty-queue message
    why: dict[str, str] = field(default_factory=dict)  # the same by kind (kdq.gaps): vpn, scheduler


@dataclass(frozen=True)
class Told:
    """What was already said (stored as JSON in the ``notify`` meta key)."""

    best: float | None = None
    failed: tuple[int, ...] = ()
    paused_since: float | None = None
    paused_told: bool = False
    busy: bool = False  # something was live at the last look: an empty queue is news


def news(told: Told | None, now_: Facts, now: float) -> tuple[list[Message], Told]:
    """The messages to send and what will then have been told. ``told is None``: the first look."""
    paused_since = (told.paused_since if told and told.paused_since else now) if now_.paused else None
    failed = tuple(sorted(now_.failed))
    after = Told(
        best=max(filter(None, [told and told.best, now_.best and now_.best[0]]), default=None),
        failed=failed,
        paused_since=paused_since,
        paused_told=bool(told and told.paused_told and now_.paused),
        busy=now_.live > 0,
    )
    if told is None:
        return [], after
    out = []
    if now_.best and (told.best is None or now_.best[0] > told.best):
        score, exp_id, name = now_.best
        out.append(Message(f"kdq: new best score {score:.3f}", f"{exp_id} {name} was graded {score:.3f}."))
    new = [i for i in failed if i not in told.failed]
    if new:
        title = f"kdq: {new[0]} failed" if len(new) == 1 else f"kdq: {len(new)} experiments failed"
        body = "\n".join(f"{i} {now_.failed[i]}" for i in new) + "\n`kdq show ID` has the whole error."
        out.append(Message(title, body))
    if now_.paused and not after.paused_told and now - paused_since >= PAUSED_FOR_S:
        minutes = round((now - paused_since) / 60)
        out.append(Message(f"kdq: queue paused for {minutes} min", now_.paused))
        after = Told(**{**asdict(after), "paused_told": True})
    if told.busy and not now_.live:
        counts = ", ".join(f"{n} {stage}" for stage, n in sorted(now_.finished.items()))
        best = f"; best score {after.best:.3f}" if after.best is not None else ""
        out.append(Message("kdq: the queue is empty", f"Nothing left to train or submit ({counts}{best})."))
    return out, after


def facts(store: Store) -> Facts:
    from kdq import pause
    from kdq.course.ledger import Ledger
    from kdq.stages import LIVE, Stage

    exps = store.list()
    graded = [(e.server_score, e.id, e.name) for e in exps if e.server_score is not None]
    failed = {
        e.id: f"{e.name}: {(e.error or 'no reason recorded').strip().splitlines()[0][:300]}"
        for e in exps
        if e.stage is Stage.FAILED
    }
    ledger = Ledger(store)
    server, error = ledger.server(), ledger.error()
    why = {}
    if server and not server.get("reachable", True):
        why["vpn"] = f"The course server is unreachable (off the VPN?): {server.get('detail', '')[:200]}"
    if error and error.get("recovered_at") is None:
        why["scheduler"] = f"The submission scheduler keeps failing: {error.get('error', '')[:200]}"
    logins = pause.active(store)  # a login this machine lacks (kdq/pause.py): what needs it waits
    if logins:
        said = "; ".join(f"{pause.LOGINS.get(k, k)}: {v['message'][:200]}" for k, v in logins.items())
        why["credentials"] = f"A login is missing, the experiments that need it wait: {said}"
    paused = next(iter(why.values()), None)
    finished: dict[str, int] = {}
    for e in exps:
        if e.stage not in LIVE:
            finished[str(e.stage)] = finished.get(str(e.stage), 0) + 1
    live = sum(e.stage in LIVE for e in exps)
    return Facts(max(graded, default=None), failed, live, paused, finished, why)


def send(settings, messages: list[Message]) -> list[str]:
    """Send each message to every ``KDQ_NOTIFY`` URL; the problems, one line each (none: all sent)."""
    import apprise

    urls = settings.notify_urls()
    add_secret(*urls, *settings.secrets())
    if not urls or not messages:
        return []
    problems = []
    sender = apprise.Apprise()
    for i, url in enumerate(urls, 1):
        if not sender.add(url):
            problems.append(f"KDQ_NOTIFY URL {i} ({_scheme(url)}) is not an Apprise URL Apprise can use")
    for m in messages:
        host = socket.gethostname()
        if len(sender) and not sender.notify(title=redact(m.title), body=redact(f"{m.body}\n({host})")):
            problems.append(f"a notifier refused or could not be reached for {m.title!r}")
    return problems


def _scheme(url: str) -> str:
    return url.split("://", 1)[0] + "://…" if "://" in url else "no scheme"


def check(settings, now: float | None = None) -> list[Message]:
    """One look (the worker's, once a minute): note the gaps (kdq.gaps), send what is new. Never
    raises; returns what it sent."""
    from kdq import gaps
    from kdq.store import Store

    now = time.time() if now is None else now
    try:
        with Store.open(settings) as store:
            seen = facts(store)
            gaps.note(store, seen.why, now)
            if not settings.notify_urls():
                return []
            raw = store.get_meta_json(META)
            told = Told(**{**raw, "failed": tuple(raw.get("failed", ()))}) if raw else None
            messages, after = news(told, seen, now)
            store.set_meta(META, asdict(after))
        for problem in send(settings, messages):
            log.warning("notification not sent", problem=problem)
        return messages
    except Exception as exc:  # a notifier must never take the worker down
        log.warning("notifications failed", error=redact(f"{type(exc).__name__}: {exc}"))
        return []
