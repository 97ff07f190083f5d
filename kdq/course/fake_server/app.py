"""HTTP in front of ``FakeCourse``: the course server's routes, fault injection, and an admin API.

POST /submit                        multipart: token, file
GET  /submission-status/{token}     JSON list
GET  /leaderboard3                  HTML table
GET  /                              a home page (what ``ping`` reaches)
GET  /_fake/state                   every submission (no tokens)
POST /_fake/faults                  add a fault (JSON, see ``faults.Fault``); DELETE clears them
POST /_fake/down                    {"seconds": S}: stop accepting connections for S seconds
POST /_fake/reset-limits            forget rate-limit clocks
POST /_fake/restart                 a restart without state: submissions and clocks gone, attempts from #1
"""

from __future__ import annotations

import asyncio
import html
import json
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from kdq.course.fake_server.course import FakeCourse, Outcome, wait_message
from kdq.course.fake_server.faults import Fault, FaultQueue
from kdq.course.models import EASTERN

Handler = Callable[[Request], Awaitable[Response]]
PROXY_PAGE = (
    "<html><head><title>{code} Bad Gateway</title></head><body><center><h1>{code} Bad Gateway</h1>"
    "</center><hr><center>nginx</center></body></html>"
)
TRUNCATED = {
    "submit": '{"message": "Submission received for team',
    "status": '[{"attempt": 1, "status": "pend',
    "leaderboard": "<html><body><table><tr><th>Rank</th><th>Te",
    "home": "<html><bo",
}


def _json(outcome: Outcome) -> JSONResponse:
    return JSONResponse(outcome.body, status_code=outcome.code)


