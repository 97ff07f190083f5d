"""The pseudo-terminal helper never hangs the suite: a child that ignores Ctrl-C is stopped all the same."""

from __future__ import annotations

import sys
import time

import cli_helpers
import pytest

STUCK = [
    sys.executable,
    "-c",
    "import signal, sys, time\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "print('drawn', flush=True)\n"
    "time.sleep(600)\n",
]


@pytest.mark.parametrize("stop", [{"seconds": 1}, {"until": "drawn"}])
def test_a_child_that_ignores_ctrl_c_is_stopped_and_its_output_kept(monkeypatch, stop):
    monkeypatch.setattr(cli_helpers, "KDQ", STUCK[:-1])
    monkeypatch.setattr(cli_helpers, "GRACE_S", 1.0)
    t0 = time.monotonic()
    out = cli_helpers.in_terminal([STUCK[-1]], {}, **stop)
    assert "drawn" in out
    assert time.monotonic() - t0 < 60
