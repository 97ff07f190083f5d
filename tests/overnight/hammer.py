"""One user at the keyboard, very fast: round after round of an enqueue, ``kdq status``, ``cancel``,
``show``, ``retry`` against the ``KDQ_HOME`` in the environment, each command's outcome written as a
JSON line. Run as a process beside a worker (test_concurrency.py starts two).

The spec's dataset is not there, so that the worker fails each experiment at launch; ``kdq enqueue``
refuses such a spec, so the enqueue puts the row in as the command does once its checks pass
(``Store.add``, then the nudge): as if the dataset had been removed after enqueue.

    python tests/overnight/hammer.py SPEC ROUNDS FIRST_SEED OUT.jsonl

Each round queues one new experiment (seed FIRST_SEED + round) and then works only on it, so what
each command should have done can be checked from this file alone. Not collected by pytest.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from typer.testing import CliRunner

from kdq.cli.main import app


def enqueue(spec: str, seed: int) -> SimpleNamespace:
    """What ``kdq enqueue SPEC --set train.seed=SEED --json`` does after its checks, as a CliRunner result."""
    from kdq.settings import get_settings
    from kdq.specfile import load_files, parse_overrides
    from kdq.store import Store
    from kdq.worker import nudge

    try:
        settings = get_settings()
        [(path, one)] = load_files([spec], parse_overrides([f"train.seed={seed}"]))
        with Store.open(settings) as store:
            ids = store.add([(str(path), one)])
        nudge(ids, settings)
    except Exception as exc:  # noqa: BLE001 — written down as the test reads any command's failure
        return SimpleNamespace(exit_code=1, output=repr(exc), exception=exc)
    return SimpleNamespace(exit_code=0, output=json.dumps([{"id": ids[0], "name": one.name}]), exception=None)


def main(spec: str, rounds: int, first_seed: int, out: Path) -> None:
    runner = CliRunner()
    with out.open("w") as f:

        def run(*args, exp: int | None = None):
            started = time.time()
            if args[0] == "enqueue":
                result = enqueue(*args[1:])
            else:
                result = runner.invoke(app, [str(a) for a in args])
            f.write(
                json.dumps(
                    {
                        "op": args[0],
                        "args": [str(a) for a in args],
                        "exp": exp,
                        "exit": result.exit_code,
                        "out": result.output,
                        "t0": started,
                        "t1": time.time(),
                        "exception": None
                        if isinstance(result.exception, (SystemExit, type(None)))
                        else repr(result.exception),
                    }
                )
                + "\n"
            )
            return result

        for k in range(rounds):
            queued = run("enqueue", spec, first_seed + k)
            if queued.exit_code != 0:
                continue  # written down above; the test reports it
            exp = json.loads(queued.output)[0]["id"]
            run("status", "--json", exp=exp)
            run("cancel", exp, exp=exp)
            run("show", exp, "--json", exp=exp)
            run("retry", exp, exp=exp)
            run("cancel", exp, exp=exp)
            run("retry", exp, exp=exp)
            run("cancel", exp, exp=exp)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
