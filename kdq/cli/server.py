"""``kdq server ping|status|leaderboard|submit``: the course server (its stand-in: kdq/cli/fake_server.py)."""

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from kdq.cli.common import ERROR, RATE_LIMITED, UNREACHABLE, USAGE, console, fail, settings, warn

app = typer.Typer(
    help="Talk to the course grading server (needs the UVA network or VPN).", no_args_is_help=True
)


def _client():
    from kdq import log as kdqlog
    from kdq.course import CourseClient

    s = settings()
    kdqlog.configure(bool(s.log_json), settings=s)  # a short command: JSON only when asked
    return CourseClient.from_settings(s)


def _fail(exc) -> typer.Exit:
    """The exit code of a course-server error: 3 rate limited, 4 unreachable, 1 anything else."""
    from kdq.course import RateLimited
    from kdq.course.errors import Unreachable

    fail(str(exc))
    if isinstance(exc, RateLimited):
        warn(f"try again in {exc.wait_s:.0f} s")
        return typer.Exit(RATE_LIMITED)
    return typer.Exit(UNREACHABLE if isinstance(exc, Unreachable) else ERROR)


def _print_json(data) -> None:
    from kdq.log import redact

    print(redact(json.dumps(data, indent=2, default=str)))


def _num(value: float | None, fmt: str = "{:.4f}") -> str:
    return "" if value is None else fmt.format(value)


@app.command()
def ping(as_json: Annotated[bool, typer.Option("--json", help="The answer as JSON.")] = False) -> None:
    """Is the course server reachable from here? Exit code 4 when it is not.

    Examples:

    \b
      kdq server ping
      KDQ_SERVER_URL=http://127.0.0.1:18777 kdq server ping --json
    """
    with _client() as client:
        result = client.ping()
    if as_json:
        _print_json(result.model_dump(mode="json"))
    elif result.reachable:
        console().print(
            f"[green]reachable[/green] {result.url} ({result.detail}, {result.elapsed_s:.2f} s)",
            highlight=False,
        )
    else:
        from rich.markup import escape

        console().print(f"[red]unreachable[/red] {escape(result.detail)}", highlight=False, soft_wrap=True)
    if not result.reachable:
        raise typer.Exit(UNREACHABLE)


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="Every attempt in full.")] = False) -> None:
    """Every submission of our team, as the server reports it (one call per 15 s).

    Examples:

    \b
      kdq server status
      kdq server status --json
    """
    from kdq.course import CourseError

    with _client() as client:
        try:
            attempts = client.status()
        except CourseError as exc:
            raise _fail(exc) from None
    if as_json:
        _print_json([{**a.model_dump(mode="json", exclude={"raw"}), "state": a.state} for a in attempts])
        return
    if not attempts:
        console().print("no submissions yet")
        return
    from kdq.cli.tables import print_rows

    ours, shown, note = _our_attempts(attempts)
    rows = [
        {
            "attempt": a.attempt,
            "status": a.status,
            "size MB": None if a.size_mb is None else round(a.size_mb, 2),
            "submitted (UTC)": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(shown[a.attempt]))
            if a.attempt in shown
            else (a.submitted_at_text or ""),
            "score": a.score,
            "experiment": ours.get(a.attempt, ""),
        }
        for a in attempts
    ]
    print_rows(console(), list(rows[0]), rows)
    if note:
        warn(note)


def _our_attempts(attempts) -> tuple[dict[int, str], dict[int, float], str | None]:
    """Attempt number → "ID name" for the attempts kdq made, → the time to show (``Ledger.shown_times``),
    and the note on the server's clock (no names without a database)."""
    from kdq.course.ledger import Ledger
    from kdq.course.matching import shown_times
    from kdq.store import Store

    s = settings()
    if not s.db_path.exists():
        return {}, *shown_times(attempts, {}, time.time())
    with Store.open(s) as store:
        ledger = Ledger(store)
        return ledger.attempt_names(), *shown_times(attempts, ledger.sent_times(), time.time())


def _stored_board():
    """The last leaderboard snapshot the worker saved, and its time; None when there is none."""
    s = settings()
    if not s.db_path.exists():
        return None
    from kdq.course.ledger import Ledger
    from kdq.course.models import Leaderboard
    from kdq.store import Store

    with Store.open(s) as store:
        found = Ledger(store).latest_board()
    if found is None:
        return None
    ts, rows = found
    return Leaderboard(columns=["rank", "team", "score", "F1", "size MB"], rows=rows), ts


