"""``kdq server ping|status|leaderboard|submit`` (the course server) and ``kdq fake-server`` (its stand-in)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from kdq import grader
from kdq import log as kdqlog
from kdq.course import CourseClient, CourseError, RateLimited
from kdq.settings import get_settings

app = typer.Typer(
    help="Talk to the course grading server (needs the UVA network or VPN).", no_args_is_help=True
)
console = Console()
err = Console(stderr=True)


def _client() -> CourseClient:
    settings = get_settings()
    kdqlog.configure(settings.log_json, settings=settings)
    return CourseClient.from_settings(settings)


def _fail(exc: CourseError) -> typer.Exit:
    err.print(Text("error: ", style="red") + Text(kdqlog.redact(str(exc))), highlight=False, soft_wrap=True)
    if isinstance(exc, RateLimited):
        err.print(f"try again in {exc.wait_s:.0f} s", highlight=False)
        return typer.Exit(3)
    return typer.Exit(1)


def _print_json(data) -> None:
    print(kdqlog.redact(json.dumps(data, indent=2, default=str)))


def _num(value: float | None, fmt: str = "{:.4f}") -> str:
    return "" if value is None else fmt.format(value)


@app.command()
def ping(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Is the course server reachable from here? Exit code 2 when it is not."""
    with _client() as client:
        result = client.ping()
    if as_json:
        _print_json(result.model_dump(mode="json"))
    elif result.reachable:
        console.print(
            f"[green]reachable[/green] {result.url} ({result.detail}, {result.elapsed_s:.2f} s)",
            highlight=False,
        )
    else:
        console.print(
            Text("unreachable ", style="red") + Text(result.detail), highlight=False, soft_wrap=True
        )
    if not result.reachable:
        raise typer.Exit(2)


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every submission of our team, as the server reports it (one call per 15 s)."""
    with _client() as client:
        try:
            attempts = client.status()
        except CourseError as exc:
            raise _fail(exc) from None
    if as_json:
        _print_json([{**a.model_dump(mode="json", exclude={"raw"}), "state": a.state} for a in attempts])
        return
    if not attempts:
        console.print("no submissions yet")
        return
    ours = _our_attempts()
    table = Table("attempt", "status", "size MB", "submitted (UTC)", "score", "experiment")
    style = {"successful": "green", "pending": "yellow", "failed": "red"}
    for a in attempts:
        when = a.submitted_at.strftime("%Y-%m-%d %H:%M:%S") if a.submitted_at else (a.submitted_at_text or "")
        table.add_row(
            str(a.attempt),
            Text(a.status, style=style[a.state]),
            _num(a.size_mb, "{:.2f}"),
            when,
            _num(a.score),
            Text(ours.get(a.attempt, "")),
        )
    console.print(table)


def _our_attempts() -> dict[int, str]:
    """Attempt number → "ID name" for the attempts kdq made (empty when there is no database yet)."""
    settings = get_settings()
    if not settings.db_path.exists():
        return {}
    from kdq.store import Store

    with Store.open(settings) as store:
        rows = store.db.query(
            "select s.attempt, e.id, e.name from submissions s join experiments e "
            "on e.id = s.exp_id where s.attempt is not null"
        )
        return {r["attempt"]: f"{r['id']} {r['name']}" for r in rows}


@app.command()
def leaderboard(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    top: Annotated[int, typer.Option(help="Show this many rows (our own row always).")] = 20,
) -> None:
    """The course leaderboard; our row (KDQ_TEAM) is highlighted."""
    with _client() as client:
        try:
            board = client.leaderboard()
        except CourseError as exc:
            raise _fail(exc) from None
        team = client.team
    ours = board.find(team)
    if as_json:
        _print_json({**board.model_dump(mode="json"), "ours": ours.model_dump(mode="json") if ours else None})
        return
    table = Table("rank", "team", "score", "F1", "size MB")
    for i, row in enumerate(board.rows):
        if i >= top and row is not ours:
            continue
        table.add_row(
            _num(row.rank, "{}"),
            row.team,
            _num(row.score),
            _num(row.f1),
            _num(row.size_mb, "{:.2f}"),
            style="bold cyan" if row is ours else None,
        )
    console.print(table)
    if team and ours is None:
        console.print(f"team {team!r} (KDQ_TEAM) is not on the leaderboard yet", highlight=False)


@app.command()
def submit(
    path: Annotated[Path, typer.Argument(help="A TorchScript file ending in .pt or .pth.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Upload a model directly, outside the queue (uses the team's one submission per 15 minutes)."""
    with _client() as client:
        try:
            receipt = client.submit(path)
        except CourseError as exc:
            if exc.maybe_sent:
                err.print(
                    "the upload may have reached the server: check `kdq server status` before resending",
                    highlight=False,
                )
            raise _fail(exc) from None
    if as_json:
        _print_json(receipt.model_dump(mode="json"))
    else:
        console.print(
            f"submitted {path.name}: attempt #{receipt.attempt} ({receipt.message})",
            highlight=False,
            markup=False,
        )


