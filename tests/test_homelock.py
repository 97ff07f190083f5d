"""One worker per home: the second is refused with the holder's pid and host; a dead holder frees it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from kdq.homelock import HomeLock, HomeLocked

HOLD = (
    "import sys, time; from kdq.homelock import HomeLock; HomeLock(sys.argv[1]).acquire(); "
    "print('held', flush=True); time.sleep(60)"
)


def test_a_second_holder_is_refused_with_the_first_ones_pid_and_host(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(HomeLocked) as refused:
            HomeLock(tmp_path).acquire()
        assert f"pid {child.pid} on host {socket.gethostname()}" in str(refused.value)
        assert str(tmp_path) in str(refused.value)
        os.kill(child.pid, signal.SIGKILL)  # a crash: the kernel drops the lock, nobody clears it by hand
        child.wait(10)
        deadline = time.monotonic() + 10
        while True:
            try:
                lock = HomeLock(tmp_path).acquire()
                break
            except HomeLocked:
                assert time.monotonic() < deadline, "the lock of a dead process was not released"
                time.sleep(0.05)
        assert f'"pid": {os.getpid()}' in lock.info_path.read_text()
        lock.release()
        assert not lock.info_path.exists()
    finally:
        child.kill()
        child.wait(10)
