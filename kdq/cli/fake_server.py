"""``kdq fake-server``: the stand-in of the course server, for the demo, the tests and trying things out."""

import json
import shlex
from pathlib import Path
from typing import Annotated

import typer

from kdq import grader
from kdq.cli.common import USAGE, fail, say, settings, warn

FAKE_PORT = 18777  # not one of the real server's ports (8000, 9000)


def fake_server(
    data_dir: Annotated[
        Path | None, typer.Option(help="Labelled image folders to grade on (class/image).")
    ] = None,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="0 picks a free port.")] = FAKE_PORT,
    team: Annotated[
        list[str],
        typer.Option(help="NAME:TOKEN or NAME (a new token), repeatable. Default: team 'demo', a new token."),
    ] = [],  # noqa: B006 (typer reads the default)
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
    size_curve: Annotated[
        str,
        typer.Option(help="linear: size_factor x MB; capped: size_factor x MB normalised between 1 and 23."),
    ] = "linear",
    wording: Annotated[str, typer.Option(help="Submit message: alternate | short | long.")] = "alternate",
    eval_delay_s: Annotated[
        float, typer.Option(help="Keep each attempt pending this long before grading.")
    ] = 0.0,
    fault: Annotated[
        list[str], typer.Option(help="KIND[:COUNT][,key=value...], e.g. error:3,status=502 (repeatable).")
    ] = [],  # noqa: B006 (typer reads the default)
    start_down_s: Annotated[
        float, typer.Option(help="Refuse connections for this long after starting.")
    ] = 0.0,
) -> None:
    """Run the stand-in course server: same routes, shapes, limits and grading, plus faults on demand.

    At runtime: POST /_fake/faults with a fault as JSON ({"kind": "error", "count": 2, "status": 502}), DELETE /_fake/faults, POST /_fake/down {"seconds": 30} (connections refused, then back on the same port), POST /_fake/reset-limits, GET /_fake/state.

    Examples:

    \b
      kdq fake-server --port 0 --data-dir .kdq/demo/server/test_dataset
      kdq fake-server --submit-interval-s 10 --fault error:3,status=502
    """  # noqa: E501 (one paragraph in --help)
    from kdq import log as kdqlog
    from kdq.course.fake_server import FakeServer

    s = settings()
    kdqlog.configure(s.log_json, settings=s)
    teams, typed = _teams(team, teams_file)
    faults = _checked(fault, size_check, wording, size_curve)
    if data_dir is None:
        warn("no --data-dir: every submission will fail grading (there are no test images)")
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
        size_curve=size_curve,
        wording=wording,
        eval_delay_s=eval_delay_s,
    )
    try:
        srv.start()
    except OSError as exc:
        hint = "--port 0 picks a free one" if port else "see the message"
        raise fail(f"port {port} on {host} is not free ({exc.strerror or exc}): {hint}") from None
    _announce(srv.url, teams, typed, teams_file, submit_interval_s, status_interval_s)
    if start_down_s > 0:
        srv.go_down(start_down_s)
    srv.serve_forever()


def _teams(team: list[str], teams_file: Path | None) -> tuple[dict[str, str], set[str]]:
    """``{name: token}`` from --teams-file, then --team (NAME:TOKEN, or NAME with a new token); the team
    'demo' with a new token when neither names one. Also the names typed with --team."""
    import secrets

    try:
        teams: dict[str, str] = json.loads(teams_file.read_text()) if teams_file else {}
    except (OSError, ValueError) as exc:
        raise fail(
            f'--teams-file {teams_file}: {exc}; it holds JSON like {{"team": "token"}}', USAGE
        ) from None
    typed = set()
    for item in team:
        name, sep, token = item.rpartition(":") if ":" in item else (item, "", secrets.token_hex(16))
        if not name or not token:
            raise typer.BadParameter(f"--team {item!r}: expected NAME:TOKEN or NAME", param_hint="--team")
        teams[name] = token
        typed.add(name)
    if not teams:
        teams["demo"] = secrets.token_hex(16)
    return teams, typed


def _announce(url: str, teams: dict, typed: set, teams_file: Path | None, submit_s: float, status_s: float):
    """Where it listens, and the line of settings that points kdq at it."""
    say(f"stand-in course server on {url} (Ctrl-C stops it); teams: {', '.join(teams)}")
    # The token is shown when kdq made it up or the user typed it (--team); one read from --teams-file stays
    # in the file, like any token kept in a file.
    name, token = next(iter(teams.items()))
    shown = not teams_file or name in typed
    say(
        f"export KDQ_SERVER_URL={url} KDQ_TEAM={shlex.quote(name)}"
        + (f" KDQ_TOKEN={shlex.quote(token)}" if shown else "")
        + f" KDQ_SUBMIT_INTERVAL_S={submit_s:g} KDQ_STATUS_INTERVAL_S={status_s:g}"
        + ("" if shown else f"   # and KDQ_TOKEN: {name!r}'s token in {teams_file}")
    )


def _checked(fault: list[str], size_check: str, wording: str, size_curve: str) -> list:
    """The --fault specs parsed, and the choices checked: a usage error names the option."""
    from kdq.course.fake_server import parse_fault

    if size_check not in ("upload", "status") or wording not in ("alternate", "short", "long"):
        raise typer.BadParameter("--size-check is upload|status; --wording is alternate|short|long")
    if size_curve not in ("linear", "capped"):
        raise typer.BadParameter(
            f"--size-curve {size_curve!r}: choose linear or capped", param_hint="--size-curve"
        )
    try:
        return [parse_fault(f) for f in fault]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--fault") from None