def fake_server(
    data_dir: Annotated[
        Path | None, typer.Option(help="Labelled image folders to grade on (class/image).")
    ] = None,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="0 picks a free port.")] = 8000,
    team: Annotated[
        list[str], typer.Option(help="NAME:TOKEN, repeatable. Default: one team 'demo' with a new token.")
    ] = [],  # noqa: B006
    teams_file: Annotated[Path | None, typer.Option(help='JSON {"team name": "token", ...}.')] = None,
    submit_interval_s: Annotated[
        float, typer.Option(help="One submission per team per this many seconds.")
    ] = 900.0,
    status_interval_s: Annotated[
        float, typer.Option(help="One status call per team per this many seconds.")
    ] = 15.0,
    max_size_mb: Annotated[float, typer.Option(help="Uploads above this are refused.")] = grader.MAX_MIB,
    size_check: Annotated[
        str, typer.Option(help="upload: refuse with 400; status: accept, then 'rejected (file too large)'.")
    ] = "upload",
    size_factor: Annotated[float, typer.Option(help="score = 10 x macro-F1 - size_factor x MB.")] = 0.01,
    wording: Annotated[str, typer.Option(help="Submit message: alternate | short | long.")] = "alternate",
    eval_delay_s: Annotated[
        float, typer.Option(help="Keep each attempt pending this long before grading.")
    ] = 0.0,
    fault: Annotated[
        list[str], typer.Option(help="KIND[:COUNT][,key=value...], e.g. error:3,status=502 (repeatable).")
    ] = [],  # noqa: B006
    start_down_s: Annotated[
        float, typer.Option(help="Refuse connections for this long after starting.")
    ] = 0.0,
) -> None:
    """Run the stand-in course server: same routes, shapes, limits and grading, plus faults on demand.

    At runtime: POST /_fake/faults with a fault as JSON ({"kind": "error", "count": 2, "status": 502}), DELETE /_fake/faults, POST /_fake/down {"seconds": 30} (connections refused, then back on the same port), POST /_fake/reset-limits, GET /_fake/state.
    """  # noqa: E501 (one paragraph in --help)
    from kdq.course.fake_server import FakeServer, parse_fault

    settings = get_settings()
    kdqlog.configure(settings.log_json, settings=settings)
    teams: dict[str, str] = json.loads(teams_file.read_text()) if teams_file else {}
    for item in team:
        name, sep, token = item.rpartition(":")
        if not sep or not name or not token:
            raise typer.BadParameter(f"--team {item!r}: expected NAME:TOKEN", param_hint="--team")
        teams[name] = token
    generated = not teams
    if generated:
        teams["demo"] = secrets.token_hex(16)
    try:
        faults = [parse_fault(f) for f in fault]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--fault") from None
    if size_check not in ("upload", "status") or wording not in ("alternate", "short", "long"):
        raise typer.BadParameter("--size-check is upload|status; --wording is alternate|short|long")
    if data_dir is None:
        err.print(
            "no --data-dir: every submission will fail grading (there are no test images)", highlight=False
        )
    srv = FakeServer(
        teams,
        data_dir,
        host=host,
        port=port,
        faults=faults,
        submit_interval_s=submit_interval_s,
        status_interval_s=status_interval_s,
        max_size_mb=max_size_mb,
        size_check=size_check,
        size_factor=size_factor,
        wording=wording,
        eval_delay_s=eval_delay_s,
    )
    srv.start()
    console.print(
        f"stand-in course server on {srv.url} (Ctrl-C stops it); teams: {', '.join(teams)}", highlight=False
    )
    if generated:  # a token we just made up for the stand-in, not a secret: the user needs it
        console.print(
            f"export KDQ_SERVER_URL={srv.url} KDQ_TEAM=demo KDQ_TOKEN={teams['demo']}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    if start_down_s > 0:
        srv.go_down(start_down_s)
    srv.serve_forever()
