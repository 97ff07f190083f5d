"""CLI commands hammer the store while the worker runs: two processes of back-to-back ``enqueue``,
``status``, ``cancel``, ``show``, ``retry`` (more than 1,000 commands in all) beside a real worker
that drives every experiment they queue. No command may meet a lock error, and no update may be
lost: every enqueue makes exactly one experiment, every cancel sticks, every retry bumps the attempt
exactly once.

The experiments name a dataset that does not exist, so the worker fails them in milliseconds at
launch: it writes as often as the commands do, which is the point. `kdq enqueue` refuses such a spec
(checked first below), so the hammers put the rows in as it does once its checks pass (hammer.py).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import defaultdict

import pytest

from kdq.stages import LIVE, RETRYABLE, Stage

from .conftest import HERE, spec_text

HAMMERS = 2
ROUNDS = 63  # 8 commands a round: 2 x 63 x 8 = 1,008 commands
# What `kdq retry` says of an experiment still on its way (requests.retry's own words).
REFUSED = re.compile(rf"is ({'|'.join(sorted(LIVE))}); only {', '.join(sorted(RETRYABLE))} can be retried")
ABSENT = "dataset 'absent' not found"


def hammer(h, spec, k: int):
    out = h.tmp / f"hammer{k}.jsonl"
    log = (h.tmp / f"hammer{k}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "hammer.py"), str(spec), str(ROUNDS), str(k * 10_000), str(out)],
        env=h.env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return proc, out


@pytest.mark.slow
def test_a_thousand_commands_beside_the_worker(overnight):
    h = overnight()
    spec = h.tmp / "absent.toml"
    spec.write_text(spec_text("hammered", dataset="absent", policy="never"))
    refused = h.cli("enqueue", spec, ok=False)
    assert refused.exit_code == 1 and "data.dataset = 'absent': no dataset at" in refused.stderr
    h.start_worker()
    h.wait_worker_up()
    procs = [hammer(h, spec, k) for k in range(HAMMERS)]
    for proc, _ in procs:
        assert proc.wait(300) == 0, (h.tmp / "hammer0.log").read_text()[-3000:]
    ops = [json.loads(line) for _, out in procs for line in out.read_text().splitlines()]
    # No command met a lock error or crashed; a retry is refused only while the experiment is live.
    for op in ops:
        said = f"kdq {' '.join(op['args'])} exited {op['exit']}: {op['out']} {op['exception'] or ''}"
        assert "locked" not in op["out"] and op["exception"] is None, said
        assert op["exit"] == 0 or (op["op"] == "retry" and REFUSED.search(op["out"])), said
    assert len(ops) >= 1000
    exps = {e.id: e for e in h.wait_finished(120)}
    log = h.log.read_text()
    assert "locked" not in log and "Traceback" not in log, log[-3000:]

    # Every enqueue made exactly one experiment, with its own seed.
    queued = [json.loads(op["out"])[0]["id"] for op in ops if op["op"] == "enqueue" and op["exit"] == 0]
    assert sorted(queued) == sorted(exps) and len(set(queued)) == len(queued) == HAMMERS * ROUNDS
    assert len({e.spec.train.seed for e in exps.values()}) == len(exps)

    # Every status read was whole: it counted at least the experiments its own process had queued.
    for op in sorted(ops, key=lambda o: o["t0"]):
        if op["op"] == "status":
            assert (
                sum(json.loads(op["out"])["counts"].values())
                >= len([q for q in queued if q <= op["exp"]]) // HAMMERS
            )

    by_exp = defaultdict(list)
    for op in ops:
        if op["exp"] is not None:
            by_exp[op["exp"]].append(op)
    for exp_id, history in by_exp.items():
        exp = exps[exp_id]
        # Every successful retry bumped the attempt exactly once, in order.
        bumps = [
            int(re.search(r"attempt (\d+)", op["out"]).group(1))
            for op in history
            if op["op"] == "retry" and op["exit"] == 0
        ]
        assert bumps == list(range(2, 2 + len(bumps))), (exp_id, bumps)
        assert exp.attempt == 1 + len(bumps), (exp_id, exp.attempt, bumps)
        retries = [e for e in h.store.events(exp_id) if e["message"].startswith("retry (attempt")]
        assert len(retries) == len(bumps)
        # Every cancel stuck: the last command was a cancel, and nothing moved the experiment after it.
        last = history[-1]
        assert last["op"] == "cancel"
        if "cancelled" in last["out"]:
            assert exp.stage is Stage.CANCELLED, (exp_id, last["out"], h.report())
        elif "cancel requested" in last["out"]:
            # Only possible when the worker had taken the experiment into launching: it then stops
            # it (cancelled) unless its launch had already failed.
            assert exp.stage is Stage.CANCELLED or (exp.stage is Stage.FAILED and ABSENT in exp.error), exp
        else:
            assert "already failed" in last["out"] and exp.stage is Stage.FAILED, (exp_id, last["out"])
        assert exp.stage in (Stage.CANCELLED, Stage.FAILED)


@pytest.mark.parametrize("worker_gets_to", [Stage.LAUNCHING, Stage.FAILED])
def test_a_cancel_that_loses_the_race_to_the_worker(store, monkeypatch, worker_gets_to):
    """Between the cancel's read and its write the worker moves the experiment on: a live one is
    flagged for the worker to stop; a finished one is left alone (no flag, no "cancel requested")."""
    from kdq.spec import ExperimentSpec
    from kdq.store import Store

    [exp_id] = store.add([(None, ExperimentSpec(name="raced"))])
    real_move = Store.move

    def worker_first(self, i, src, dst, *args, **kwargs):
        if dst is Stage.CANCELLED:  # the worker's own moves land first
            real_move(self, i, Stage.QUEUED, Stage.LAUNCHING)
            if worker_gets_to is Stage.FAILED:
                real_move(self, i, Stage.LAUNCHING, Stage.FAILED, ABSENT, error=ABSENT)
        return real_move(self, i, src, dst, *args, **kwargs)

    monkeypatch.setattr(Store, "move", worker_first)
    exp = store.request_cancel(exp_id)
    assert exp.stage is worker_gets_to
    asked = [e for e in store.events(exp_id) if e["message"] == "cancel requested"]
    assert exp.cancel_requested is (worker_gets_to is Stage.LAUNCHING)
    assert len(asked) == (1 if worker_gets_to is Stage.LAUNCHING else 0)