@app.command()
def leaderboard(
    as_json: Annotated[bool, typer.Option("--json", help="Every row in full.")] = False,
    top: Annotated[int, typer.Option(min=1, help="Show this many rows (our own row always).")] = 20,
) -> None:
    """The course leaderboard; our row (KDQ_TEAM) is highlighted. Off the VPN: the last stored one.

    Examples:

    \b
      kdq leaderboard
      kdq leaderboard --top 5 --json
    """
    from kdq.cli.tables import LEADERBOARD_COLUMNS, leaderboard_rows, print_rows
    from kdq.course import CourseError
    from kdq.course.errors import Unreachable

    stored_at = None
    with _client() as client:
        team = client.team
        try:
            board = client.leaderboard()
        except Unreachable as exc:
            stored = _stored_board()
            if stored is None:
                raise _fail(exc) from None
            board, stored_at = stored
            from kdq.cli.views import ago

            warn(
                f"the course server is unreachable ({exc}); "
                f"the last stored leaderboard, {ago(stored_at)} old:"
            )
        except CourseError as exc:
            raise _fail(exc) from None
    ours = board.find(team)
    from kdq.course.size_factor import fit

    factor = fit(board.rows, settings().size_factor, snapshot_at=stored_at)
    if as_json:
        _print_json(
            {
                **board.model_dump(mode="json"),
                "ours": ours.model_dump(mode="json") if ours else None,
                "stored_at": stored_at,
                "size_factor": factor.as_json(),
            }
        )
        return
    print_rows(console(), LEADERBOARD_COLUMNS, leaderboard_rows(board, team, top))
    curve = ", ".join(f"{s:g} MiB {v:.3f}" for s, v in factor.table())
    error = f", fit error {factor.fit_error:.3f}" if factor.fit_error is not None else ""
    console().print(f"size factor, {factor.method}{error}: {curve}", highlight=False, markup=False)
    if team and ours is None:
        console().print(f"team {team!r} (KDQ_TEAM) is not on the leaderboard yet", highlight=False)


@app.command()
def submit(
    path: Annotated[Path, typer.Argument(help="A TorchScript file ending in .pt or .pth.")],
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask: it replaces the live submission.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The server's receipt as JSON.")] = False,
) -> None:
    """Upload a model directly, outside the queue (uses the team's one submission per 15 minutes).

    It replaces the team's live submission, so it asks first unless --yes.

    Examples:

    \b
      kdq server submit .kdq/artifacts/12/model.pt
      kdq server submit model.pt --yes --json
    """
    from kdq.course import CourseError

    if not path.is_file():
        raise fail(f"{path}: no such file; pass the model file (e.g. .kdq/artifacts/ID/model.pt)", USAGE)
    if not yes and not typer.confirm(f"upload {path}? it replaces the team's live submission", default=False):
        raise fail("nothing was uploaded")
    _warn_if_an_upload_is_in_flight()
    with _client() as client:
        try:
            receipt = client.submit(path)
        except CourseError as exc:
            if exc.maybe_sent:
                warn("the upload may have reached the server: check `kdq server status` before resending")
            raise _fail(exc) from None
    _record_manual_upload(receipt.attempt, path.stat().st_size)
    if as_json:
        _print_json(receipt.model_dump(mode="json"))
    else:
        console().print(
            f"submitted {path.name}: attempt #{receipt.attempt} ({receipt.message})",
            highlight=False,
            markup=False,
        )


def _record_manual_upload(attempt: int | None, size: int) -> None:
    """The window it spent, in the ledger: ``kdq status`` and the scheduler count the next one from it;
    and the attempt, which the scheduler never takes for an upload of its own whose answer was lost."""
    import time

    from kdq.course.ledger import Ledger
    from kdq.store import Store

    with Store.open(settings()) as store:
        Ledger(store).note_submit(time.time())
        Ledger(store).note_outside(attempt, size=size)


def _warn_if_an_upload_is_in_flight() -> None:
    from kdq.course.ledger import Ledger
    from kdq.store import Store

    if not settings().db_path.exists():
        return
    with Store.open(settings()) as store:
        intent = Ledger(store).intent()
    if intent:
        warn(
            f"the worker's upload of experiment {intent['exp_id']} has no known outcome yet; this upload "
            "is recorded as made outside the queue, and may be refused by the server's rate limit"
        )
