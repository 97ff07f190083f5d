"""A whole run with a course token and a Hugging Face token in the environment (both fake, built at
run time): neither may appear anywhere kdq writes or prints. Scanned: the worker's log, the raw bytes
of every file under KDQ_HOME (kdq.db, queue.db and their WAL files, run folders, artifacts, caches,
reports) and the output of every command a user would run afterwards, including the error paths
where a URL with the token in its path is most likely to leak (timeouts, proxy pages, refused
connections).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .conftest import course_token, hf_token

pytestmark = pytest.mark.slow
TOKEN_PATHS = "submission-status/***"  # the status URL, masked


def files_under(root: Path) -> list[Path]:
    found = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        dirs[:] = [
            d for d in dirs if not (Path(folder) / d).is_symlink()
        ]  # datasets/ links to generated images
        found += [Path(folder) / n for n in names if not (Path(folder) / n).is_symlink()]
    return found


def test_no_token_anywhere_after_a_full_run(overnight):
    token, hf = course_token(), hf_token()
    h = overnight(token=token, extra_env={"HF_TOKEN": hf, "KDQ_REQUEST_TIMEOUT_S": "3"})
    # Error paths that carry the status URL (token in its path) into messages, logs and the store.
    h.server.inject("stall", route="status", seconds=5)  # read timeout: "GET <url>: no answer in time"
    h.server.inject("error", route="status", status=502)  # a proxy's HTML page
    h.server.inject("garbage", route="status", body="truncated")
    [exp_id] = h.enqueue(1)
    h.start_worker()
    h.wait_finished(180)
    h.check_delivered([exp_id])

    outputs = {}
    for args in (
        ["status"],
        ["status", "--json", "--all"],
        ["show", exp_id],
        ["show", exp_id, "--json"],
        ["results"],
        ["results", "--json"],
        ["leaderboard"],
        ["report", exp_id, "--json"],
        ["server", "ping", "--json"],
        ["server", "status"],
        ["server", "status", "--json"],
        ["server", "leaderboard"],
        ["doctor", "--json", "--dataset", "synth", "--timeout", "3"],
    ):
        outputs[" ".join(map(str, args))] = h.cli(*args, ok=False).output
    h.server.go_down()  # and the error paths of the commands that call the server
    for args in (["server", "status"], ["server", "status", "--json"], ["server", "ping"]):
        outputs[" ".join(args) + " (server down)"] = h.cli(*args, ok=False).output
    assert "cannot connect" in outputs["server status (server down)"]
    h.stop_worker()

    places = {f"kdq {cmd}": out.encode() for cmd, out in outputs.items()}
    places.update({str(p): p.read_bytes() for p in files_under(h.home)})
    places.update(
        {str(p): p.read_bytes() for p in files_under(h.tmp) if p.suffix in (".log", ".toml", ".json")}
    )
    for name in ("kdq.db", "queue.db", "runs", "artifacts"):
        assert any(str(h.home / name) in place for place in places), f"{name} was not scanned"
    for secret in (token, hf):
        leaks = [place for place, data in places.items() if secret.encode() in data]
        assert leaks == [], f"a token leaked into {leaks}"
    # The scan saw the places where the token would be: the status URL is there, masked.
    assert any(TOKEN_PATHS.encode() in data for data in places.values()), "no masked status URL seen"
