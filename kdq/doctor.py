"""``kdq doctor``: is everything in place for an overnight run? One line per check: ok, or what to do.

Each check is a function ``(env) -> Check`` that does its own I/O and never raises; ``run_checks``
runs them all at once on daemon threads, each under a short timeout (a check that hangs, like Modal
retrying a dead network for a minute, reports that and does not hold the command). ``format_lines``
and ``to_json`` are pure.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from kdq.log import redact

TIMEOUT_S = 10.0
MIN_FREE_GB = 5.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None = None
    skipped: bool = False


@dataclass
class Env:
    """What the checks look at; tests swap the gateway and the course client for stand-ins.

    ``modal``: whether the Modal checks run; ``None`` decides from the queue (any live Modal spec).
    """

    settings: Any
    dataset: str = "hw3"
    gateway: Any = None
    course_client: Callable[[], Any] | None = None
    modal: bool | None = None

    def __post_init__(self) -> None:
        if self.gateway is None:
            from kdq.backends.modal_gateway import ModalGateway

            self.gateway = ModalGateway(self.settings)
        if self.modal is None:
            self.modal = modal_queued(self.settings)

    def client(self):
        if self.course_client is not None:
            return self.course_client()
        from kdq.course.client import CourseClient

        return CourseClient.from_settings(self.settings)


def modal_queued(settings) -> bool:
    """Is any experiment that is not finished yet meant for Modal? (No database: nothing is queued.)"""
    if not settings.db_path.exists():
        return False
    from kdq.stages import LIVE
    from kdq.store import Store

    with Store.open(settings) as store:
        return any(e.backend == "modal" for e in store.list(stages=set(LIVE)))


def skipped(name: str) -> Check:
    return Check(name, True, "skipped: no Modal spec is queued (`kdq doctor --modal` checks)", skipped=True)


# ---------------------------------------------------------------- the checks


def check_modal(env: Env) -> Check:
    if not env.modal:
        return skipped("modal")
    from kdq.backends.modal_errors import LOGIN, classify
    from kdq.errors import PermanentError, TransientError

    try:
        there = "is there" if env.gateway.check() is not False else "not made yet (`kdq data upload`)"
    except Exception as exc:  # noqa: BLE001
        mapped = classify(exc, live_run=False)
        if isinstance(mapped, PermanentError) and "credentials" in str(mapped):
            return Check("modal", False, "no valid Modal credentials", LOGIN)
        if isinstance(mapped, TransientError):
            return Check(
                "modal", False, f"Modal unreachable: {exc}", "check the network, then run `kdq doctor` again"
            )
        return Check(
            "modal", False, f"{type(exc).__name__}: {exc}", "see the message; `modal token new` if unsure"
        )
    return Check("modal", True, f"credentials work; Volume {env.settings.modal_volume!r} {there}")


def check_hf(env: Env) -> Check:
    from kdq import hf
    from kdq.errors import PermanentError

    token = hf.find_token(env.settings)
    if not token:
        return Check(
            "huggingface",
            False,
            "no Hugging Face token",
            f"{hf.LOGIN}, then accept {hf.repo_page(hf.TEACHER)}",
        )
    try:
        hf.check_access(token, hf.TEACHER)
    except PermanentError as exc:
        return Check("huggingface", False, str(exc).split(":")[0], str(exc))
    except Exception as exc:  # noqa: BLE001 — TransientError: the network
        return Check("huggingface", False, str(exc), "check the network, then run `kdq doctor` again")
    return Check("huggingface", True, f"token found; it can read {hf.TEACHER}")


def check_course(env: Env) -> Check:
    with env.client() as client:
        ping = client.ping()
    if ping.reachable:
        return Check("course server", True, f"{ping.url} answers ({ping.detail}, {ping.elapsed_s} s)")
    from kdq.course.errors import Unreachable

    fix = Unreachable.hint(ping.url)
    return Check("course server", False, f"{ping.url}: {ping.detail.replace(fix, '').strip()}", fix)


def check_token(env: Env) -> Check:
    """KDQ_TOKEN is there and looks right; the status route takes it; KDQ_TEAM is on the leaderboard."""
    from functools import partial

    from kdq.course.errors import CourseError, Rejected, Unreachable

    bad = partial(Check, "course token", False)
    token = env.settings.token.get_secret_value().strip() if env.settings.token else ""
    if not token:
        return bad("KDQ_TOKEN is not set", "put KDQ_TOKEN=<your team token> in .env")
    if len(token) != 32 or any(c not in "0123456789abcdefABCDEF" for c in token):
        return bad(
            f"KDQ_TOKEN has {len(token)} characters, not 32 hex digits", "copy it again (32 of 0-9, a-f)"
        )
    if not env.settings.team:
        return bad("KDQ_TEAM is not set", "put KDQ_TEAM=<team name as on the leaderboard> in .env")
    try:
        with env.client() as client:
            attempts, board = client.status(), client.leaderboard()
    except Unreachable:
        return bad("not checked: the course server is unreachable", "see the course server line")
    except Rejected as exc:
        return bad(f"the server refused it: {exc}", "check KDQ_TOKEN against the course page")
    except CourseError as exc:
        return bad(f"{type(exc).__name__}: {exc}", "run `kdq doctor` again later")
    detail = f"the server takes it ({len(attempts)} submissions so far); team {env.settings.team!r}"
    if board.find(env.settings.team) is None:  # a team shows up after its first graded upload
        return Check("course token", True, f"{detail} is not on the leaderboard yet")
    return Check("course token", True, f"{detail} is on the leaderboard")


def check_dataset(env: Env) -> Check:
    from kdq.backends import modal_gateway as vol

    name = env.dataset
    local = env.settings.datasets_dir / name
    if not env.modal:
        if local.is_dir():
            return Check("dataset", True, f"{name!r} at {local} (local training; Modal not checked)")
        fix = f"`kdq data add PATH --name {name}` (the course's zip, or its unzipped folder)"
        return Check("dataset", False, f"{name!r} is not at {local}", fix)
    upload = f"`kdq data upload PATH --name {name}`"
    try:
        raw = env.gateway.read_file(f"{vol.dataset_path(name)}/{vol.DATASET_MARK}")
    except Exception as exc:  # noqa: BLE001 — Modal itself is the problem: the modal line says what to do
        where = f"found locally at {local}" if local.is_dir() else f"not at {local} either"
        return Check(
            "dataset",
            False,
            f"could not look at the Modal Volume ({type(exc).__name__}); {name!r} {where}",
            "fix the modal line first" + ("" if local.is_dir() else f", then run {upload}"),
        )
    if raw is None:
        where = f"locally at {local}" if local.is_dir() else "nowhere"
        return Check(
            "dataset",
            False,
            f"{name!r} is not on the Modal Volume (found {where})",
            f"run {upload} with PATH the unzipped course dataset",
        )
    import json

    mark = json.loads(raw)
    detail = f"{name!r} on the Volume: {mark.get('files')} files, fingerprint {mark.get('fingerprint')}"
    if local.is_dir():
        from kdq.backends.modal_data import dataset_files

        count = len(dataset_files(local))
        if count != mark.get("files"):
            return Check(
                "dataset", False, f"{detail}; {local} has {count} files", f"run {upload} to refresh it"
            )
        detail += f"; {local} matches"
    return Check("dataset", True, detail)


def check_deployed(env: Env) -> Check:
    if not env.modal:
        return skipped("modal app")
    from kdq.backends.modal import DEPLOY_META, code_fingerprint
    from kdq.store import Store

    seen = {}
    if env.settings.db_path.exists():
        with Store.open(env.settings) as store:
            seen = store.get_meta_json(DEPLOY_META) or {}
    current = code_fingerprint(env.settings)
    if not seen:
        return Check(
            "modal app",
            False,
            "never deployed from this machine",
            "run `kdq modal deploy` (the worker also deploys before its first Modal launch)",
        )
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(seen.get("at", 0)))
    if seen.get("fingerprint") != current or seen.get("app") != env.settings.modal_app:
        return Check(
            "modal app",
            False,
            f"deployed {when}, but the code changed since",
            "run `kdq modal deploy` (the worker redeploys by itself before its next launch)",
        )
    return Check("modal app", True, f"{seen['app']!r} deployed {when}, code {current} is current")


def check_worker(env: Env) -> Check:
    from kdq.homelock import heartbeat_age, silent_worker
    from kdq.store import Store

    if not env.settings.db_path.exists():
        return Check(
            "worker", False, f"no worker has run here ({env.settings.root})", "start one: `kdq worker`"
        )
    with Store.open(env.settings) as store:
        age = heartbeat_age(store)
        silent = silent_worker(store)  # its process still here: suspended or hung
    if age is None:
        return Check("worker", False, "no worker is running", "start one: `kdq worker` (leave it running)")
    if not env.settings.worker_alive(age) and silent:
        return Check("worker", False, silent, "resume it, or stop it and start `kdq worker` again")
    if not env.settings.worker_alive(age):
        return Check(
            "worker",
            False,
            f"last heartbeat {age:.0f} s ago: it hangs or died",
            "stop it and start `kdq worker` again",
        )
    return Check("worker", True, f"alive (heartbeat {age:.0f} s ago)")


def check_disk(env: Env) -> Check:
    root = env.settings.root
    where = next(p for p in (root, *root.parents) if p.exists())  # nothing is created to look
    free_gb = shutil.disk_usage(where).free / 1e9
    if free_gb < MIN_FREE_GB:
        return Check(
            "disk",
            False,
            f"{free_gb:.1f} GB free under {root}",
            f"free at least {MIN_FREE_GB:.0f} GB (old artifacts live in {env.settings.artifacts_dir})",
        )
    return Check("disk", True, f"{free_gb:.0f} GB free under {root}")


CHECKS: dict[str, Callable[[Env], Check]] = {
    "modal": check_modal,
    "huggingface": check_hf,
    "course server": check_course,
    "course token": check_token,
    "dataset": check_dataset,
    "modal app": check_deployed,
    "worker": check_worker,
    "disk": check_disk,
}


# ---------------------------------------------------------------- running them


def _guarded(name: str, fn: Callable[[Env], Check], env: Env) -> Check:
    try:
        return fn(env)
    except Exception as exc:  # noqa: BLE001 — a check must report, never crash the doctor
        return Check(name, False, f"the check itself failed: {type(exc).__name__}: {exc}", "see the message")


def run_checks(
    env: Env, checks: dict[str, Callable[[Env], Check]] = CHECKS, timeout_s: float = TIMEOUT_S
) -> list[Check]:
    """Every check at once; each gets ``timeout_s`` (counted from the start), results in ``checks`` order."""
    results: dict[str, Check] = {}
    threads = []
    for name, fn in checks.items():
        t = threading.Thread(
            target=lambda n=name, f=fn: results.__setitem__(n, _guarded(n, f, env)),
            daemon=True,
            name=f"doctor-{name}",
        )
        t.start()
        threads.append((name, t))
    deadline = time.monotonic() + timeout_s
    out = []
    for name, t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
        out.append(
            results.get(name)
            or Check(
                name,
                False,
                f"no answer within {timeout_s:.0f} s",
                "check the network (and the VPN for the course server)",
            )
        )
    return [Check(c.name, c.ok, redact(c.detail), redact(c.fix) if c.fix else None, c.skipped) for c in out]


# ---------------------------------------------------------------- formatting (pure)


def format_lines(checks: list[Check]) -> list[str]:
    width = max((len(c.name) for c in checks), default=0)
    lines = []
    for c in checks:
        mark = "skip" if c.skipped else "ok  " if c.ok else "FAIL"
        line = f"{mark} {c.name.ljust(width)}  {c.detail}"
        if not c.ok and c.fix:
            line += f"\n     {' ' * width}  → {c.fix}"
        lines.append(line)
    return lines


def to_json(checks: list[Check]) -> dict[str, Any]:
    return {"ok": all(c.ok for c in checks), "checks": [asdict(c) for c in checks]}