def fault_response(fault: Fault, route: str, real: Response | None = None) -> Response:
    if fault.kind == "error":
        code = fault.status or 500
        if code == 500:
            return JSONResponse({"error": "Internal server error"}, status_code=code)
        return HTMLResponse(PROXY_PAGE.format(code=code), status_code=code)
    if fault.kind == "rate_limit":
        unit = fault.unit or ("minutes" if route == "submit" else "seconds")
        return JSONResponse({"error": wait_message(fault.wait_s, unit)}, status_code=429)
    code = fault.status or 200
    if fault.body == "empty":
        return Response(b"", status_code=code)
    if fault.body == "truncated":
        body = (
            real.body[: len(real.body) // 2]
            if real is not None and real.body
            else TRUNCATED.get(route, "{").encode()
        )
        return Response(body, status_code=code, media_type="application/json")
    return HTMLResponse(PROXY_PAGE.format(code=502), status_code=code)


def leaderboard_html(course: FakeCourse) -> str:
    rows = []
    for rank, sub in enumerate(course.leaderboard_rows(), start=1):
        when = sub.submitted_at.astimezone(EASTERN).strftime("%Y-%m-%d %H:%M")
        rows.append(
            f"<tr><td>{rank}</td><td>{html.escape(sub.team)}</td><td>{sub.score:.4f}</td>"
            f"<td>{sub.f1:.4f}</td><td>{sub.size_mb:.2f}</td><td>{when}</td></tr>"
        )
    return (
        "<!doctype html><html><head><title>Leaderboard - Homework 3</title></head><body>"
        "<h1>Homework 3 Leaderboard</h1><table border='1'><thead><tr><th>Rank</th><th>Team</th>"
        "<th>Score</th><th>Macro F1</th><th>Model Size (MB)</th><th>Last Submission</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></body></html>"
    )


HOME = (
    "<!doctype html><html><head><title>CS 4774 - Homework 3 (stand-in)</title></head><body>"
    "<h1>Knowledge Distillation for AI Dermatologist</h1><ul>"
    "<li><a href='/leaderboard3'>Leaderboard</a></li><li><a href='/instructions-hw3'>Instructions</a></li>"
    "</ul><p>This is kdq's stand-in for the course server.</p></body></html>"
)


def build_app(
    course: FakeCourse,
    faults: FaultQueue,
    on_down: Callable[[float], None] | None = None,
    paths: dict[str, str] | None = None,
) -> Starlette:
    """The course's three routes and the home page, each behind the fault queue, then the test's
    controls under ``/_fake/``."""
    paths = {
        "submit": "/submit",
        "status": "/submission-status/{token}",
        "leaderboard": "/leaderboard3",
        **(paths or {}),
    }
    return Starlette(routes=_course_routes(course, faults, paths) + _control_routes(course, faults, on_down))


def _guarded(course: FakeCourse, faults: FaultQueue, route: str, handler: Handler) -> Handler:
    """``handler`` with the faults queued for ``route`` before and after it, and every answer logged."""

    async def endpoint(request: Request) -> Response:
        response = await answer(request)
        course.log_request(route, request.method, response.status_code)
        return response

    async def answer(request: Request) -> Response:
        fault = faults.take(route, "before")
        if fault is not None:
            if fault.kind != "stall":
                await asyncio.sleep(fault.delay_s)  # the client waits, as for a slow refusal
                return fault_response(fault, route)
            await asyncio.sleep(fault.seconds)
        response = await handler(request)
        fault = faults.take(route, "after")
        if fault is not None:
            if fault.kind == "stall":
                await asyncio.sleep(fault.seconds)
                return response
            return fault_response(fault, route, response)
        return response

    return endpoint


def _course_routes(course: FakeCourse, faults: FaultQueue, paths: dict[str, str]) -> list[Route]:
    """What the real server answers: submit, a submission's status, the leaderboard, the home page."""

    async def submit(request: Request) -> Response:
        async with request.form(max_files=2, max_fields=10) as form:
            token, upload = form.get("token"), form.get("file")
            token = token if isinstance(token, str) else None
            if upload is None or isinstance(upload, str):
                return _json(course.submit(token, None, None))
            data = await upload.read()
            slow = faults.take("submit", "read")
            if slow is not None:  # read in full, recorded later: the client may time out first
                await asyncio.sleep(slow.seconds if slow.kind == "stall" else 0)
            return _json(course.submit(token, upload.filename or "", data))

    async def status(request: Request) -> Response:
        return _json(course.status(request.path_params["token"]))

    async def leaderboard(request: Request) -> Response:
        return HTMLResponse(leaderboard_html(course))

    async def home(request: Request) -> Response:
        return HTMLResponse(HOME)

    def guarded(route: str, handler: Handler) -> Handler:
        return _guarded(course, faults, route, handler)

    status_path = paths["status"].replace("{token}", "{token:str}")
    return [
        Route(paths["submit"], guarded("submit", submit), methods=["POST"]),
        Route(status_path, guarded("status", status)),
        Route(paths["leaderboard"], guarded("leaderboard", leaderboard)),
        Route("/", guarded("home", home)),
    ]


def _control_routes(
    course: FakeCourse, faults: FaultQueue, on_down: Callable[[float], None] | None
) -> list[Route]:
    """The test's controls: the state, the fault queue, going down, the limits reset, a restart."""

    async def state(request: Request) -> Response:
        return JSONResponse(
            {
                "submissions": [
                    {"team": s.team, "filename": s.filename, "f1": s.f1, **s.as_status()}
                    for s in course.submissions
                ],
                "faults": faults.pending(),
            }
        )

    async def add_fault(request: Request) -> Response:
        if request.method == "DELETE":
            faults.clear()
            return JSONResponse({"faults": []})
        try:
            fault = Fault.model_validate(json.loads(await request.body()))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        faults.add(fault)
        return JSONResponse({"faults": faults.pending()})

    async def down(request: Request) -> Response:
        if on_down is None:
            return JSONResponse(
                {"error": "this server cannot go down (not started through FakeServer)"}, status_code=400
            )
        body = json.loads(await request.body() or b"{}")
        seconds = float(body.get("seconds", 5))
        asyncio.get_running_loop().call_later(0.05, on_down, seconds)  # after this answer is sent
        return JSONResponse({"down_for_s": seconds})

    async def reset_limits(request: Request) -> Response:
        course.reset_limits()
        return JSONResponse({"ok": True})

    async def restart(request: Request) -> Response:
        course.forget()
        return JSONResponse({"ok": True})

    return [
        Route("/_fake/state", state),
        Route("/_fake/faults", add_fault, methods=["POST", "DELETE"]),
        Route("/_fake/down", down, methods=["POST"]),
        Route("/_fake/reset-limits", reset_limits, methods=["POST"]),
        Route("/_fake/restart", restart, methods=["POST"]),
    ]
